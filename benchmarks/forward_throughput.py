"""Forward throughput of the embedded model on this machine: fp32 vs bf16, short vs long sequences.

Why it matters: the inner loop trains on many short documents (a self-edit line is ~25 tokens), and on a CPU short
sequences and fp32 both waste most of the machine. Prints tokens/s, GFLOP/s (2·N·T) and the bf16/fp32 ratio.

    python benchmarks/forward_throughput.py
"""

import argparse
import time

import torch
from transformers import AutoModelForCausalLM

from trl_seal.models import resolve_model

SHAPES = [(1, 23), (8, 23), (1, 200), (16, 64), (4, 256)]


def tokens_per_second(model, batch: int, length: int, repeats: int) -> float:
    ids = torch.randint(0, 1000, (batch, length))
    with torch.no_grad():
        model(input_ids=ids)  # warm-up
        start = time.perf_counter()
        for _ in range(repeats):
            model(input_ids=ids)
    return batch * length * repeats / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="HuggingFaceTB/SmolLM2-135M-Instruct")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    model = AutoModelForCausalLM.from_pretrained(resolve_model(args.model)).eval()
    params = sum(p.numel() for p in model.parameters())
    print(f"threads={torch.get_num_threads()} params={params / 1e6:.0f}M")
    print("batch x length | fp32 tok/s (GFLOP/s) | bf16 tok/s (GFLOP/s) | bf16/fp32")
    for batch, length in SHAPES:  # both dtypes interleaved per shape, so a busy neighbour hits both alike
        rates = {}
        for dtype in (torch.float32, torch.bfloat16):
            rates[dtype] = tokens_per_second(model.to(dtype), batch, length, args.repeats)
        fp32, bf16 = rates[torch.float32], rates[torch.bfloat16]
        print(f"{batch} x {length} | {fp32:.0f} ({2 * params * fp32 / 1e9:.0f}) | {bf16:.0f} "
              f"({2 * params * bf16 / 1e9:.0f}) | {bf16 / fp32:.2f}")


if __name__ == "__main__":
    main()
