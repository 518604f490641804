"""The inner loop's resident copy in bfloat16 against float32 on this CPU, side by side in one process.

A CPU without native bfloat16 arithmetic (no AMX, no AVX512-BF16) emulates bfloat16 matmuls, and they run slower than
float32; `InnerLoRAConfig(dtype="fastest")` picks bfloat16 only where the device computes it natively. This benchmark
measures what that choice is worth: the same self-edits (the workload of `inner_loop.py`, one adapter per self-edit,
the paper's inner settings unless changed) trained and scored by one `LoRAInnerAdapter` per dtype, built from the same
float32 policy, after an untimed warm-up of each, interleaved over trials. It prints the matmul peak per dtype, seconds
per self-edit (train and evaluate), the float32 speed-up, and how many rewards the two dtypes agree on.

    OMP_NUM_THREADS=2 python benchmarks/inner_dtype.py --self_edits 8 --trials 2 --layout appended
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from inner_loop import _TimedAdapter, matmul_peak, run_c, workload  # noqa: E402

from trl_seal import KnowledgeQAReward, LoRAInnerAdapter  # noqa: E402
from trl_seal.inner.config import DTYPES, native_bfloat16  # noqa: E402
from trl_seal.knowledge.grading import answer_contained  # noqa: E402
from trl_seal.knowledge.prompts import DOCUMENT_LAYOUTS  # noqa: E402
from trl_seal.models import resolve_model  # noqa: E402


def add_workload_arguments(parser, epochs: int) -> None:
    """The options of `inner_loop.workload` (the self-edits and their questions) and of the timed process."""
    parser.add_argument("--epochs", type=int, default=epochs)
    parser.add_argument("--lines", type=int, default=8, help="self-edit lines")
    parser.add_argument("--layout", default="lines", choices=list(DOCUMENT_LAYOUTS))
    parser.add_argument("--questions", type=int, default=5)
    parser.add_argument("--max_new_tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--seed", type=int, default=0)


def parse_dtypes(parser, args):
    """`args.dtypes` from "a,b" to a list, every name checked against `DTYPES`."""
    args.dtypes = [name.strip() for name in args.dtypes.split(",")]
    unknown = sorted(set(args.dtypes) - set(DTYPES))
    if unknown:
        parser.error(f"--dtypes: unknown {unknown}; choose from {', '.join(DTYPES)}")
    return args


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="model folder (default: the embedded SmolLM2-135M)")
    parser.add_argument("--dtypes", default="bfloat16,float32", help=f"resident-copy dtypes to compare ({DTYPES})")
    parser.add_argument("--self_edits", type=int, default=8)
    parser.add_argument("--trials", type=int, default=1)
    parser.add_argument("--learning_rate", type=float, default=1e-3)
    parser.add_argument("--r", type=int, default=32)
    parser.add_argument("--alpha", type=int, default=64)
    add_workload_arguments(parser, epochs=10)  # paper: 10
    return parse_dtypes(parser, parser.parse_args(argv))


def measure(args, model, tokenizer) -> dict[str, list[dict]]:
    """`{dtype: [run per trial]}`: every dtype's adapter on the same self-edits, after a one-epoch warm-up."""
    items = workload(args, args.self_edits)
    adapters, rewards = {}, {}
    for name in args.dtypes:
        inner = LoRAInnerAdapter(r=args.r, lora_alpha=args.alpha, learning_rate=args.learning_rate,
                                 num_epochs=args.epochs, dtype=name)
        adapters[name] = _TimedAdapter(inner)
        adapters[name].sync(model, tokenizer)
        rewards[name] = KnowledgeQAReward(grader=answer_contained, max_new_tokens=args.max_new_tokens,
                                          document_layout=args.layout, show_progress=False)
    for name in args.dtypes:  # warm-up: one epoch of the first self-edits, untimed
        adapters[name].adapter.config.num_epochs = 1
        run_c(adapters[name], rewards[name], items[:2])
        adapters[name].adapter.config.num_epochs = args.epochs
    runs = {name: [] for name in args.dtypes}
    for trial in range(args.trials):
        for name in args.dtypes if trial % 2 == 0 else args.dtypes[::-1]:
            run = run_c(adapters[name], rewards[name], items)
            runs[name].append(run)
            print(f"trial {trial} {name}: {run['total'] / len(items):.2f} s/self-edit", flush=True)
    return runs


def report(args, runs: dict[str, list[dict]]) -> list[str]:
    lines = [f"{args.self_edits} self-edits, {args.epochs} epochs, {args.layout} layout, {args.threads} threads, "
             f"native bfloat16 on this CPU: {native_bfloat16('cpu')}",
             f"{'dtype':>9} {'matmul TFLOP/s':>15} {'s/self-edit':>12} {'train':>7} {'eval':>7}"]
    per_edit = {}
    for name, trials in runs.items():
        per_edit[name] = statistics.median(run["total"] for run in trials) / args.self_edits
        train = statistics.median(run["times"]["train"] for run in trials) / args.self_edits
        peak = matmul_peak("cpu", getattr(torch, name)) / 1e12
        lines.append(f"{name:>9} {peak:>15.3f} {per_edit[name]:>12.2f} {train:>7.2f} "
                     f"{per_edit[name] - train:>7.2f}")
    if "float32" in per_edit:
        for name in per_edit:
            if name != "float32":
                lines.append(f"float32 vs {name}: {per_edit[name] / per_edit['float32']:.2f}x faster")
    first, *others = args.dtypes
    for name in others:
        same = sum(a == b for a, b in zip(runs[first][0]["rewards"], runs[name][0]["rewards"]))
        lines.append(f"rewards {first} vs {name}: {same}/{args.self_edits} identical")
    return lines


def main(argv=None):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    path = args.model or resolve_model()
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    lines = report(args, measure(args, model, tokenizer))
    print("\n".join(lines))
    return lines


if __name__ == "__main__":
    main()
