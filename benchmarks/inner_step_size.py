"""Speed and memory of one batched inner-loop training run against the tokens of its joint steps, with the chunked
loss (`trl_seal.inner.loss`) and with the model's whole logits, side by side in one process.

K jobs of one document each (--doc_tokens tokens, cut from the embedded passages) train together for --epochs joint
steps, so a step holds ~K x doc_tokens tokens. For each K and loss path, interleaved over --trials, it prints the
median microseconds per trained token (forward, backward, clipping, AdamW: `adapt_groups` end to end), the peak
resident-set growth over the run (VmHWM after resetting it, Linux), that growth per token of a step after the slots,
and the estimate of `LoRAInnerAdapter.memory_estimate` for the same plan. The CPU sizing rule
(`trl_seal.inner.memory.CPU_STEP_TOKENS`) is the step size past which the time per token stops falling.

    OMP_NUM_THREADS=1 python benchmarks/inner_step_size.py --ks 1,2,4,8,16 --threads 1
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
from rss import reset_peak, status_bytes  # benchmarks/rss.py (this script's folder is on sys.path)
from transformers import AutoModelForCausalLM, AutoTokenizer

from trl_seal import InnerJob, LoRAInnerAdapter, TrainingExample
from trl_seal.knowledge.data import load_passages
from trl_seal.models import resolve_model


def documents(tokenizer, count: int, length: int) -> list[str]:
    """`count` texts of exactly `length` tokens, cut from the embedded passages."""
    ids = [i for passage in load_passages() for i in tokenizer(passage.context)["input_ids"]]
    while len(ids) < count * length:
        ids = ids + ids
    return [tokenizer.decode(ids[i * length : (i + 1) * length]) for i in range(count)]


def run(adapter, texts: list[str], epochs: int, whole_logits: bool, seed: int) -> dict:
    adapter._head = None if whole_logits else False  # None: the model's whole logits; False: check, then chunk
    jobs = [InnerJob([TrainingExample(text)], num_epochs=epochs, seed=seed + i) for i, text in enumerate(texts)]
    reset_peak()
    before = status_bytes("VmRSS")
    start = time.perf_counter()
    for _ in adapter.adapt_groups(jobs):
        pass
    seconds = time.perf_counter() - start
    stats = adapter.last_run
    step_tokens = stats["row_tokens"] / stats["joint_steps"]  # filler included, as the estimate counts it
    estimate = adapter.memory_estimate()  # of this path: whole logits or chunked
    return {"us_per_token": 1e6 * seconds / stats["tokens"], "peak_growth": status_bytes("VmHWM") - before,
            "step_tokens": step_tokens, "slots": stats["slots"],
            "expected": estimate.total(stats["slots"], round(step_tokens)) - estimate.resident}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ks", default="1,2,4,8,16")
    parser.add_argument("--doc_tokens", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--trials", type=int, default=2)
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--r", type=int, default=32)
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--paths", default="chunked,whole", help="loss paths: chunked, whole")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    path = resolve_model()
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, args.dtype)).eval()
    ks = [int(k) for k in args.ks.split(",")]
    paths = args.paths.split(",")
    texts = documents(tokenizer, max(ks), args.doc_tokens)
    adapter = LoRAInnerAdapter(r=args.r, lora_alpha=2 * args.r, max_tokens_per_step=10**6)
    adapter.sync(model, tokenizer)
    estimate = adapter.memory_estimate()
    run(adapter, texts[:2], 1, False, seed=99)  # warm-up
    results = {(k, p): [] for k in ks for p in paths}
    for trial in range(args.trials):
        for k in ks:
            for loss_path in (paths if trial % 2 == 0 else paths[::-1]):  # alternate which path runs first
                adapter.config.max_adapters = k
                results[k, loss_path].append(run(adapter, texts[:k], args.epochs, loss_path == "whole", 10 * trial))
    mib = 2**20
    print(f"{args.dtype}, r={args.r}, {args.threads} thread(s), {args.doc_tokens}-token documents, {args.epochs} "
          f"joint steps per run, median of {args.trials}; slot {estimate.per_slot / mib:.0f} MiB")
    print("| K | loss | tokens/step | us/token | peak growth | growth per step token after slots | estimate |")
    print("| ---: | --- | ---: | ---: | ---: | ---: | ---: |")
    for (k, loss_path), runs in results.items():
        step = runs[0]["step_tokens"]
        us = statistics.median(r["us_per_token"] for r in runs)
        growth = max(r["peak_growth"] for r in runs)
        per_token = (growth - k * estimate.per_slot) / step
        expected = runs[0]["expected"]
        print(f"| {k} | {loss_path} | {step:.0f} | {us:.0f} | {growth / mib:.0f} MiB | {per_token / mib:.2f} MiB | "
              f"{expected / mib:.0f} MiB |")
    if set(paths) == {"chunked", "whole"}:
        for k in ks:
            ratio = (statistics.median(r["us_per_token"] for r in results[k, "chunked"])
                     / statistics.median(r["us_per_token"] for r in results[k, "whole"]))
            print(f"K={k}: chunked / whole time per token = {ratio:.3f}")


if __name__ == "__main__":
    main()
