"""Row length of the packed inner loop on this machine: one epoch of 16 knowledge self-edits trained together (K=16)
with each `pack_length`, alternating, in one process. On a CPU attention runs over the whole packed row with a dense
block mask, so long rows spend time on masked pairs; shorter rows leave some filler at row ends instead.

    OMP_NUM_THREADS=1 python benchmarks/pack_length.py --lengths 1024,160 --repeats 2
"""

import argparse
import time

import torch
from inner_loop import load_model, workload

from trl_seal import InnerJob, LoRAInnerAdapter


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--lengths", default="1024,160")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    settings = argparse.Namespace(model=None, random_init=None, device=args.device, dtype="bfloat16", lines=8,
                                  questions=5, seed=0)
    model, tokenizer = load_model(settings)
    jobs = [InnerJob(item["documents"], seed=i) for i, item in enumerate(workload(settings, 16))]
    for _ in range(args.repeats):
        for length in [int(x) for x in args.lengths.split(",")]:
            adapter = LoRAInnerAdapter(num_epochs=1, max_adapters=16, pack_length=length)
            adapter.sync(model, tokenizer)
            start = time.perf_counter()
            for _group in adapter.adapt_groups(jobs):
                pass
            stats = adapter.last_run
            elapsed = time.perf_counter() - start
            print(f"pack_length {length:5d}: {elapsed:6.1f} s, {stats['joint_steps']} joint steps, "
                  f"{100 * stats['tokens'] / stats['row_tokens']:.0f}% of row tokens real", flush=True)


if __name__ == "__main__":
    main()
