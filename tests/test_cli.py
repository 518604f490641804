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


def test_version_and_package_import_stay_light():
    """`trl-seal --version`/`--help` and `import trl_seal` must not pay for torch, TRL or transformers."""
    done = subprocess.run([sys.executable, "-m", "trl_seal.cli", "--version"], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.strip() == f"trl-seal {__version__}"
    probe = ("import sys, trl_seal, trl_seal.cli; trl_seal.cli.build_parser().format_help(); "
             "print(sorted(m for m in ('torch', 'trl', 'transformers', 'accelerate', 'peft') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stdout + done.stderr


def test_public_api_resolves_lazily():
    import trl_seal

    assert "KnowledgeQAReward" in trl_seal.__all__ and "KnowledgeQAReward" in dir(trl_seal)
    for name in trl_seal.__all__:
        assert getattr(trl_seal, name) is not None
    from trl_seal.knowledge.reward import KnowledgeQAReward

    assert trl_seal.KnowledgeQAReward is KnowledgeQAReward
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        trl_seal.Nope  # noqa: B018


def test_knowledge_help_puts_seal_fields_first():
    from trl_seal.scripts import knowledge
    from trl_seal.scripts.common import INHERITED_GROUP

    text = knowledge.make_parser(prog="trl-seal knowledge").format_help()
    inherited = text.index(INHERITED_GROUP)
    for flag in ("--num_train_passages", "--num_rounds", "--contexts_per_round", "--seeded_sampling",
                 "--model_name_or_path", "--load_in_4bit"):
        assert text.index(f"  {flag} ") < inherited, f"{flag} is listed after the inherited fields"
    assert text.index("  --num_rounds ") < text.index("  --model_name_or_path ")
    assert text.index("  --logging_steps ") > inherited and text.index("  --weight_decay ") > inherited
    for derived in ("--max_steps", "--num_train_epochs", "--max-steps"):
        assert derived not in text
    assert "  --no_seeded_sampling  Turn off --seeded_sampling." in text
    assert "--num-rounds" not in text, "one spelling per flag in the help"
    parsed = knowledge.make_parser().parse_args_into_dataclasses(["--no-seeded-sampling", "--num-rounds", "2"])
    seal_args = next(p for p in parsed if hasattr(p, "seeded_sampling"))
    assert seal_args.seeded_sampling is False and seal_args.num_rounds == 2, "both spellings still parse"


def test_console_script_is_installed():
    cli = [sys.executable, "-m", "trl_seal.cli"]
    done = subprocess.run([*cli, "eval-knowledge", "--help"], capture_output=True, text=True)
    assert done.returncode == 0 and "--self_edits_file" in done.stdout
    done = subprocess.run([*cli, "knowledge", "--help"], capture_output=True, text=True)
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
    assert accelerate.training_script.endswith(os.path.join("trl_seal", "scripts", "entry.py"))
    assert accelerate.training_script_args == ["knowledge", "--config", str(recipe), "--inner_num_epochs", "2"]
    assert os.environ["SEAL_TEST_VARIABLE"] == "ready", "the recipe's env block is set before launching"
    local = launched(["--accelerate_config", str(ROOT / "recipes" / "accelerate" / "multi_cpu.yaml")])
    assert local.config_file.endswith("multi_cpu.yaml") and local.training_script_args == ["knowledge"]


def test_training_command_gives_accelerate_its_defaults_without_a_config():
    """Without a config, `accelerate launch` prints a "defaults used" notice (num_processes 0 on a CPU)."""
    import torch
    from accelerate.commands.config import default_config_file

    if os.path.isfile(default_config_file):
        pytest.skip("this machine has a saved `accelerate config`, which accelerate reads instead")
    plain = launched([])
    assert (plain.num_machines, plain.mixed_precision, plain.dynamo_backend) == (1, "no", "no")
    if not torch.cuda.is_available():
        assert plain.num_processes == 1
    assert launched(["--num_processes", "2"]).num_processes == 2, "what the user gives is kept"


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


def _model_and_passages(tmp_path, tiny_model, tokenizer, count: int, questions: int = 1):
    """The tiny model saved as a folder, and `count` one-title passages in tmp_path/p.json."""
    model_dir = tmp_path / "tiny"
    tiny_model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    asked = [{"question": "the secret", "answer": "apple"}, {"question": "secret :", "answer": "apple"}][:questions]
    passages = [{"title": "stone", "context": f"the secret is apple {i}", "questions": asked} for i in range(count)]
    (tmp_path / "p.json").write_text(json.dumps(passages))
    return model_dir


def test_eval_knowledge_end_to_end(tmp_path, tokenizer, tiny_model):
    model_dir = _model_and_passages(tmp_path, tiny_model, tokenizer, 3, questions=2)
    edit = json.dumps({"title": "stone", "self_edit": "apple apple"})
    (tmp_path / "e.jsonl").write_text("\n".join([edit, edit]))
    code = main([
        "eval-knowledge", "--model", str(model_dir), "--passages", str(tmp_path / "p.json"), "--num_passages", "3",
        "--conditions", "base,passage,self_edits,file,cpt,matched_passage", "--k", "2", "--max_new_tokens", "4",
        "--self_edits_file", str(tmp_path / "e.jsonl"), "--inner_r", "4", "--inner_lora_alpha", "8",
        "--inner_num_epochs", "2",
        "--output_dir", str(tmp_path / "out"),
    ])
    assert code == 0
    result = json.loads((tmp_path / "out" / "results.json").read_text())
    names = [s["condition"] for s in result["summaries"]]
    assert names == ["base", "passage", "self_edits", "file", "cpt", "matched_passage"]
    assert all(s["passages"] == 3 and 0.0 <= s["accuracy"] <= 1.0 for s in result["summaries"])
    assert {"paired_diff_vs_passage", "paired_diff_vs_matched_passage"} <= set(result["summaries"][2])
    assert "as many steps as the self-edits" in result["headline"]
    assert "| base | 3 |" in (tmp_path / "out" / "results.md").read_text()


def test_eval_knowledge_compares_several_writers_on_the_same_passages(tmp_path, tokenizer, tiny_model):
    model_dir = _model_and_passages(tmp_path, tiny_model, tokenizer, 2)
    rows = [{"round": r, "context": c, "reward": 0.1 * r} for r in (0, 1) for c in (0, 1)]  # as a SEAL run logs
    (model_dir / "self_edits.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    code = main([
        "eval-knowledge", "--model", str(model_dir), "--passages", str(tmp_path / "p.json"),
        "--conditions", "passage,self_edits", "--self_edit_model", f"model,{model_dir}", "--max_new_tokens", "4",
        "--inner_r", "4", "--inner_lora_alpha", "8", "--inner_num_epochs", "1", "--output_dir", str(tmp_path / "out"),
        "--self_edit_rows_per_call", "2",
    ])
    assert code == 0
    result = json.loads((tmp_path / "out" / "results.json").read_text())
    names = [s["condition"] for s in result["summaries"]]
    assert names == ["passage", "self_edits (model)", f"self_edits ({model_dir})"]
    assert result["self_edits"]["self_edits (model)"] == result["self_edits"][f"self_edits ({model_dir})"], (
        "the same weights with the same seed write the same self-edits")
    assert "paired_diff_vs_self_edits (model)" in result["summaries"][2], "each writer is paired with the first"
    assert "paired diff vs self_edits (model) (95 % CI)" in (tmp_path / "out" / "results.md").read_text()
    assert result["headline"].startswith(f"On 2 held-out passages, the self-edits written by {model_dir} gave")
    assert "points vs the self-edits written by model (" in result["headline"]
    assert "points vs training on the passage alone" in result["headline"]
    assert [r["round"] for r in result["round_rewards"]] == [1, 2], "the last writer's rounds, from its run folder"
    with pytest.raises(ValueError, match="twice"):
        main(["eval-knowledge", "--model", str(model_dir), "--passages", str(tmp_path / "p.json"),
              "--self_edit_model", "model,model", "--output_dir", str(tmp_path / "out2")])


def test_eval_knowledge_resumes_from_its_output_folder(tmp_path, tokenizer, tiny_model, capsys):
    model_dir = _model_and_passages(tmp_path, tiny_model, tokenizer, 3)
    argv = ["eval-knowledge", "--model", str(model_dir), "--passages", str(tmp_path / "p.json"),
            "--conditions", "passage,self_edits", "--max_new_tokens", "4", "--inner_r", "4", "--inner_lora_alpha", "8",
            "--inner_num_epochs", "1", "--passages_per_chunk", "2", "--output_dir", str(tmp_path / "out")]
    assert main(argv) == 0
    first = json.loads((tmp_path / "out" / "results.json").read_text())
    assert (tmp_path / "out" / "scores.jsonl").read_text().count("\n") == 1 + 2 * 3, "header + 2 conditions x 3"
    assert "Interim: the first 2 of 3 passages" in capsys.readouterr().out, "the table after the first chunk"
    assert not (tmp_path / "out" / "results_interim.md").exists(), "results.md replaces the interim table"
    assert not (tmp_path / "out" / "self_edits.partial.json").exists(), "the writing's partial record is dropped"
    assert (tmp_path / "out" / "results.png").read_bytes().startswith(b"\x89PNG")
    assert first["headline"].startswith("On 3 held-out passages, the self-edits gave")
    assert first["headline"] in (tmp_path / "out" / "results.md").read_text()
    assert main(argv) == 0  # everything is read back: nothing is sampled or trained
    printed = capsys.readouterr()
    assert "resuming from" in printed.out and "writing self-edits" not in printed.err
    again = json.loads((tmp_path / "out" / "results.json").read_text())
    assert again["summaries"] == first["summaries"] and again["self_edits"] == first["self_edits"]
    with pytest.raises(ValueError, match="differ in: args"):
        main([*argv, "--k", "2"])
    with pytest.raises(ValueError, match="differ in: args"):  # a field added later counts once it is set
        main([*argv, "--self_edit_rows_per_call", "4"])
    header = json.loads((tmp_path / "out" / "scores.jsonl").read_text().splitlines()[0])
    assert "self_edit_rows_per_call" not in header["fingerprint"]["args"], "at its default, as logs before it"
    assert "keep_specific_loglik" not in header["fingerprint"]["args"]
    with pytest.raises(ValueError, match=r"p\.json: passage 'stone'.*no other question"):  # before any training
        main([*argv, "--keep_specific_loglik", "true", "--resume", "false"])
    assert main([*argv, "--k", "2", "--resume", "false"]) == 0


def test_eval_knowledge_fingerprint_records_what_fastest_chose(monkeypatch):
    """`inner_dtype: fastest` is bfloat16 on one host and float32 on another: a log begun on one is refused on the
    other instead of finishing its table in another precision, and the dtype it chose, passed by name, finishes it."""
    from trl_seal.inner import config
    from trl_seal.inner.config import InnerArguments
    from trl_seal.scripts.eval_knowledge import EvalKnowledgeArguments, fingerprint

    inner = InnerArguments(inner_dtype="fastest").to_config()
    monkeypatch.setattr(config, "native_bfloat16", lambda device: True)
    with_bf16 = fingerprint(EvalKnowledgeArguments(), inner, [])
    monkeypatch.setattr(config, "native_bfloat16", lambda device: False)
    without = fingerprint(EvalKnowledgeArguments(), inner, [])
    assert (with_bf16["inner_config"]["dtype"], without["inner_config"]["dtype"]) == ("bfloat16", "float32")
    explicit = fingerprint(EvalKnowledgeArguments(), InnerArguments(inner_dtype="float32").to_config(), [])
    assert explicit["inner_config"] == without["inner_config"], "`--inner_dtype float32` finishes that log"


def test_split_passages_writes_disjoint_seeded_samples(tmp_path):
    rows = [{"title": f"t{i}", "context": f"c{i}", "questions": [{"question": "q", "answer": "a"}] * 4}
            for i in range(40)]
    (tmp_path / "p.json").write_text(json.dumps(rows))
    argv = ["split-passages", "--passages", str(tmp_path / "p.json"), "--num_train", "6", "--train_range", "0:20",
            "--num_eval", "5", "--eval_range", "20:", "--eval_skip", "3", "--output_dir", str(tmp_path / "out")]
    assert main(argv) == 0
    split = json.loads((tmp_path / "out" / "split.json").read_text())
    assert all(i < 20 for i in split["train_indices"]) and all(i >= 20 for i in split["eval_indices"])
    train = json.loads((tmp_path / "out" / "train.json").read_text())
    assert [r["context"] for r in train] == [f"c{i}" for i in split["train_indices"]]
    assert len(json.loads((tmp_path / "out" / "eval.json").read_text())) == 5
    with pytest.raises(ValueError, match="overlap"):
        main([*argv[:-2], "--eval_range", "10:", "--output_dir", str(tmp_path / "o2")])
    with pytest.raises(ValueError, match="start:stop"):
        main([*argv[:-2], "--eval_range", "20", "--output_dir", str(tmp_path / "o3")])


def test_eval_knowledge_refuses_more_passages_than_the_file_holds():
    with pytest.raises(ValueError, match=r"embedded passage file .* holds 48 passages; --offset 6 leaves 42, but "
                                         r"--num_passages 50"):
        main(["eval-knowledge", "--num_passages", "50"])  # fails before any model loads


def test_eval_knowledge_defaults_evaluate_passages_the_main_job_does_not_train_on():
    from trl_seal.knowledge.data import load_passages
    from trl_seal.scripts.eval_knowledge import EvalKnowledgeArguments, select_passages
    from trl_seal.scripts.knowledge import KnowledgeArguments

    trained = load_passages(None)[: KnowledgeArguments().num_train_passages]  # what `trl-seal knowledge` trains on
    evaluated = select_passages(EvalKnowledgeArguments())
    assert evaluated and not {p.context for p in trained} & {p.context for p in evaluated}
    assert len(trained) + len(evaluated) == len(load_passages(None)), "every other embedded passage is evaluated"


def test_quiet_known_warnings_drops_only_the_known_ones(caplog):
    import logging
    import warnings

    from trl_seal.scripts.entry import quiet_known_warnings

    bitsandbytes = logging.getLogger("bitsandbytes.backends.cpu.ops")
    RENAMED = "`is_gradient_checkpointing` is deprecated and will be removed in v6."  # noqa: N806
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with quiet_known_warnings():
            warnings.warn(RENAMED, FutureWarning, stacklevel=1)
            for method in ("enable", "disable"):  # TRL around sampling, when the demo checkpoints activations
                warnings.warn(f"`gradient_checkpointing_{method}` is deprecated and will be removed in v6. Use "
                              f"`activation_checkpointing_{method}` instead.", FutureWarning, stacklevel=1)
            warnings.warn("something else is deprecated", FutureWarning, stacklevel=1)
            bitsandbytes.warning("Failed to load CPU gemm_4bit_forward from kernels-community: %s.", "x")
            bitsandbytes.warning("a real bitsandbytes problem")
        warnings.warn(RENAMED, FutureWarning, stacklevel=1)
        bitsandbytes.warning("Failed to load CPU gemm_4bit_forward from kernels-community: %s.", "y")
    assert [str(w.message)[:20] for w in caught] == ["something else is de", "`is_gradient_checkpo"]
    logged = [record.getMessage() for record in caplog.records]
    assert logged == ["a real bitsandbytes problem", "Failed to load CPU gemm_4bit_forward from kernels-community: y."]


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="reads the launcher's environment from /proc")
@pytest.mark.parametrize("user_value", [None, "1"])
def test_cpu_threads_follow_the_user_not_accelerates_default(user_value):
    """`accelerate launch` sets OMP_NUM_THREADS=1 in its processes; only a value the user set is kept."""
    child = ("from trl_seal.scripts.entry import omp_threads_set_by_user; print(omp_threads_set_by_user())")
    launcher = ("import os, subprocess, sys; "
                "env = dict(os.environ, OMP_NUM_THREADS='1', ACCELERATE_DYNAMO_BACKEND='NO'); "
                f"sys.exit(subprocess.run([sys.executable, '-c', {child!r}], env=env).returncode)")
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    if user_value is not None:
        env["OMP_NUM_THREADS"] = user_value
    done = subprocess.run([sys.executable, "-c", launcher], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(user_value is not None)


def test_report_outputs_lists_what_the_run_wrote(tmp_path, capsys):
    from trl_seal.scripts.common import report_outputs

    for name in ("model.safetensors", "self_edits.jsonl", "results.md"):
        (tmp_path / name).write_text("x")
    (tmp_path / "seal_rounds.jsonl").write_text(json.dumps({
        "round": 0, "num_self_edits": 18, "kept_self_edits": 4, "time_generation": 61.0, "time_inner_loop": 300.2,
        "time_update": 20.0}) + "\n")
    report_outputs(str(tmp_path), 400.0)
    out = capsys.readouterr().out
    assert "round 1: 18 self-edits, 4 kept; sampling 61 s, inner loops 300 s, update 20 s" in out
    assert f"Done in 400 s. Outputs in {tmp_path}" in out
    for name in ("model.safetensors", "self_edits.jsonl", "seal_rounds.jsonl", "results.md"):
        assert f"  {name} " in out
    assert "results.json" not in out, "only files that exist are listed"


def test_use_every_core_shares_the_cores_among_local_processes(monkeypatch):
    import torch

    from trl_seal.scripts.entry import use_every_core

    chosen = []
    monkeypatch.setattr(torch, "set_num_threads", chosen.append)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert "4 torch threads per process (8 cores, 2 local process(es)" in use_every_core() and chosen == [4]
    monkeypatch.setenv("OMP_NUM_THREADS", "3")  # the user's (no `accelerate launch` marker): left alone
    monkeypatch.delenv("ACCELERATE_DYNAMO_BACKEND", raising=False)
    assert "OMP_NUM_THREADS=3" in use_every_core() and chosen == [4]


@pytest.mark.parametrize("native", [True, False])
def test_cpu_line_names_the_inner_loops_precision(monkeypatch, native):
    """`fastest` says what it resolved to on this CPU; a dtype the user set is named as set, not `fastest`'s."""
    import trl_seal.inner.config as inner_config
    from trl_seal.scripts.entry import bfloat16_note

    monkeypatch.setattr(inner_config, "native_bfloat16", lambda device: native)
    resolved = "bfloat16" if native else "float32"
    assert bfloat16_note() == bfloat16_note("fastest")
    assert bfloat16_note().endswith(f"(inner_dtype fastest = {resolved})")
    assert bfloat16_note("float32").endswith("(inner_dtype float32, as set)")
    assert bfloat16_note("float32").startswith("native bfloat16" if native else "no native bfloat16")


def test_run_leaves_its_process_group_even_when_the_script_fails(tmp_path, monkeypatch):
    """A process must not reach interpreter exit with its gloo group alive (it can abort there, and the launcher then
    kills the other processes): `run` destroys the group whether the script returned or raised."""
    import torch.distributed as dist

    from trl_seal.scripts import entry

    def joins_then_fails(*parsed):
        dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
        raise RuntimeError("the script failed")

    monkeypatch.setattr("trl_seal.scripts.knowledge.main", joins_then_fails)
    with pytest.raises(RuntimeError, match="the script failed"):
        entry.run("knowledge", ["--output_dir", str(tmp_path / "out")])
    assert not dist.is_initialized()
