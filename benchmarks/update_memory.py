"""What one policy-update step costs in memory: the fp32 embedded model, AdamW, and micro-batches of one self-edit row
(prompt + completion tokens), with and without gradient checkpointing.

Prints the resident set and its peak after the backward passes, after the optimizer step (which allocates AdamW's two
moments on the first step) and after `zero_grad`. The difference between the `loaded` line and the first `backward`
line is the fixed part (gradients) plus one row's activations; the `step` line adds the moments. Run each
configuration in a fresh process so that one's freed memory does not hide the next one's peak.

    OMP_NUM_THREADS=2 python benchmarks/update_memory.py --prompt_tokens 300 --completion_tokens 128
    OMP_NUM_THREADS=2 python benchmarks/update_memory.py --gradient_checkpointing
"""

from __future__ import annotations

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from rss import reset_peak, status_bytes  # noqa: E402

GIB = 2**30


def report(label: str) -> None:
    rss, peak = status_bytes("VmRSS") / GIB, status_bytes("VmHWM") / GIB
    print(f"{label:<12} rss {rss:5.2f} GiB   peak {peak:5.2f} GiB", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="HuggingFaceTB/SmolLM2-135M-Instruct")
    parser.add_argument("--prompt_tokens", type=int, default=300)
    parser.add_argument("--completion_tokens", type=int, default=128)
    parser.add_argument("--micro_batches", type=int, default=2, help="rows accumulated before each optimizer step")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--gradient_checkpointing", action="store_true")
    parser.add_argument("--optimizer", choices=["fused", "foreach", "for-loop"], default="fused")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from transformers import AutoModelForCausalLM

    from trl_seal.models import resolve_model

    torch.manual_seed(args.seed)
    model = AutoModelForCausalLM.from_pretrained(resolve_model(args.model), dtype=torch.float32)
    print(f"{sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters, "
          f"{args.prompt_tokens}+{args.completion_tokens} tokens a row, gradient checkpointing "
          f"{'on' if args.gradient_checkpointing else 'off'}, {args.optimizer} AdamW")
    model.train()
    if args.gradient_checkpointing:
        model.gradient_checkpointing_enable()
        model.config.use_cache = False
    kind = {"fused": dict(fused=True), "foreach": dict(foreach=True), "for-loop": dict(foreach=False)}[args.optimizer]
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, **kind)
    reset_peak()
    report("loaded")
    length, completion = args.prompt_tokens + args.completion_tokens, args.completion_tokens
    for step in range(args.steps):
        for _ in range(args.micro_batches):
            ids = torch.randint(0, model.config.vocab_size, (1, length))
            logits = model(input_ids=ids, logits_to_keep=completion + 1).logits[:, :-1]
            logprobs = torch.log_softmax(logits.float(), -1).gather(-1, ids[:, -completion:, None]).squeeze(-1)
            (-logprobs.mean() / args.micro_batches).backward()
            del logits, logprobs
        report(f"{step}: backward")
        optimizer.step()
        report(f"{step}: step")
        optimizer.zero_grad()
        report(f"{step}: zero_grad")


if __name__ == "__main__":
    main()
