"""Multi-process SEAL equals single-process SEAL: 2 CPU processes through `accelerate launch`, same seed.

Each process generates and scores its share of the contexts with its own inner loops; rewards are gathered; the
policy update is data-parallel. With seeded sampling and per-self-edit inner seeds the self-edits, rewards and kept
self-edits of both rounds must not depend on the number of processes.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "tests" / "scripts" / "seal_round.py"


def run_round(output_dir: Path, num_processes: int) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", ACCELERATE_USE_CPU="true")
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(num_processes),
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    if num_processes > 1:
        launch += ["--multi_gpu", "--main_process_port", "29517"]
    done = subprocess.run([*launch, str(SCRIPT), str(output_dir)], env=env, capture_output=True, text=True,
                          timeout=900)
    lines = [line for line in done.stdout.splitlines() if line.startswith('{"num_processes"')]
    assert lines, f"no result line; exit {done.returncode}\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}"
    return json.loads(lines[-1])


def test_two_processes_match_one(tmp_path):
    single = run_round(tmp_path / "single", 1)
    double = run_round(tmp_path / "double", 2)
    assert (single["num_processes"], double["num_processes"]) == (1, 2)
    assert double["distributed_type"] == "DistributedType.MULTI_CPU"
    assert len(single["self_edits"]) == len(double["self_edits"]) == 2 * 16
    assert double["self_edits"] == single["self_edits"], "seeded sampling must not depend on the process count"
    assert double["rewards"] == pytest.approx(single["rewards"], abs=1e-4)
    assert double["kept"] == single["kept"] and single["kept"]
    assert single["inner_matches_policy"] and double["inner_matches_policy"]


@pytest.mark.slow
def test_without_seeded_sampling_the_process_count_changes_the_self_edits(tmp_path, monkeypatch):
    """The control: TRL's per-process random stream makes 2 processes write other self-edits than 1."""
    monkeypatch.setenv("SEAL_SEEDED_SAMPLING", "0")
    single, double = run_round(tmp_path / "single", 1), run_round(tmp_path / "double", 2)
    assert double["self_edits"][:16] != single["self_edits"][:16]
