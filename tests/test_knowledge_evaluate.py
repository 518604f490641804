import json

import pytest
from test_knowledge_reward import FakeAdapter

from trl_seal.knowledge.data import load_passages
from trl_seal.knowledge.evaluate import bootstrap_ci, markdown_table, read_self_edit_file, run_conditions
from trl_seal.knowledge.grading import exact_match
from trl_seal.knowledge.reward import KnowledgeQAReward

PASSAGES = load_passages([
    {"title": f"stone {i}", "context": "the secret is cloud",
     "questions": [{"question": "secret ?", "answer": "apple"}]}
    for i in range(4)
])


def test_bootstrap_ci_brackets_the_mean():
    low, high = bootstrap_ci([0.0, 1.0] * 20)
    assert 0.3 < low < 0.5 < high < 0.7
    assert bootstrap_ci([0.25] * 5) == (0.25, 0.25)


def test_conditions_paired_differences_and_table(tokenizer):
    adapter = FakeAdapter(tokenizer)
    edits = {"good self-edits": [["apple"], ["apple", "river"], ["apple"], ["river"]]}
    summaries = run_conditions(adapter, PASSAGES, KnowledgeQAReward(grader=exact_match),
                               ["base", "passage", "good self-edits", "cpt", "cpt+self_edits"], edits)
    by_name = {s["condition"]: s for s in summaries}
    assert by_name["base"]["accuracy"] == 0.0 and by_name["passage"]["accuracy"] == 0.0
    assert by_name["good self-edits"]["accuracy"] == pytest.approx((1 + 0.5 + 1 + 0) / 4)
    assert by_name["good self-edits"]["paired_diff_vs_passage"]["mean"] == pytest.approx(0.625)
    assert by_name["cpt+self_edits"]["accuracy"] == 1.0 and by_name["cpt"]["accuracy"] == 0.0
    table = markdown_table(summaries)
    assert "| good self-edits | 4 | 62.5 |" in table and "+62.5" in table
    with pytest.raises(ValueError, match="Unknown condition"):
        run_conditions(adapter, PASSAGES, KnowledgeQAReward(), ["gpt"])


def test_self_edit_file(tmp_path):
    path = tmp_path / "edits.jsonl"
    rows = [{"title": f"stone {i}", "self_edit": f"edit {i}"} for i in range(4)]
    rows.append({"title": "stone 0", "self_edit": "more"})
    path.write_text("\n".join(json.dumps(r) for r in rows))
    edits = read_self_edit_file(str(path), PASSAGES)
    assert edits[0] == ["edit 0", "more"] and edits[3] == ["edit 3"]
    path.write_text(json.dumps({"title": "stone 0", "self_edit": "x"}))
    with pytest.raises(ValueError, match="no self-edit for passage 'stone 1'"):
        read_self_edit_file(str(path), PASSAGES)
    path.write_text(json.dumps({"self_edit": "x"}))
    with pytest.raises(ValueError, match="line 1"):
        read_self_edit_file(str(path), PASSAGES)
