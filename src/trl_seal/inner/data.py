"""Turning inner-loop training examples into token batches: prompt and padding tokens never enter the loss."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..types import TrainingExample

IGNORE_INDEX = -100


@dataclass
class TokenizedExample:
    input_ids: list[int]
    labels: list[int]  # IGNORE_INDEX on prompt tokens

    @property
    def num_trained_tokens(self) -> int:
        return sum(label != IGNORE_INDEX for label in self.labels)


def tokenize_examples(examples: Sequence[TrainingExample], tokenizer, max_length: int) -> list[TokenizedExample]:
    """Tokenize `prompt + completion (+ eos)`, label only the completion, truncate to `max_length` tokens.

    Examples that keep no trained token after truncation are dropped: they would only add padding."""
    out = []
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    for example in examples:
        prompt_ids = tokenizer(example.prompt, add_special_tokens=False)["input_ids"] if example.prompt else []
        completion_ids = tokenizer(example.completion, add_special_tokens=False)["input_ids"] + eos
        input_ids = (prompt_ids + completion_ids)[:max_length]
        labels = ([IGNORE_INDEX] * len(prompt_ids) + completion_ids)[:max_length]
        tokenized = TokenizedExample(input_ids, labels)
        if tokenized.num_trained_tokens > 0 and len(completion_ids) > len(eos):
            out.append(tokenized)
    return out


def collate(batch: Sequence[TokenizedExample], pad_token_id: int, device: torch.device) -> dict[str, torch.Tensor]:
    """Right-pad a batch; padded positions get attention 0 and label IGNORE_INDEX."""
    width = max(len(example.input_ids) for example in batch)
    input_ids = torch.full((len(batch), width), pad_token_id, dtype=torch.long)
    labels = torch.full((len(batch), width), IGNORE_INDEX, dtype=torch.long)
    attention_mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, example in enumerate(batch):
        n = len(example.input_ids)
        input_ids[row, :n] = torch.tensor(example.input_ids)
        labels[row, :n] = torch.tensor(example.labels)
        attention_mask[row, :n] = 1
    return {"input_ids": input_ids.to(device), "labels": labels.to(device),
            "attention_mask": attention_mask.to(device)}


def batches_for_epoch(
    examples: Sequence[TokenizedExample], batch_size: int, generator: torch.Generator
) -> list[list[TokenizedExample]]:
    """A seeded shuffle of the examples, cut into batches (the last one may be smaller)."""
    order = torch.randperm(len(examples), generator=generator).tolist()
    return [[examples[i] for i in order[start : start + batch_size]] for start in range(0, len(order), batch_size)]


def lr_at(step: int, total_steps: int, base_lr: float, schedule: str, warmup_steps: int) -> float:
    """Learning rate for optimizer step `step` (0-based) of `total_steps` under a constant/linear/cosine schedule."""
    if step < warmup_steps:
        return base_lr * (step + 1) / (warmup_steps + 1)
    if schedule == "constant":
        return base_lr
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    if schedule == "linear":
        return base_lr * (1.0 - progress)
    if schedule == "cosine":
        return base_lr * 0.5 * (1.0 + torch.cos(torch.tensor(torch.pi * progress)).item())
    raise ValueError(f"Unknown inner learning-rate schedule {schedule!r}: use 'constant', 'linear' or 'cosine'.")

