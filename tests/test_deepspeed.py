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


def test_knowledge_script_under_zero3_with_a_lora_policy(tmp_path, tiny_model, tokenizer):
    """`trl-seal knowledge` under ZeRO-3: the trained policy is saved from the shards and re-read for the table."""
    from test_recipes import trl_seal

    tiny_model.save_pretrained(tmp_path / "tiny")
    tokenizer.save_pretrained(tmp_path / "tiny")
    passages = [{"title": f"t{i}", "context": f"the secret is apple {i}", "questions": [
        {"question": "the secret", "answer": "apple"}]} for i in range(4)]
    (tmp_path / "passages.json").write_text(json.dumps(passages))
    out = tmp_path / "out"
    trl_seal("knowledge", "--config", "recipes/knowledge/cpu_smollm2.yaml",
             "--accelerate_config", "recipes/accelerate/deepspeed_zero3.yaml", "--main_process_port", "29533",
             "--model_name_or_path", str(tmp_path / "tiny"), "--passages", str(tmp_path / "passages.json"),
             "--use_peft", "true", "--lora_r", "4", "--lora_alpha", "8", "--lora_target_modules", "q_proj", "v_proj",
             "--num_train_passages", "2", "--num_eval_passages", "2", "--contexts_per_round", "2",
             "--num_generations", "2", "--per_device_train_batch_size", "2", "--gradient_accumulation_steps", "1",
             "--num_iterations", "1", "--max_completion_length", "6", "--inner_num_epochs", "1", "--inner_r", "4",
             "--inner_lora_alpha", "8", "--answer_max_new_tokens", "4", "--inner_dtype", "float32",
             "--output_dir", str(out))
    results = json.loads((out / "results.json").read_text())
    assert [s["condition"] for s in results["summaries"]][-1] == "SEAL self-edits"
    assert results["model_args"]["use_peft"] and (out / "adapter_model.safetensors").is_file()
