"""The `trl-seal` console script: the only place where names from the command line become objects.

Training commands work like TRL's `trl sft`: the script's `TrlParser` reads `--config recipe.yaml` (flat keys =
dataclass fields, an `env:` block, command-line overrides), and everything that is not a field (`--num_processes 8`,
`--accelerate_config zero3`, the same keys in the YAML) goes to `accelerate launch`, which starts the packaged script
(`trl_seal/scripts/<command>.py`) on every process. Evaluation commands run in this process.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from pathlib import Path

from .version import __version__  # not the package root's names: --help must not import torch

TRAINING = {
    "knowledge": "SEAL on knowledge incorporation (passages -> self-edits -> closed-book QA reward)",
    "arc": "SEAL on few-shot ARC (tasks -> test-time-training configurations -> solved or not)",
}
EVALUATION = {
    "eval-knowledge": ("eval_knowledge", "the paper's knowledge-incorporation conditions with 95%% bootstrap CIs"),
    "eval-arc": ("eval_arc", "the paper's few-shot ARC conditions with 95%% Wilson CIs"),
    "split-passages": ("split_passages", "disjoint, seeded training and evaluation samples of a passage file"),
    "rescore-self-edits": ("rescore_self_edits", "kept vs discarded self-edits of a knowledge run, on fresh seeds"),
}
DESCRIPTION = (
    "SEAL (Self-Adapting LLMs, arXiv 2506.10943) on the Hugging Face stack: the policy writes its own fine-tuning "
    "data (self-edits), a temporary LoRA adapter applies each one, and ReST-EM reinforces those that helped."
)
EPILOG = """examples:
  trl-seal knowledge                                  CPU demo: embedded SmolLM2-135M, invented passages, offline
  trl-seal knowledge --config recipes/knowledge/paper_qwen2.5_7b.yaml --accelerate_config multi_gpu --num_processes 8
  trl-seal arc --config recipes/arc/paper_llama_1b.yaml --accelerate_config recipes/accelerate/single_gpu.yaml
  trl-seal eval-knowledge --self_edit_model outputs/seal_knowledge   held-out embedded passages, SEAL's self-edits
  trl-seal split-passages --passages squad.json --num_train 40 --num_eval 100 --output_dir outputs/squad_split
  trl-seal eval-arc --task_ids paper --conditions in_context,oracle,self_edits --k 5
  trl-seal <command> --help                           every field of that command (each is also a YAML key)

--accelerate_config takes a path or one of TRL's named configs (single_gpu, multi_gpu, zero1, zero2, zero3, fsdp1,
fsdp2); recipes/README.md lists our recipes and the hardware each expects.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="trl-seal", description=DESCRIPTION, epilog=EPILOG, allow_abbrev=False,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"trl-seal {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="command")
    for name, text in TRAINING.items():
        commands.add_parser(name, help=f"{text}; launched through accelerate", add_help=False)
    for name, (_, text) in EVALUATION.items():
        commands.add_parser(name, help=text, add_help=False)
    return parser


def launch_training(name: str, argv: list[str], launch=None) -> int:
    """Split `argv` into script arguments and `accelerate launch` arguments, then launch the packaged script."""
    from accelerate.commands.launch import launch_command, launch_command_parser
    from trl.cli.accelerate_config import resolve_accelerate_config_argument

    from .scripts.common import split_arguments

    module = importlib.import_module(f"trl_seal.scripts.{name}")
    parser = module.make_parser(prog=f"trl-seal {name}")
    parser.epilog = (parser.epilog or "") + LAUNCH_HELP
    # Parses (and checks) the script's own arguments, exits on --help; what is left belongs to accelerate.
    _, config_remaining, cli_remaining = split_arguments(parser, argv)
    launch_args = resolve_accelerate_config_argument(config_remaining + cli_remaining)
    script_args = _without_subsequence(argv, cli_remaining)
    entry = Path(module.__file__).with_name("entry.py")  # sets the process up, runs the script, lists the outputs
    accelerate_args = launch_command_parser().parse_args([*launch_args, str(entry), name, *script_args])
    _fill_launch_defaults(accelerate_args)
    (launch or launch_command)(accelerate_args)
    return 0


def _fill_launch_defaults(accelerate_args) -> None:
    """With no accelerate config (given or saved by `accelerate config`), give the values `accelerate launch` would
    pick itself, so that it does not print its "defaults used" notice (and "num_processes 0" on a CPU)."""
    import torch
    from accelerate.commands.config import default_config_file

    if accelerate_args.config_file is not None or os.path.isfile(default_config_file):
        return
    defaults = {"num_machines": 1, "mixed_precision": "no", "dynamo_backend": "no"}
    if not torch.cuda.is_available():  # accelerate counts GPUs: 0, which runs one process
        defaults["num_processes"] = 1
    for key, value in defaults.items():
        if getattr(accelerate_args, key) is None:
            setattr(accelerate_args, key, value)


LAUNCH_HELP = (
    " Launch options (not fields, passed to `accelerate launch`): --accelerate_config NAME_OR_PATH, "
    "--num_processes N, --num_machines, --machine_rank, --main_process_ip, ...; a recipe may hold the same keys."
)


def _without_subsequence(items: list[str], subsequence: list[str]) -> list[str]:
    """`items` with the ordered `subsequence` removed (the accelerate arguments out of the script's)."""
    rest, pending = [], iter(subsequence)
    current = next(pending, None)
    for item in items:
        if current is not None and item == current:
            current = next(pending, None)
        else:
            rest.append(item)
    return rest


def run_evaluation(name: str, argv: list[str]) -> int:
    module = importlib.import_module(f"trl_seal.scripts.{EVALUATION[name][0]}")
    parsed = module.make_parser(prog=f"trl-seal {name}").parse_args_and_config(argv)
    return module.main(*parsed)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    known, _ = parser.parse_known_args(argv[:1] if argv and not argv[0].startswith("-") else argv)
    if known.command not in TRAINING and known.command not in EVALUATION:
        parser.print_help()
        return 0
    from .scripts.entry import quiet_known_warnings

    with quiet_known_warnings():  # the commands import torch, TRL and peft: their known-harmless notices are noise
        if known.command in TRAINING:
            return launch_training(known.command, argv[1:])
        return run_evaluation(known.command, argv[1:])


if __name__ == "__main__":
    sys.exit(main())
