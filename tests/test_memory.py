"""Resident memory must not grow with the number of inner loops (no leaked adapters, graphs or caches).

480 inner loops (train + evaluate) on the tiny model; the slope of RSS against loops is fitted after 160 loops of
warm-up. One leaked adapter of this model would be ~28 KiB per loop; the allocator's settling measures 0.6-2 KiB
(`SEAL_MEMORY_BATCHES=40 pytest tests/test_memory.py -s` runs 800 loops and prints the slope)."""

import os

import torch

from trl_seal import InnerJob, LoRAInnerAdapter, TrainingExample, adapted_groups
from trl_seal.toy import SecretWordReward

WORDS = "apple river stone cloud tiger the and of secret notes".split()
BATCHES, JOBS_PER_BATCH, WARMUP = int(os.environ.get("SEAL_MEMORY_BATCHES", "24")), 20, 8


def resident_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def jobs(batch: int) -> list[InnerJob]:
    generator = torch.Generator().manual_seed(batch)
    out = []
    for i in range(JOBS_PER_BATCH):
        words = [WORDS[j] for j in torch.randint(len(WORDS), (int(torch.randint(3, 15, (1,), generator=generator)),),
                                                 generator=generator)]
        out.append(InnerJob([TrainingExample(" ".join(words), prompt="secret :")], seed=batch * 100 + i))
    return out


def test_resident_memory_is_flat_over_480_inner_loops(tiny_model, tokenizer):
    adapter = LoRAInnerAdapter(r=4, lora_alpha=8, num_epochs=2, max_adapters=8)
    adapter.sync(tiny_model, tokenizer)
    samples = []
    for batch in range(BATCHES):
        for group in adapted_groups(adapter, jobs(batch)):  # train and evaluate, as a reward does
            for member in group.members:
                with group.routed([group.members.index(member)]) as model:
                    SecretWordReward.secret_logprob(model, tokenizer, "apple")
        if batch >= WARMUP:
            samples.append(((batch + 1) * JOBS_PER_BATCH, resident_bytes()))
    loops = torch.tensor([s[0] for s in samples], dtype=torch.float64)
    rss = torch.tensor([s[1] for s in samples], dtype=torch.float64)
    slope = (((loops - loops.mean()) * (rss - rss.mean())).sum() / ((loops - loops.mean()) ** 2).sum()).item()
    print(f"\nresident memory slope: {slope / 1024:.2f} KiB per inner loop over {BATCHES * JOBS_PER_BATCH} loops "
          f"(RSS {rss[0] / 2**20:.1f} -> {rss[-1] / 2**20:.1f} MiB after warm-up)")
    assert slope < 8 * 1024, f"resident memory grows by {slope / 1024:.1f} KiB per inner loop"
