"""What the training scripts share: argument parsing and --help, recipe checks, policy loading, rounds, outputs."""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import os
import time

from transformers import TrainerCallback
from trl import ModelConfig, TrlParser

from trl_seal.models import DEFAULT_MODEL


# Keys a recipe may hold for `accelerate launch` (TRL's convention): the CLI forwards them, the script ignores them.
def accelerate_launch_options() -> set[str]:
    from accelerate.commands.launch import launch_command_parser

    return {action.dest for action in launch_command_parser()._actions} - {"help", "training_script",
                                                                          "training_script_args"}


def make_script_parser(script_dataclasses: tuple, defaults: dict, prog: str | None = None,
                       description: str | None = None):
    """A `TrlParser` over (the script's dataclasses, e.g. its arguments and `InnerArguments`, then `SEALConfig` and
    TRL's `ModelConfig`) with the script's defaults."""
    from trl_seal.seal_config import SEALConfig

    if not isinstance(script_dataclasses, (tuple, list)):  # one dataclass
        script_dataclasses = (script_dataclasses,)
    parser = TrlParser((*script_dataclasses, SEALConfig, ModelConfig), prog=prog,
                       description=description)
    parser.set_defaults(model_name_or_path=DEFAULT_MODEL, dtype="auto", **defaults)
    group_help(parser)
    return parser


# SEALConfig fields that SEAL derives from its own (num_rounds, contexts_per_round) or ignores: still accepted (and
# refused by SEALConfig's checks where setting them is an error), but left out of --help. seal_config.DERIVED_FIELDS
# is the authority when it exists.
SEAL_DERIVED_FIELDS = ("max_steps", "num_train_epochs", "generation_batch_size", "steps_per_generation")
INHERITED_GROUP = "inherited from GRPOConfig/TrainingArguments (TRL's and transformers' own fields)"


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Each flag once (`--num_rounds INT`, not also `--num-rounds NUM_ROUNDS`); parsing still accepts both."""

    def _format_action_invocation(self, action):
        if not action.option_strings:
            return super()._format_action_invocation(action)
        shown = ", ".join(option for option in action.option_strings if "-" not in option[2:])
        if action.nargs == 0:
            return shown
        return f"{shown} {self._format_args(action, self._get_default_metavar_for_optional(action))}"

    def _get_help_string(self, action):
        if isinstance(action, argparse._StoreFalseAction):  # `--no_X`: "(default: False)" would read as X's default
            return action.help
        return super()._get_help_string(action)

    def _get_default_metavar_for_optional(self, action):
        kind = getattr(action.type, "__name__", "")
        return {"int": "INT", "float": "FLOAT", "str": "STR", "string_to_bool": "BOOL"}.get(kind, action.dest.upper())


def group_help(parser) -> None:
    """Order a script's `--help` by what a SEAL user sets: one section per dataclass of the `TrlParser` (script
    fields, SEALConfig's own fields, TRL's ModelConfig, in the parser's order), then the fields inherited from
    GRPOConfig/TrainingArguments under their own heading. Derived fields are hidden, and each `--no_X` says what it
    does instead of repeating the help of `--X`.

    `HfArgumentParser` puts every field into the parser's one "options" group; argparse prints groups in the order
    of `parser._action_groups`, so the actions are moved into new groups after construction.
    """
    from trl_seal import seal_config

    derived = set(getattr(seal_config, "DERIVED_FIELDS", SEAL_DERIVED_FIELDS))
    sections = [_help_section(dtype, seal_config.SEALConfig) for dtype in parser.dataclass_types]
    groups = [(parser.add_argument_group(title), names) for title, names in sections]
    inherited = parser.add_argument_group(INHERITED_GROUP)
    for action in list(parser._optionals._group_actions):
        if action.dest == "help":
            continue
        parser._optionals._group_actions.remove(action)
        target = next((group for group, names in groups if action.dest in names), inherited)
        target._group_actions.append(action)
    for group, names in groups:  # stable: each `--no_X` stays right after its `--X`
        group._group_actions.sort(key=lambda action, names=names: names.index(action.dest))
    for action in parser._actions:
        if action.dest in derived:
            action.help = argparse.SUPPRESS
        elif isinstance(action, argparse._StoreFalseAction) and action.option_strings[0].startswith("--no_"):
            action.help = f"Turn off --{action.dest}."
    parser.formatter_class = _HelpFormatter
    parser.usage = "%(prog)s [-h] [--config RECIPE.yaml] [--FIELD VALUE ...] [launch options]"


def _help_section(dataclass_type, seal_config_class) -> tuple[str, list[str]]:
    """(heading, field names in the order shown); SEALConfig's section holds the fields its own class body declares
    (in declaration order), the rest of its fields go under the inherited heading."""
    if dataclass_type is seal_config_class:
        own = list(inspect.get_annotations(seal_config_class))
        return "SEALConfig (SEAL's own fields and the GRPOConfig defaults it changes)", own
    if dataclass_type is ModelConfig:
        return "ModelConfig (TRL: the policy, PEFT, quantization)", [f.name for f in dataclasses.fields(ModelConfig)]
    return dataclass_type.__name__, [f.name for f in dataclasses.fields(dataclass_type)]


def split_arguments(parser, argv: list[str]):
    """Parse the script's fields from the command line and `--config`; return them with the leftovers.

    Returns `(parsed dataclasses, recipe keys for accelerate as flags, unparsed command-line strings)`. A recipe key
    that is neither a field nor an `accelerate launch` option is an error naming the file.
    """
    *parsed, config_remaining, cli_remaining = parser.parse_args_and_config(
        argv, return_remaining_strings=True, separate_remaining_strings=True
    )
    launch_options = accelerate_launch_options()
    unknown = [key[2:] for key in config_remaining[::2] if key[2:] not in launch_options]
    if unknown:
        recipe = argv[argv.index("--config") + 1]
        raise ValueError(
            f"{recipe}: keys {unknown} are neither fields of {_names(parsed)} nor `accelerate launch` options. Fix "
            "their spelling (see --help: every field is a flag and a YAML key) or remove them."
        )
    return tuple(parsed), config_remaining, cli_remaining


def parse_script_arguments(parser, argv: list[str]):
    """The script's dataclasses from the command line and `--config` (accelerate keys in the recipe are skipped)."""
    parsed, _, cli_remaining = split_arguments(parser, argv)
    if cli_remaining:
        raise ValueError(f"Unknown arguments {cli_remaining}: they are not fields of {_names(parsed)}. See --help.")
    return parsed


def _names(parsed) -> str:
    return ", ".join(type(p).__name__ for p in parsed)


def load_policy(model_args: ModelConfig, trust_remote_code: bool = False, peft: bool = True):
    """Model, tokenizer and PEFT config from TRL's `ModelConfig` (the default model resolves to the embedded copy)."""
    import torch
    from accelerate import PartialState
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import get_peft_config, get_quantization_config

    from trl_seal.models import resolve_model

    path = resolve_model(model_args.model_name_or_path)
    quantization = get_quantization_config(model_args)
    kwargs = dict(revision=model_args.model_revision, trust_remote_code=trust_remote_code,
                  attn_implementation=model_args.attn_implementation)
    dtype = model_args.dtype if model_args.dtype in ("auto", None) else getattr(torch, model_args.dtype)
    if quantization is not None:
        kwargs.update(quantization_config=quantization, device_map={"": PartialState().device})
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, **kwargs)
    tokenizer = AutoTokenizer.from_pretrained(path, revision=model_args.model_revision,
                                              trust_remote_code=trust_remote_code)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer, get_peft_config(model_args) if peft else None


def base_policy(model_args: ModelConfig, trust_remote_code: bool = False):
    """The un-trained policy on this process's device, loaded on this process alone (also under ZeRO-3, whose
    partitioned init would wait for the other processes)."""
    from accelerate import PartialState

    from trl_seal.inner.policy_sync import zero3_init_disabled

    with zero3_init_disabled():
        model = load_policy(model_args, trust_remote_code, peft=False)[0]
    return model if getattr(model, "hf_device_map", None) else model.to(PartialState().device)


def release_training_state(trainer) -> None:
    """Drop what only training needs (the optimizer's moments, 2x the trainable weights in float32 for AdamW, and the
    gradients) once the policy is trained and saved, so the held-out table does not run beside them."""
    import gc

    from trl_seal.inner.memory import release_free_memory

    optimizer = getattr(trainer, "optimizer", None)
    if optimizer is not None and not trainer.is_deepspeed_enabled:  # DeepSpeed owns its partitioned state
        optimizer.state.clear()  # an AcceleratedOptimizer hands its wrapped optimizer's state dict through
    trainer.model.zero_grad(set_to_none=True)
    gc.collect()
    release_free_memory()


def release_policy_weights(trainer) -> None:
    """Free the trained policy's weights once its held-out self-edits are written (the model is saved): the held-out
    conditions only train and evaluate the inner adapter's own copy of the base model, so keeping the fp32 policy
    beside it would add its full size (0.54 GB for 135M parameters) to the table's peak. The module is moved to the
    meta device (shapes kept, storage gone); do not use `trainer.model` afterwards. DeepSpeed keeps its engine's state.
    """
    import gc

    from trl_seal.inner.memory import release_free_memory

    if trainer.is_deepspeed_enabled:
        return
    trainer.model.to("meta")
    gc.collect()
    release_free_memory()


def trained_policy(trainer, model_args: ModelConfig):
    """The policy after training, for evaluation on the main process.

    Under DeepSpeed ZeRO-3 the live policy is partitioned across processes, so it is reloaded from what
    `trainer.save_model` wrote (every process must call that first); otherwise it is the unwrapped live model.
    """
    if not (trainer.is_deepspeed_enabled and trainer.accelerator.state.deepspeed_plugin.zero_stage == 3):
        return trainer.accelerator.unwrap_model(trainer.model)
    from trl_seal.inner.policy_sync import zero3_init_disabled

    base = base_policy(model_args, trainer.args.trust_remote_code)
    with zero3_init_disabled():
        if not model_args.use_peft:
            from transformers import AutoModelForCausalLM

            trained = AutoModelForCausalLM.from_pretrained(trainer.args.output_dir, dtype=base.dtype)
            return trained.to(trainer.accelerator.device)
        from peft import PeftModel

        return PeftModel.from_pretrained(base, trainer.args.output_dir)


def resume_argument(args) -> str | bool | None:
    """`resume_from_checkpoint` from a recipe or flag: a path, or "true" for the last complete checkpoint."""
    value = args.resume_from_checkpoint
    if isinstance(value, str) and value.lower() in ("true", "yes", "1", "last"):
        return True
    return value or None


def read_rounds(output_dir: str) -> list[dict]:
    """The trainer's per-round records (`seal_rounds.jsonl`)."""
    path = os.path.join(output_dir, "seal_rounds.jsonl")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def is_main_process() -> bool:
    """Rank 0 of the launch (read from the environment: no distributed state is created)."""
    return int(os.environ.get("RANK", "0")) == 0


def prepare_for_device(args) -> None:
    """Settings that only make sense with an accelerator: without one, pinned dataloader memory is unused (and torch
    warns about it)."""
    import torch

    if not torch.accelerator.is_available() or args.use_cpu:
        args.dataloader_pin_memory = False


class RoundLog(TrainerCallback):
    """Says when each round starts and what it does (sampling the self-edits shows no bar) and how long it took."""

    def __init__(self):
        self.round_start = None

    def on_step_begin(self, args, state, control, **kwargs):
        per_round = args.optimizer_steps_per_round
        if state.global_step % per_round == 0 and state.is_world_process_zero:
            self.round_start = time.perf_counter()
            print(f"\nround {state.global_step // per_round + 1}/{args.num_rounds}: sampling {args.contexts_per_round}"
                  f" contexts x {args.num_generations} self-edits, one inner loop per self-edit ('inner loops' bar), "
                  "then the policy update", flush=True)

    def on_step_end(self, args, state, control, **kwargs):
        per_round = args.optimizer_steps_per_round
        if state.global_step % per_round == 0 and state.is_world_process_zero and self.round_start is not None:
            seconds = time.perf_counter() - self.round_start
            print(f"round {state.global_step // per_round}/{args.num_rounds} done in {seconds:.0f} s", flush=True)


ARGS_FILE = "knowledge_args.json"  # `trl-seal knowledge`'s script and model arguments, beside the trained policy

OUTPUTS = (  # (file or folder in output_dir, what it holds)
    ("model.safetensors", "the trained policy (config, tokenizer beside it)"),
    ("adapter_model.safetensors", "the trained policy's PEFT adapter"),
    ("seal_config.json", "the run's SEALConfig"),
    (ARGS_FILE, "the run's passages, reward and model arguments"),
    ("self_edits.jsonl", "every self-edit with its reward and whether it was kept"),
    ("seal_rounds.jsonl", "one record per round: rewards, kept self-edits, timings"),
    ("seal_ledger", "every scored self-edit, for --resume_from_checkpoint"),
    ("results.json", "the held-out table with its settings and self-edits"),
    ("results.md", "the held-out table"),
    ("results.png", "held-out accuracy per condition (95 % CIs) and reward per round"),
    ("held_out", "the held-out scores with every adapter's answers (benchmarks/regrade_answers.py --eval_dir)"),
)


def report_outputs(output_dir: str, seconds: float) -> None:
    """Print each round's cost (from `seal_rounds.jsonl`) and where each output of the run went."""
    for record in read_rounds(output_dir):
        print(f"round {record['round'] + 1}: {record['num_self_edits']} self-edits, {record['kept_self_edits']} kept; "
              f"sampling {record['time_generation']:.0f} s, inner loops {record['time_inner_loop']:.0f} s, "
              f"update {record['time_update']:.0f} s")
    print(f"\nDone in {seconds:.0f} s. Outputs in {os.path.abspath(output_dir)}:")
    for name, what in OUTPUTS:
        if os.path.exists(os.path.join(output_dir, name)):
            print(f"  {name:<26} {what}")
    checkpoints = sorted(n for n in os.listdir(output_dir) if n.startswith("checkpoint-")) if os.path.isdir(
        output_dir) else []
    if checkpoints:
        print(f"  {', '.join(checkpoints):<26} checkpoints (--resume_from_checkpoint true)")
