"""What the main job shows: the sentence that reads its paired CIs, the per-round rewards and the PNG."""

import json

import pytest
from test_knowledge_evaluate import PASSAGES
from test_knowledge_reward import FakeAdapter

from trl_seal.knowledge.evaluate import describe_comparison, markdown_table, paired_key, run_conditions
from trl_seal.knowledge.grading import exact_match
from trl_seal.knowledge.plot import plot_results, read_self_edit_rows, round_rewards
from trl_seal.knowledge.reward import KnowledgeQAReward

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def summaries(seal_vs_base_ci, seal_vs_passage_ci=(-0.05, 0.1), passages=24):
    """Made-up summaries of the main job's four conditions; only the paired CIs of SEAL vary."""
    def row(name, accuracy, **paired):
        return {"condition": name, "passages": passages, "accuracy": accuracy,
                "ci95": [max(0.0, accuracy - 0.08), accuracy + 0.08], **paired}

    low, high = seal_vs_base_ci
    return [
        row("base", 0.0),
        row("passage", 0.2),
        row("base self-edits", 0.15, **{paired_key("passage"): {"mean": -0.05, "ci95": [-0.12, 0.02]}}),
        row("SEAL self-edits", 0.25, **{
            paired_key("passage"): {"mean": 0.05, "ci95": list(seal_vs_passage_ci)},
            paired_key("base self-edits"): {"mean": (low + high) / 2, "ci95": [low, high]},
        }),
    ]


def test_sentence_claims_a_difference_only_when_the_paired_ci_excludes_zero():
    overlapping = describe_comparison(summaries((-0.04, 0.2)))
    assert overlapping.startswith("On 24 held-out passages, the SEAL model's self-edits gave 25.0 % accuracy")
    assert "the base model's own self-edits (15.0 %; paired 95 % CI [-4.0, +20.0], includes 0: no difference can " \
           "be claimed on 24 passages)" in overlapping
    assert "gain" not in overlapping and ". " not in overlapping and overlapping.endswith(")."), "one sentence"

    gain = describe_comparison(summaries((0.02, 0.18)))
    assert "[+2.0, +18.0], above 0: a gain on these passages" in gain and gain != overlapping
    loss = describe_comparison(summaries((-0.3, -0.01), seal_vs_passage_ci=(-0.2, -0.02)))
    assert loss.count("below 0: a loss on these passages") == 2 and "no difference" not in loss


def test_sentence_without_pairs_and_for_an_unknown_condition():
    rows = [{"condition": "passage", "passages": 3, "accuracy": 0.5, "ci95": [0.2, 0.8]}]
    assert describe_comparison(rows, "passage") == (
        "On 3 held-out passages, training on the passage alone gave 50.0 % accuracy (95 % CI [20.0, 80.0]); no "
        "paired comparison was made.")
    with pytest.raises(ValueError, match="No condition 'SEAL self-edits'"):
        describe_comparison(rows)


def test_run_conditions_pairs_any_two_conditions_and_the_table_shows_them(tokenizer):
    edits = {"good": [["apple"], ["apple"], ["river"], ["apple"]], "bad": [["river"]] * 4}
    result = run_conditions(FakeAdapter(tokenizer), PASSAGES, KnowledgeQAReward(grader=exact_match),
                            ["passage", "bad", "good"], edits, paired=[("good", "bad")])
    good = {s["condition"]: s for s in result}["good"]
    assert good[paired_key("bad")]["mean"] == pytest.approx(0.75)
    assert good[paired_key("passage")]["mean"] == pytest.approx(0.75), "the passage column is still there"
    table = markdown_table(result, references=("passage", "bad"))
    assert "| paired diff vs passage (95 % CI) | paired diff vs bad (95 % CI) |" in table
    assert table.splitlines()[1] == "|---|---|---|---|---|---|"
    assert markdown_table(result) == markdown_table(result, references=("passage",)), "the default is unchanged"
    with pytest.raises(ValueError, match="not among the conditions"):
        run_conditions(FakeAdapter(tokenizer), PASSAGES, KnowledgeQAReward(), ["passage"], paired=[("good", "bad")])


def test_round_rewards_resample_contexts_and_skip_invalid_self_edits(tmp_path):
    rows = [{"round": 0, "context": c, "reward": r} for c, r in [(0, 0.0), (0, 0.2), (1, 0.4), (1, None)]]
    rows += [{"round": 1, "context": c, "reward": 0.5} for c in range(3)]
    (tmp_path / "self_edits.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    first, second = round_rewards(read_self_edit_rows(str(tmp_path)))
    assert (first["round"], first["contexts"], first["rewards"]) == (1, 2, [0.0, 0.2, 0.4])
    assert first["mean"] == pytest.approx(0.2)
    assert first["ci95"] == pytest.approx([0.1, 0.4]), "the CI resamples the two contexts' means (0.1 and 0.4)"
    assert second["ci95"] == [0.5, 0.5] and second["contexts"] == 3
    assert read_self_edit_rows(str(tmp_path / "none")) == []
    with open(tmp_path / "self_edits.jsonl", "a") as f:
        f.write('{"round": 1, "context": 3, "rew')  # a kill mid-append
    assert len(read_self_edit_rows(str(tmp_path))) == len(rows), "the cut line is skipped, not a crash"


@pytest.mark.parametrize("num_rounds", [0, 1, 2])
def test_plot_writes_a_png(tmp_path, num_rounds):
    rounds = [{"round": n + 1, "contexts": 2, "mean": 0.1 * n, "ci95": [0.0, 0.2], "rewards": [0.0, 0.1, 0.3]}
              for n in range(num_rounds)]
    path = plot_results(str(tmp_path / "results.png"), summaries((-0.04, 0.2)), rounds, "accuracy gain",
                        title="made-up")
    with open(path, "rb") as f:
        assert f.read(8) == PNG_SIGNATURE
    assert (tmp_path / "results.png").stat().st_size > 5000, "a drawn figure, not an empty canvas"


def test_importing_the_package_does_not_import_matplotlib():
    import subprocess
    import sys

    code = "import sys, trl_seal.knowledge.plot, trl_seal.scripts.knowledge; print('matplotlib' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


def test_long_condition_names_are_wrapped_at_slashes():
    from trl_seal.knowledge.plot import _tick_label

    label = _tick_label("self_edits (outputs/seal_squad/checkpoint-8)")
    assert all(len(line) <= 17 for line in label.splitlines()) and label.count("\n") >= 2
    assert label.replace("\n", "").replace(" ", "") == "self_edits(outputs/seal_squad/checkpoint-8)"
    assert _tick_label("passage") == "passage"
