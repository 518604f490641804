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
from collections.abc import Callable

import torch
from transformers import GenerationConfig, LogitsProcessor, LogitsProcessorList
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


def sample_seeded(
    model, prompt_ids: list[list[int]], seeds: list[int], generation_config: GenerationConfig, pad_token_id: int,
    eos_token_ids, chunk_size: int | None = None, pad_to_multiple_of: int | None = None, device=None,
    progress: Callable[[int], object] | None = None,
) -> list[list[int]]:
    """Sample one completion per prompt, row `i` from its own stream seeded by `seeds[i]` (`SeededSampler`),
    `chunk_size` rows per `generate` call (None: all at once) in order of prompt length, so that each call pads
    little. Each completion is cut after its first EOS token. Rows draw the same noise in any chunk, so the chunking
    changes the completions only through rounding. Inputs go to `device` (default: that of the model's first
    parameter; pass the accelerator's where parameters may be offloaded). `progress(n)` is called after each call
    with its number of rows (e.g. a tqdm bar's `update`).

    Example:
    ```python
    >>> config = GenerationConfig(max_new_tokens=16, temperature=1.0, top_p=0.95)
    >>> ids = [tokenizer("a b c")["input_ids"], tokenizer("d")["input_ids"]]
    >>> sample_seeded(model, ids, [11, 12], config, tokenizer.pad_token_id, [tokenizer.eos_token_id], chunk_size=1)
    ```
    """
    from trl.trainer.utils import pad

    if len(seeds) != len(prompt_ids):
        raise ValueError(f"sample_seeded got {len(seeds)} seeds for {len(prompt_ids)} prompts; give one per prompt.")
    chunk = chunk_size or max(1, len(prompt_ids))
    order = sorted(range(len(prompt_ids)), key=lambda i: len(prompt_ids[i]))
    device = device if device is not None else next(model.parameters()).device
    eos, result = set(eos_token_ids), [[] for _ in prompt_ids]
    padding = {"padding_side": "left", "pad_to_multiple_of": pad_to_multiple_of}
    for start in range(0, len(order), chunk):
        rows = order[start : start + chunk]
        prompts = [torch.tensor(prompt_ids[i]) for i in rows]
        input_ids = pad(prompts, pad_token_id, **padding)
        mask = pad([torch.ones_like(p) for p in prompts], 0, **padding)
        sampler = SeededSampler([seeds[i] for i in rows], generation_config)
        output = model.generate(input_ids=input_ids.to(device), attention_mask=mask.to(device),
                                generation_config=greedy_twin(generation_config),
                                logits_processor=LogitsProcessorList([sampler]))
        for row, tokens in zip(rows, output[:, input_ids.shape[1]:].cpu().tolist(), strict=True):
            end = next((i for i, token in enumerate(tokens) if token in eos), len(tokens) - 1)
            result[row] = tokens[: end + 1]  # up to the first EOS, as TRL keeps it
        if progress is not None:
            progress(len(rows))
    return result
