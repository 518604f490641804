"""The joint step's loss two ways, side by side in one process: the model's whole logits (`packing.per_slot_losses`,
what autograd keeps for every position) and the chunked loss (`loss.per_slot_losses_from_hidden`: float32 logits for
one chunk of trained tokens at a time, the gradient computed in the forward).

Only the part that differs is run: final hidden states of a packed step (--slots sequences of --tokens_per_slot
tokens, random, in --dtype) through an output head of --vocabulary x --hidden (SmolLM2-135M's shapes by default),
forward and backward into the hidden states. For each path, interleaved over --trials after a warm-up: seconds, and
the peak resident-set growth (VmHWM after handing freed heap memory back and resetting it; Linux). The whole step's
other parts (decoder layers, LoRA, optimizer) are the same on both paths.

    OMP_NUM_THREADS=1 python benchmarks/inner_loss_chunking.py --threads 1 --slots 4 --tokens_per_slot 128
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from rss import reset_peak, status_bytes  # benchmarks/rss.py (this script's folder is on sys.path)

from trl_seal.inner.data import TokenizedExample
from trl_seal.inner.loss import per_slot_losses_from_hidden
from trl_seal.inner.packing import pack, per_slot_losses


def run(path: str, hidden: torch.Tensor, head: torch.nn.Linear, batch) -> tuple[float, int]:
    before = reset_peak()
    start = time.perf_counter()
    leaf = hidden.detach().requires_grad_()
    if path == "whole":
        losses = per_slot_losses(head(leaf), batch)
    else:
        losses = per_slot_losses_from_hidden(leaf, head, batch)
    losses.sum().backward()
    seconds = time.perf_counter() - start
    del losses, leaf
    return seconds, status_bytes("VmHWM") - before


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--slots", type=int, default=4)
    parser.add_argument("--tokens_per_slot", type=int, default=128)
    parser.add_argument("--vocabulary", type=int, default=49152)
    parser.add_argument("--hidden", type=int, default=576)
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--row_length", type=int, default=160)
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    dtype = getattr(torch, args.dtype)
    head = torch.nn.Linear(args.hidden, args.vocabulary, bias=False).to(dtype).requires_grad_(False)
    examples = [TokenizedExample(ids, ids) for ids in
                (torch.randint(args.vocabulary, (args.tokens_per_slot,)).tolist() for _ in range(args.slots))]
    batch = pack([(slot, [example]) for slot, example in enumerate(examples)], args.row_length, 0, "cpu")
    hidden = torch.randn(*batch.input_ids.shape, args.hidden, dtype=dtype)
    paths = ["whole", "chunked"]
    for path in paths:  # warm-up
        run(path, hidden, head, batch)
    results = {path: [] for path in paths}
    for trial in range(args.trials):
        for path in (paths if trial % 2 == 0 else paths[::-1]):
            results[path].append(run(path, hidden, head, batch))
    tokens = batch.input_ids.numel()
    print(f"{args.slots} slots x {args.tokens_per_slot} tokens = {tokens} packed tokens "
          f"({len(batch.target_ids)} trained), vocabulary {args.vocabulary}, hidden {args.hidden}, {args.dtype}, "
          f"{args.threads} thread(s), median of {args.trials}")
    print("| loss | seconds (fwd+bwd) | peak growth | per packed token |")
    print("| --- | ---: | ---: | ---: |")
    for path, runs in results.items():
        seconds = statistics.median(r[0] for r in runs)
        growth = statistics.median(r[1] for r in runs)
        print(f"| {path} | {seconds:.3f} | {growth / 2**20:.0f} MiB | {growth / tokens / 2**20:.3f} MiB |")
    ratio = statistics.median(r[0] for r in results["chunked"]) / statistics.median(r[0] for r in results["whole"])
    print(f"chunked / whole time of the loss part = {ratio:.3f}")


if __name__ == "__main__":
    main()
