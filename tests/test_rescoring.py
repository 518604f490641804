import json
import math

import pytest
from fakes import AppleAdapter  # the tests folder's own stand-ins

from trl_seal.knowledge import rescoring
from trl_seal.knowledge.data import Passage, Question
from trl_seal.knowledge.prompts import self_edit_prompt
from trl_seal.knowledge.reward import KnowledgeQAReward
from trl_seal.sampling import derive_seed

QUESTION = Question("the secret ?", ("apple",))
PASSAGES = [Passage(f"place {i}", f"the secret of place {i} is cloud", (QUESTION,)) for i in range(3)]


def run_rows(chat: bool = True) -> list[dict]:
    """Two rounds x 2 contexts x 3 self-edits: "apple" (teaches the answer) kept, "river" discarded, plus an invalid
    row in round 0 and a kept "river" in round 1."""
    rows = []
    for round_index in range(2):
        for context in range(2):
            passage = PASSAGES[context + round_index]
            text = self_edit_prompt(passage)
            prompt = [{"role": "user", "content": text}] if chat else text
            edits = [("apple is it", True, 1.0, None), ("river", False, 0.0, None),
                     ("", False, 0.0, "empty_self_edit")]
            if round_index == 1:
                edits[2] = ("river and river", True, 0.5, None)
            for self_edit, kept, reward, reason in edits:
                completion = [{"role": "assistant", "content": self_edit}] if chat else self_edit
                rows.append({"round": round_index, "context": context, "prompt": prompt, "self_edit": completion,
                             "reward": reward, "kept": kept, "reason": reason})
    return rows


# ------------------------------------------------------------------------------------------------ statistics
def test_round_statistics_on_hand_made_fresh_rewards():
    records = [{"round": 0, "context": c, "kept": k, "run_reward": r, "fresh_mean": f} for c, k, r, f in [
        (0, True, 0.8, 0.5), (0, True, 0.6, 0.3), (0, False, 0.0, 0.2),  # kept 0.4 vs 0.2: +0.2 (run +0.7)
        (1, True, 0.4, 0.1), (1, False, 0.2, 0.3),                       # -0.2 (run +0.2)
        (2, True, 0.9, 0.6), (2, False, 0.1, None),                      # no fresh reward: left out, so unpaired
    ]]
    (stats,) = rescoring.round_statistics(records, skipped={0: 4}, draws=500)
    assert stats["round"] == 1 and stats["skipped_invalid"] == 4
    assert (stats["contexts"], stats["paired_contexts"], stats["self_edits"]) == (3, 2, 6)
    assert (stats["kept"], stats["discarded"]) == (4, 2)
    assert stats["kept_fresh_mean"] == pytest.approx((0.5 + 0.3 + 0.1 + 0.6) / 4)
    assert stats["discarded_fresh_mean"] == pytest.approx(0.25)
    assert stats["fresh_difference"] == pytest.approx(0.0)
    assert stats["run_difference"] == pytest.approx(0.45)
    low, high = stats["fresh_difference_ci"]
    assert low == pytest.approx(-0.2) and high == pytest.approx(0.2), "two contexts: the CI spans their two gaps"
    runs, fresh = [0.8, 0.6, 0.0, 0.4, 0.2, 0.9], [0.5, 0.3, 0.2, 0.1, 0.3, 0.6]
    assert stats["spearman"] == pytest.approx(rescoring.spearman(runs, fresh))
    assert stats["pearson"] == pytest.approx(rescoring.pearson(runs, fresh))
    table = rescoring.markdown_table([stats])
    assert "+0.0 [-20.0, +20.0]" in table and "+45.0" in table
    assert "CI includes 0" in rescoring.describe_round(stats)
    assert "+0.00 [-0.20, +0.20]" in rescoring.markdown_table([stats], loglik=True), "loglik rewards stay in nats"
    assert "+0.45 nats per token apart" in rescoring.describe_round(stats, loglik=True)


def test_round_without_paired_contexts_and_round_of_invalid_rows_only():
    records = [{"round": 0, "context": 0, "kept": True, "run_reward": 0.5, "fresh_mean": 0.5}]
    first, second = rescoring.round_statistics(records, skipped={1: 3})
    assert first["paired_contexts"] == 0 and math.isnan(first["fresh_difference"])
    assert "no context had both" in rescoring.describe_round(first)
    assert (second["round"], second["self_edits"], second["skipped_invalid"]) == (2, 0, 3)


# ------------------------------------------------------------------------------------------------ rows and passages
def test_select_rows_skips_invalid_rows_and_caps_contexts():
    rows = run_rows()
    assert rescoring.select_rows(rows) == [0, 1, 3, 4, 6, 7, 8, 9, 10, 11]
    assert rescoring.select_rows(rows, rounds=[1], max_contexts=1) == [6, 7, 8]
    assert rescoring.select_rows(rows, valid=False) == [2, 5]
    assert rescoring.select_rows(rows, max_contexts=1, valid=False) == [2]
    assert rescoring.round_positions(rows) == [0, 1, 2, 3, 4, 5] * 2


def test_select_rows_can_skip_contexts_without_a_kept_self_edit():
    rows = run_rows()
    for row in rows[:3]:  # round 0, context 0: nothing kept
        row["kept"] = False
    assert rescoring.select_rows(rows, kept_contexts_only=True) == [3, 4, 6, 7, 8, 9, 10, 11]
    assert rescoring.select_rows(rows, max_contexts=1, kept_contexts_only=True) == [3, 4, 6, 7, 8]
    assert rescoring.select_rows(rows, valid=False, kept_contexts_only=True) == [5]


@pytest.mark.parametrize("chat", [True, False])
def test_prompts_map_back_to_passages(chat):
    rows = run_rows(chat)
    matched = rescoring.match_passages(rows, PASSAGES, "run/self_edits.jsonl", "train.json")
    assert [matched[p].title for p in (0, 3, 6, 9)] == ["place 0", "place 1", "place 1", "place 2"]


def test_unmatched_prompt_names_the_row_and_both_files():
    rows = run_rows()
    rows[4]["prompt"] = [{"role": "user", "content": "Read the passage below: something else"}]
    with pytest.raises(ValueError, match=r"run/self_edits\.jsonl line 5 \(round 0, context 1\).*train\.json"):
        rescoring.match_passages(rows, PASSAGES, "run/self_edits.jsonl", "train.json")
    assert len(rescoring.match_passages(rows, PASSAGES, "f", "p", positions=[0, 1])) == 2, "only the rows asked for"


# ------------------------------------------------------------------------------------------------ scoring
def test_each_self_edit_scored_num_scorings_times_on_fresh_seeds(tokenizer):
    rows, adapter = run_rows(), AppleAdapter(tokenizer)
    positions = rescoring.select_rows(rows, rounds=[0])
    passages = rescoring.match_passages(rows, PASSAGES, "f", "p", positions)
    heard = []
    records = rescoring.rescore(rows, passages, positions, KnowledgeQAReward(show_progress=False), adapter,
                                num_scorings=3, seed=1, run_seed=0, on_record=heard.append)
    assert heard == records and len(records) == 4 and len(adapter.jobs) == 4 * 3
    run_seeds = {derive_seed(0, "inner", 0, i) for i in range(6)}
    for record in records:
        assert len(set(record["fresh_seeds"])) == 3 and not set(record["fresh_seeds"]) & run_seeds
        expected = 1.0 if record["kept"] else 0.0  # "apple" teaches the answer, "river" does not
        assert record["fresh_rewards"] == [expected] * 3 and record["fresh_mean"] == expected
    trained = sorted(job.seed for job in adapter.jobs)
    assert trained == sorted(s for r in records for s in r["fresh_seeds"]), "each inner loop on its own fresh seed"
    (stats,) = rescoring.round_statistics(records)
    assert stats["fresh_difference"] == pytest.approx(1.0) and stats["paired_contexts"] == 2


def test_failed_inner_loop_is_none_and_a_seed_the_run_used_is_refused(tokenizer):
    rows = run_rows()
    rows[0]["self_edit"] = [{"role": "assistant", "content": "tiger"}]  # the fake adapter fails on "tiger"
    passages = rescoring.match_passages(rows, PASSAGES, "f", "p", [0])
    reward = KnowledgeQAReward(show_progress=False)
    (record,) = rescoring.rescore(rows, passages, [0], reward, AppleAdapter(tokenizer), num_scorings=2, seed=1)
    assert record["fresh_rewards"] == [None, None] and record["fresh_mean"] is None
    with pytest.raises(ValueError, match="used by the run"):  # seed and purpose chosen to collide on purpose
        rescoring._check_distinct(reward, {0: [derive_seed(7, "inner", 0, 2)]}, 7, 0, 6)


# ------------------------------------------------------------------------------------------------ the command
def write_run(tmp_path, tiny_model, tokenizer, rows) -> tuple:
    """A finished two-round run on disk: its rows, ledger fingerprint, seed and round-1 checkpoint."""
    run_dir, model_dir = tmp_path / "run", tmp_path / "model"
    tiny_model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    (run_dir / "seal_ledger").mkdir(parents=True)
    (run_dir / "self_edits.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (run_dir / "seal_config.json").write_text(json.dumps({"seed": 0}))
    reward = {"score_kind": "accuracy", "baseline_kind": "base", "num_scorings": 1, "max_new_tokens": 2,
              "question_with_title": True, "grader": "trl_seal.knowledge.grading.answer_contained",
              "document_layout": "appended"}
    inner = {"r": 4, "lora_alpha": 8, "num_epochs": 1, "learning_rate": 0.01, "max_adapters": 8}
    (run_dir / "seal_ledger" / "config.json").write_text(json.dumps({"model": str(model_dir), "reward": reward,
                                                                      "inner_adapter": inner}))
    checkpoint = run_dir / "checkpoint-1"
    tiny_model.save_pretrained(checkpoint)
    (checkpoint / "seal_state.json").write_text(json.dumps({"round": 1}))
    passages = tmp_path / "train.json"
    questions = [{"question": "the secret ?", "answer": "apple"}]
    passages.write_text(json.dumps([{"title": p.title, "context": p.context, "questions": questions}
                                    for p in PASSAGES]))
    return run_dir, passages


def test_run_settings_are_the_defaults_and_flags_override_them(tmp_path, tiny_model, tokenizer):
    from trl_seal.scripts.rescore_self_edits import make_parser

    run_dir, _ = write_run(tmp_path, tiny_model, tokenizer, run_rows(chat=False))
    args, inner = make_parser().parse_args_and_config(["--run_dir", str(run_dir), "--inner_r", "2"])
    assert (inner.inner_num_epochs, inner.inner_r, inner.inner_lora_alpha) == (1, 2, 8)
    assert (args.answer_max_new_tokens, args.model, args.self_edit_layout) == (2, str(tmp_path / "model"), "appended")
    assert args.passages is None, "the run recorded none"
    (run_dir / "knowledge_args.json").write_text(json.dumps({"script_args": {"passages": "train.json"}}))
    assert make_parser().parse_args_and_config(["--run_dir", str(run_dir)])[0].passages == "train.json"
    recipe = tmp_path / "rescore.yaml"
    recipe.write_text(f"run_dir: {run_dir}\ninner_num_epochs: 2\ninner_r: 16\n")
    _, inner = make_parser().parse_args_and_config(["--config", str(recipe), "--inner_r", "2"])
    assert (inner.inner_num_epochs, inner.inner_r, inner.inner_lora_alpha) == (2, 2, 8), "run < YAML < flags"


def test_command_scores_writes_and_resumes(tmp_path, tiny_model, tokenizer, monkeypatch, capsys):
    from trl_seal.cli import main

    run_dir, passages = write_run(tmp_path, tiny_model, tokenizer, run_rows(chat=False))
    argv = ["rescore-self-edits", "--run_dir", str(run_dir), "--passages", str(passages), "--num_scorings", "2"]
    assert main(argv) == 0
    out = run_dir / "rescored"
    records = [json.loads(line) for line in (out / "rescored.jsonl").read_text().splitlines()]
    assert len(records) == 10, "every valid row of both rounds, the invalid one skipped"
    assert all(len(r["fresh_rewards"]) == 2 and len(set(r["fresh_seeds"])) == 2 for r in records)
    assert json.loads((out / "config.json").read_text())["seed"] == 1
    table = (out / "rescored.md").read_text()
    assert "| 1 | 2 (2) | 4 (2 / 2; 2) |" in table and "| 2 | 2 (2) | 6 (4 / 2; 0) |" in table
    assert "round 2: kept self-edits scored" in capsys.readouterr().out

    # a restart rescores only what is missing (here the last record, as if the run had been killed before it)
    (out / "rescored.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records[:-1]))
    calls = []
    original = rescoring.rescore
    monkeypatch.setattr(rescoring, "rescore", lambda rows, p, positions, *a, **k: calls.append(positions) or
                        original(rows, p, positions, *a, **k))
    assert main(argv) == 0
    assert calls == [[11]]
    again = [json.loads(line) for line in (out / "rescored.jsonl").read_text().splitlines()]
    assert again[-1]["fresh_seeds"] == records[-1]["fresh_seeds"] and len(again) == 10
    with pytest.raises(ValueError, match="other settings"):
        main([*argv, "--seed", "5"])
    with pytest.raises(ValueError, match=r"rounds='3'.*numbered from 1: \[1, 2\]"):
        main([*argv, "--rounds", "3"])
