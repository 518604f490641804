"""Kill a real SEAL run with SIGKILL at random points, resume it, and get exactly the uninterrupted result.

Each attempt of tests/scripts/seal_resume.py (3 rounds x 16 self-edits, a checkpoint per round, rewards in chunks of
3) is killed at one point: during generation, inside the reward function with a chunk in flight, right after a
ledger write, during the policy update, while writing a checkpoint. The next attempt resumes from the last complete
checkpoint. The final model must be bitwise the uninterrupted one, the scored self-edits and kept set the same, the
ledger must hold every self-edit exactly once, and no completed evaluation may run twice.
"""

import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "tests" / "scripts" / "seal_resume.py"
SELF_EDITS = 3 * 16


def attempt(
    output_dir: Path, model_dir: Path, kill: str | None = None, resume: bool = True, processes: int = 1
) -> int:
    """Run the script once; returns 0, or -9 when it was killed (with 2 processes: a rank died of SIGKILL)."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop("SEAL_KILL", None)
    if kill:
        env["SEAL_KILL"] = kill
    launch = [sys.executable]
    if processes > 1:
        launch += ["-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes),
                   "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                   "--main_process_port", "29541"]
    done = subprocess.run([*launch, str(SCRIPT), str(output_dir), str(model_dir), *(["--resume"] * resume)],
                          env=env, capture_output=True, text=True, timeout=600)
    attempt.last_stdout = done.stdout
    if processes > 1 and done.returncode != 0 and "Signal 9 (SIGKILL)" in done.stderr + done.stdout:
        return -signal.SIGKILL  # torchrun reports the rank that died and takes the others down
    assert done.returncode in (0, -signal.SIGKILL), f"attempt {kill} failed:\n{done.stderr[-4000:]}"
    return done.returncode


def kill_plan(seed: int) -> list[str]:
    """Six kills at random points, in round order (each attempt resumes before its kill point, so each one fires)."""
    rng = random.Random(seed)
    return [
        "generate:0:1",
        f"score:0:{rng.randint(1, 15)}",  # with n - 1 (rounded down to chunks of 3) already in the ledger
        f"ledger:1:{rng.randint(1, 5)}",
        "update:1:1",  # round 1 regenerated, every reward from the ledger, killed in the update
        "checkpoint:1:1",  # the round's checkpoint cut short: resumed from the one before
        f"score:2:{rng.randint(1, 15)}",
    ]


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_sigkill_at_random_points_then_resume_gives_the_uninterrupted_run(tmp_path, tiny_model, tokenizer):
    model_dir = tmp_path / "tiny"
    tiny_model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    reference, killed = tmp_path / "reference", tmp_path / "killed"
    assert attempt(reference, model_dir) == 0

    plan = kill_plan(seed=int(os.environ.get("SEAL_KILL_SEED", "0")))
    codes = [attempt(killed, model_dir, kill) for kill in plan]
    assert codes == [-signal.SIGKILL] * len(plan), f"every planned kill must fire: {list(zip(plan, codes))}"
    assert attempt(killed, model_dir) == 0

    final = load_file(killed / "final" / "model.safetensors")
    expected = load_file(reference / "final" / "model.safetensors")
    assert all(torch.equal(final[name], expected[name]) for name in expected), "final model differs"
    assert read_jsonl(killed / "self_edits.jsonl") == read_jsonl(reference / "self_edits.jsonl")
    assert read_jsonl(killed / "seal_rounds.jsonl")[-1]["round"] == 2

    ledger = [e for path in sorted((killed / "seal_ledger").glob("process-*.jsonl")) for e in read_jsonl(path)]
    keys = [(e["round"], e["index"]) for e in ledger]
    assert len(keys) == len(set(keys)) == SELF_EDITS, "ledger: 0 duplicated, 0 lost"
    evaluations = (killed / "evaluations-0.log").read_text().splitlines()
    assert len(evaluations) == SELF_EDITS, "a completed evaluation was run again"

    # A fresh run (no resume_from_checkpoint) in the same folder redoes the rounds but trains no inner loop again.
    assert attempt(killed, model_dir, resume=False) == 0
    assert json.loads(attempt.last_stdout.strip().splitlines()[-1])["ledger_hits"] == SELF_EDITS
    assert [r["reused_from_ledger"] for r in read_jsonl(killed / "seal_rounds.jsonl")] == [16, 16, 16]
    assert len((killed / "evaluations-0.log").read_text().splitlines()) == SELF_EDITS
    final = load_file(killed / "final" / "model.safetensors")
    assert all(torch.equal(final[name], expected[name]) for name in expected)
    assert read_jsonl(killed / "self_edits.jsonl") == read_jsonl(reference / "self_edits.jsonl")


def test_two_processes_killed_and_resumed(tmp_path, tiny_model, tokenizer):
    """The same on 2 CPU processes: each has its own ledger file; a dead rank takes the run down; resume joins both."""
    model_dir = tmp_path / "tiny"
    tiny_model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    reference, killed = tmp_path / "reference", tmp_path / "killed"
    assert attempt(reference, model_dir, processes=2) == 0
    plan = ["score:0:4", "ledger:1:2", "checkpoint:1:1", "update:2:1"]
    codes = [attempt(killed, model_dir, kill, processes=2) for kill in plan]
    assert codes == [-signal.SIGKILL] * len(plan), list(zip(plan, codes))
    assert attempt(killed, model_dir, processes=2) == 0

    final = load_file(killed / "final" / "model.safetensors")
    expected = load_file(reference / "final" / "model.safetensors")
    assert all(torch.equal(final[name], expected[name]) for name in expected), "final model differs"
    assert read_jsonl(killed / "self_edits.jsonl") == read_jsonl(reference / "self_edits.jsonl")
    files = sorted((killed / "seal_ledger").glob("process-*.jsonl"))
    assert [f.name for f in files] == ["process-0.jsonl", "process-1.jsonl"]
    keys = [(e["round"], e["index"]) for path in files for e in read_jsonl(path)]
    assert len(keys) == len(set(keys)) == SELF_EDITS
    evaluations = [line for rank in (0, 1) for line in (killed / f"evaluations-{rank}.log").read_text().splitlines()]
    assert len(evaluations) == SELF_EDITS
