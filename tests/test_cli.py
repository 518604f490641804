import json
import subprocess
import sys

import pytest

from trl_seal import __version__
from trl_seal.cli import main


def test_help_and_version(capsys):
    assert main([]) == 0
    out = capsys.readouterr().out
    assert "eval-knowledge" in out and "seal_knowledge.py" in out
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0 and __version__ in capsys.readouterr().out


def test_console_script_is_installed():
    done = subprocess.run([sys.executable, "-m", "trl_seal.cli", "eval-knowledge", "--help"], capture_output=True, text=True)
    assert done.returncode == 0 and "--self_edits_file" in done.stdout


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
        "--self_edits_file", str(tmp_path / "e.jsonl"), "--inner_rank", "4", "--inner_alpha", "8", "--inner_epochs", "2",
        "--output_dir", str(tmp_path / "out"),
    ])
    assert code == 0
    result = json.loads((tmp_path / "out" / "results.json").read_text())
    names = [s["condition"] for s in result["summaries"]]
    assert names == ["base", "passage", "self_edits", "file", "cpt"]
    assert all(s["passages"] == 3 and 0.0 <= s["accuracy"] <= 1.0 for s in result["summaries"])
    assert "paired_diff_vs_passage" in result["summaries"][2]
    assert "| base | 3 |" in (tmp_path / "out" / "results.md").read_text()
