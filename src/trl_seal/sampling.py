"""Seeded self-edit sampling: each self-edit draws from its own random stream, so a run is layout independent.

TRL samples every completion of a process from one torch stream seeded per process. The self-edits a context gets
then depend on how many processes there are, where the context sits in the local batch and what was sampled before
it: a run on 2 GPUs cannot reproduce a run on 1, and a resumed round cannot regenerate what it lost. Here the
self-edit with index `i` in round `r` is sampled with the Gumbel-max trick from a generator seeded by
`(seed, r, i)`: the same self-edit on any number of processes, in any batch. The distribution is unchanged: the
usual warpers (temperature, top-k, top-p, min-p) shape the scores first, then argmax(scores + Gumbel noise) is an
exact sample of softmax(scores).
"""

from __future__ import annotations

import hashlib

import torch
from transformers import GenerationConfig, LogitsProcessor
from transformers.generation.logits_process import (
    MinPLogitsWarper,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

SAMPLING_FIELDS = ("temperature", "top_k", "top_p", "min_p")


def derive_seed(*parts) -> int:
    """A 63-bit seed from any printable parts (stable across processes, Python runs and platforms).

    Example:
    ```python
    >>> derive_seed(42, "sample", 0, 7) == derive_seed(42, "sample", 0, 7)
    True
    ```
    """
    digest = hashlib.sha256("/".join(str(part) for part in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


class SeededSampler(LogitsProcessor):
    """Samples row `b` from its own generator seeded by `seeds[b]`; use it with greedy decoding.

    It applies the sampling warpers of `sampling_config` itself (transformers only runs warpers when `do_sample=True`,
    and would then run them after custom processors), adds per-row Gumbel noise and leaves one finite score per row,
    which greedy decoding picks. Rows draw the same noise whatever batch they are in.

    Example:
    ```python
    >>> sampler = SeededSampler(seeds=[11, 12], sampling_config=GenerationConfig(temperature=0.7, top_p=0.95))
    >>> out = model.generate(**inputs, do_sample=False, logits_processor=LogitsProcessorList([sampler]))
    ```
    """

    def __init__(self, seeds: list[int], sampling_config: GenerationConfig):
        self.seeds = [int(seed) for seed in seeds]
        self.warpers = sampling_warpers(sampling_config)
        self.generators: list[torch.Generator] | None = None

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if len(self.seeds) != scores.shape[0]:
            raise ValueError(f"SeededSampler has {len(self.seeds)} seeds for a batch of {scores.shape[0]} rows.")
        if self.generators is None:  # built on first use, on the device of the scores
            self.generators = [torch.Generator(device=scores.device).manual_seed(s) for s in self.seeds]
        for warper in self.warpers:
            scores = warper(input_ids, scores)
        uniform = torch.stack([
            torch.rand(scores.shape[1], generator=g, device=scores.device, dtype=torch.float32)
            for g in self.generators
        ])
        gumbel = -torch.log(-torch.log(uniform.clamp(min=1e-20, max=1.0 - 1e-7)))
        choice = (scores.float() + gumbel).argmax(dim=-1, keepdim=True)
        picked = torch.full_like(scores, float("-inf"))
        return picked.scatter_(1, choice, 0.0)


def sampling_warpers(config: GenerationConfig) -> list[LogitsProcessor]:
    """The warpers `generate(do_sample=True)` would apply for `config`, in transformers' order."""
    unsupported = {
        name: getattr(config, name, None) for name in ("typical_p", "epsilon_cutoff", "eta_cutoff", "top_h")
        if getattr(config, name, None) not in (None, 0.0, 1.0)
    }
    if unsupported:
        raise ValueError(
            f"Seeded sampling supports temperature, top_k, top_p and min_p, but the generation config also sets "
            f"{unsupported}. Remove those from generation_kwargs or set seeded_sampling=False."
        )
    warpers: list[LogitsProcessor] = []
    if config.temperature is not None and config.temperature != 1.0:
        warpers.append(TemperatureLogitsWarper(config.temperature))
    if config.top_k:
        warpers.append(TopKLogitsWarper(top_k=config.top_k))
    if config.top_p is not None and config.top_p < 1.0:
        warpers.append(TopPLogitsWarper(top_p=config.top_p))
    if config.min_p is not None:
        warpers.append(MinPLogitsWarper(min_p=config.min_p))
    return warpers


def greedy_twin(config: GenerationConfig) -> GenerationConfig:
    """A copy of a sampling `config` that decodes greedily, its warpers cleared (`SeededSampler` applies them)."""
    twin = GenerationConfig(**config.to_dict())
    twin.do_sample = False
    for name in SAMPLING_FIELDS:
        setattr(twin, name, None)
    return twin
