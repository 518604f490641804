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
    return {"input_ids": input_ids.to(device), "labels": labels.to(device), "attention_mask": attention_mask.to(device)}


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


def check_inner_arguments(
    r, lora_alpha, learning_rate, num_epochs, batch_size, max_length, lr_scheduler_type, warmup_ratio, quantization,
    max_seconds_per_job=None, max_tokens_per_job=None,
) -> None:
    """The constructor checks shared by the LoRA inner adapters: each error names the argument and the fix."""
    for name, value in (("max_seconds_per_job", max_seconds_per_job), ("max_tokens_per_job", max_tokens_per_job)):
        if value is not None and not value > 0:
            raise ValueError(f"{name}={value!r}: use a positive number or None (no limit).")
    positive = dict(r=r, lora_alpha=lora_alpha, learning_rate=learning_rate, num_epochs=num_epochs,
                    batch_size=batch_size, max_length=max_length)
    for name, value in positive.items():
        if not value > 0:
            raise ValueError(f"{name}={value} must be > 0.")
    if lr_scheduler_type not in ("constant", "linear", "cosine"):
        raise ValueError(f"lr_scheduler_type={lr_scheduler_type!r}: use 'constant', 'linear' or 'cosine'.")
    if quantization not in (None, "4bit", "8bit"):
        raise ValueError(f"quantization={quantization!r}: use None, '4bit' or '8bit'.")
    if not 0.0 <= warmup_ratio < 1.0:
        raise ValueError(f"warmup_ratio={warmup_ratio} must be in [0, 1).")
