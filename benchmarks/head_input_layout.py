"""The output head on a sliced vs a contiguous input, side by side: what `contiguous_head_input` saves.

Hugging Face models slice the last positions before the head (`logits_to_keep`: every `generate` prefill, every
teacher-forced log-likelihood). On a CPU a linear layer on that non-contiguous `(batch, k, hidden)` slice runs a
batched matmul that, in bfloat16, copies the weight once per row (pytorch#151934). For each dtype and shape this
prints seconds and peak resident-set growth of the head applied to the slice and to a contiguous copy of it, and
the ratios. Default shapes: SmolLM2-135M's head (49152 x 576), a 32-question answer prefill and a 16-prompt
self-edit prefill.

    OMP_NUM_THREADS=1 python benchmarks/head_input_layout.py --threads 1
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from rss import reset_peak, status_bytes  # noqa: E402

MiB = 2**20


def measure(function, repeats: int) -> tuple[float, float]:
    """Best seconds of `repeats` calls, and the peak resident-set growth of one call, in MiB."""
    before = reset_peak()
    with torch.no_grad():
        function()
    growth = (status_bytes("VmHWM") - before) / MiB
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        with torch.no_grad():
            function()
        best = min(best, time.perf_counter() - start)
    return best, growth


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vocab", type=int, default=49152)
    parser.add_argument("--hidden", type=int, default=576)
    parser.add_argument("--shapes", default="32x60x1,32x60x10,16x300x1", help="batch x positions x kept, comma list")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"head {args.vocab} x {args.hidden}, {args.threads} thread(s), best of {args.repeats}")
    print("| dtype | batch x positions x kept | sliced s | contiguous s | time ratio | sliced MiB | contiguous MiB |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for dtype in (torch.bfloat16, torch.float32):
        weight = torch.randn(args.vocab, args.hidden, dtype=dtype)
        for spec in args.shapes.split(","):
            batch, positions, kept = (int(part) for part in spec.split("x"))
            hidden = torch.randn(batch, positions, args.hidden, dtype=dtype)
            sliced = hidden[:, -kept:, :]
            slow, slow_mib = measure(lambda x=sliced, w=weight: F.linear(x, w), args.repeats)
            fast, fast_mib = measure(lambda x=sliced, w=weight: F.linear(x.contiguous(), w), args.repeats)
            print(f"| {str(dtype).removeprefix('torch.')} | {spec} | {slow:.3f} | {fast:.3f} | {slow / fast:.1f}x | "
                  f"{slow_mib:.0f} | {fast_mib:.0f} |", flush=True)


if __name__ == "__main__":
    main()
