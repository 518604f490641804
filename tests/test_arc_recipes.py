"""The ARC recipes are flat YAML whose keys are fields of examples/seal_arc.py's dataclasses, with valid values."""

import dataclasses
import importlib.util
from pathlib import Path

import pytest
import yaml

from trl_seal import SEALConfig

ROOT = Path(__file__).resolve().parents[1]
RECIPES = sorted((ROOT / "recipes" / "arc").glob("*.yaml"))


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("seal_arc", ROOT / "examples" / "seal_arc.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_there_are_recipes():
    assert {path.name for path in RECIPES} >= {"paper_llama_1b.yaml", "cpu_smollm2.yaml"}


@pytest.mark.parametrize("path", RECIPES, ids=[path.name for path in RECIPES])
def test_every_key_is_a_field_and_the_config_builds(path, script, tmp_path):
    values = yaml.safe_load(path.read_text())
    assert isinstance(values, dict) and all(not isinstance(v, (dict, list)) for v in values.values()), "flat YAML"
    script_fields = {f.name for f in dataclasses.fields(script.ARCArguments)}
    config_fields = {f.name for f in dataclasses.fields(SEALConfig)}
    unknown = set(values) - script_fields - config_fields
    assert not unknown, f"{path.name}: keys {sorted(unknown)} are not fields of ARCArguments or SEALConfig"
    script.ARCArguments(**{k: v for k, v in values.items() if k in script_fields})
    config = {k: v for k, v in values.items() if k in config_fields}
    config.update(output_dir=str(tmp_path), bf16=False, use_cpu=True)  # bf16 needs a GPU here; the rest is checked
    args = SEALConfig(**config)
    assert args.generation_batch_size == values["contexts_per_round"] * values["num_generations"]


def test_paper_recipe_has_the_paper_protocol():
    from trl_seal.arc.data import PAPER_EVAL_TASKS, PAPER_TRAIN_TASKS

    values = yaml.safe_load((ROOT / "recipes" / "arc" / "paper_llama_1b.yaml").read_text())
    assert values["train_tasks"].split(",") == list(PAPER_TRAIN_TASKS)
    assert values["eval_tasks"].split(",") == list(PAPER_EVAL_TASKS)
    assert (values["num_generations"], values["num_rounds"], values["eval_self_edits_per_task"]) == (15, 1, 5)
    assert (values["inner_rank"], values["inner_alpha"], values["max_inner_steps"], values["max_examples"]) == (
        128, 16, 375, 250)


def test_cpu_recipe_spells_out_the_script_defaults(script):
    values = yaml.safe_load((ROOT / "recipes" / "arc" / "cpu_smollm2.yaml").read_text())
    defaults = {f.name: f.default for f in dataclasses.fields(script.ARCArguments)} | script.CPU_DEMO
    assert {key: defaults[key] for key in values} == values
