import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from trl_seal import __version__
from trl_seal.cli import launch_training, main

ROOT = Path(__file__).resolve().parents[1]


def test_help_and_version(capsys):
    assert main([]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in ("knowledge", "arc", "eval-knowledge", "eval-arc", "--accelerate_config"))
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0 and __version__ in capsys.readouterr().out


def test_console_script_is_installed():
    done = subprocess.run([sys.executable, "-m", "trl_seal.cli", "eval-knowledge", "--help"], capture_output=True, text=True)
    assert done.returncode == 0 and "--self_edits_file" in done.stdout
    done = subprocess.run([sys.executable, "-m", "trl_seal.cli", "knowledge", "--help"], capture_output=True, text=True)
    assert done.returncode == 0
    assert all(flag in done.stdout for flag in ("--inner_r", "--num_rounds", "--load_in_4bit", "--accelerate_config"))


def launched(argv):
    """The `accelerate launch` arguments `trl-seal knowledge <argv>` would run with."""
    captured = []
    assert launch_training("knowledge", argv, launch=captured.append) == 0
    return captured[0]


def test_training_command_splits_script_and_accelerate_arguments(tmp_path, monkeypatch):
    monkeypatch.setenv("SEAL_TEST_VARIABLE", "before")  # restored (removed) after the test
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("env:\n  SEAL_TEST_VARIABLE: ready\nnum_processes: 2\ninner_r: 8\nnum_rounds: 3\n")
    accelerate = launched(["--config", str(recipe), "--inner_num_epochs", "2", "--accelerate_config", "zero3",
                           "--main_process_port", "29600"])
    assert accelerate.num_processes == 2 and accelerate.main_process_port == 29600
    assert accelerate.config_file.endswith("zero3.yaml")
    assert accelerate.training_script.endswith(os.path.join("trl_seal", "scripts", "knowledge.py"))
    assert accelerate.training_script_args == ["--config", str(recipe), "--inner_num_epochs", "2"]
    assert os.environ["SEAL_TEST_VARIABLE"] == "ready", "the recipe's env block is set before launching"
    local = launched(["--accelerate_config", str(ROOT / "recipes" / "accelerate" / "multi_cpu.yaml")])
    assert local.config_file.endswith("multi_cpu.yaml") and local.training_script_args == []


def test_training_command_names_a_misspelt_recipe_key(tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("inner_rnak: 8\n")
    with pytest.raises(ValueError, match=r"recipe.yaml: keys \['inner_rnak'\]"):
        launched(["--config", str(recipe)])
    with pytest.raises(SystemExit):  # a misspelt command-line flag: accelerate's parser refuses it
        launched(["--inner_rnak", "8"])


def test_eval_command_reads_a_recipe(tmp_path, monkeypatch):
    from trl_seal.scripts import eval_knowledge

    seen = []
    monkeypatch.setattr(eval_knowledge, "main", lambda args, inner: seen.append((args, inner.to_config())) or 0)
    recipe = tmp_path / "eval.yaml"
    recipe.write_text("num_passages: 7\nk: 3\ninner_r: 8\ninner_num_epochs: 2\n")
    assert main(["eval-knowledge", "--config", str(recipe), "--k", "4", "--inner_num_epochs", "5"]) == 0
    args, inner = seen[0]
    assert (args.num_passages, args.k) == (7, 4), "YAML sets fields, the command line overrides them"
    assert (inner.r, inner.num_epochs, inner.lora_alpha) == (8, 5, 64), "the same for the inner_* fields"


def test_eval_knowledge_end_to_end(tmp_path, tokenizer, tiny_model):
    model_dir = tmp_path / "tiny"
    tiny_model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    passages = [{"title": "stone", "context": f"the secret is apple {i}", "questions": [
        {"question": "the secret", "answer": "apple"}, {"question": "secret :", "answer": "apple"}]} for i in range(3)]
    (tmp_path / "p.json").write_text(json.dumps(passages))
    (tmp_path / "e.jsonl").write_text("\n".join(json.dumps({"title": "stone", "self_edit": "apple apple"}) for _ in range(2)))
    code = main([
        "eval-knowledge", "--model", str(model_dir), "--passages", str(tmp_path / "p.json"), "--num_passages", "3",
        "--conditions", "base,passage,self_edits,file,cpt", "--k", "2", "--max_new_tokens", "4",
        "--self_edits_file", str(tmp_path / "e.jsonl"), "--inner_r", "4", "--inner_lora_alpha", "8",
        "--inner_num_epochs", "2",
        "--output_dir", str(tmp_path / "out"),
    ])
    assert code == 0
    result = json.loads((tmp_path / "out" / "results.json").read_text())
    names = [s["condition"] for s in result["summaries"]]
    assert names == ["base", "passage", "self_edits", "file", "cpt"]
    assert all(s["passages"] == 3 and 0.0 <= s["accuracy"] <= 1.0 for s in result["summaries"])
    assert "paired_diff_vs_passage" in result["summaries"][2]
    assert "| base | 3 |" in (tmp_path / "out" / "results.md").read_text()
