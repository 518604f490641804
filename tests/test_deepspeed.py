"""A full SEAL round under single-process DeepSpeed ZeRO-2 and ZeRO-3 on CPU, launched through `accelerate launch`."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("deepspeed")

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("stage", [2, 3])
def test_seal_round_under_deepspeed(tmp_path, stage):
    env = {k: v for k, v in os.environ.items() if k != "ACCELERATE_USE_CPU"}  # it would swap DeepSpeed for DDP
    env.update(OMP_NUM_THREADS="1")
    command = [
        sys.executable, "-m", "accelerate.commands.launch",
        "--config_file", str(ROOT / "recipes" / "accelerate" / f"deepspeed_zero{stage}.yaml"),
        str(ROOT / "tests" / "scripts" / "seal_round.py"), str(tmp_path / "out"),
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
    lines = [line for line in done.stdout.splitlines() if line.startswith('{"num_processes"')]
    assert lines, f"no result line; exit {done.returncode}\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}"
    result = json.loads(lines[-1])
    assert result["distributed_type"] == "DistributedType.DEEPSPEED"
    assert result["inner_matches_policy"], "the inner copy must hold the policy's gathered weights"
    assert len(result["rewards"]) == 2 * 16 and all(r is not None for r in result["rewards"])
    assert result["kept"], "ReST-EM kept nothing: the round did not run end to end"
