"""Packing the examples of many adapters into few rows: no padding in the loss, almost none in the compute.

Each sequence keeps its own positions (0, 1, ...), which transformers turns into a block-diagonal causal mask, so a
packed sequence attends only to itself and sees exactly what it would see alone. Targets are shifted inside each
sequence, so no token learns to predict the start of its neighbour.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .data import IGNORE_INDEX, TokenizedExample

Segment = tuple[int, int, int]  # (first flat token, end, slot): a run of tokens that use one adapter


@dataclass
class PackedBatch:
    """One joint step: `input_ids`, `position_ids` and `targets` are `(rows, row_length)`. The trained targets are
    listed as flat positions (`target_index`), token ids (`target_ids`) and owners (`target_owner`: 0..len(slots)-1,
    the position in `slots`), with each owner's count in `target_counts`: all built on the host, so computing the
    losses needs no boolean-mask indexing (a device-to-host synchronisation on a GPU)."""

    input_ids: torch.Tensor
    position_ids: torch.Tensor
    targets: torch.Tensor
    target_index: torch.Tensor
    target_ids: torch.Tensor
    target_owner: torch.Tensor
    target_counts: torch.Tensor
    slots: list[int]
    segments: list[Segment]  # (start, end, slot) runs of flat token positions (see SegmentLoRA)
    num_tokens: int  # real tokens (excluding row-end filler)


def pack(
    batches: Sequence[tuple[int, Sequence[TokenizedExample]]], row_length: int, pad_token_id: int, device
) -> PackedBatch:
    """Pack `(slot, examples)` pairs into rows of `row_length` tokens (rows grow to fit the longest sequence).

    Sequences are placed first-fit in decreasing length, which leaves little filler at row ends."""
    sequences = [(position, ex) for position, (_, examples) in enumerate(batches) for ex in examples]
    placement, width = first_fit_rows([len(ex.input_ids) for _, ex in sequences], row_length)
    # an adapter's sequences side by side in a row: one LoRA segment, not one per sequence
    rows = [sorted((sequences[i] for i in row), key=lambda item: item[0]) for row in placement]
    return _tensors(rows, width, [slot for slot, _ in batches], pad_token_id, device)


def first_fit_rows(sizes: Sequence[int], row_length: int) -> tuple[list[list[int]], int]:
    """First-fit-decreasing placement of sequences of `sizes` into rows: the indices in each row, and the width of
    the rows (`row_length`, or the longest sequence if longer; shrunk to the fullest row)."""
    row_length = max(row_length, max(sizes))
    rows: list[list[int]] = []
    free: list[int] = []
    for index in sorted(range(len(sizes)), key=lambda i: -sizes[i]):
        row = next((r for r, space in enumerate(free) if space >= sizes[index]), None)
        if row is None:
            rows.append([])
            free.append(row_length)
            row = len(rows) - 1
        rows[row].append(index)
        free[row] -= sizes[index]
    return rows, max(row_length - space for space in free)


def packed_tokens(sizes: Sequence[int], row_length: int) -> int:
    """Tokens (filler included) of the rows that `pack` makes from sequences of `sizes`."""
    rows, width = first_fit_rows(sizes, row_length)
    return len(rows) * width


def _tensors(rows, width: int, slots: list[int], pad_token_id: int, device) -> PackedBatch:
    input_ids = torch.full((len(rows), width), pad_token_id, dtype=torch.long)
    position_ids = torch.zeros((len(rows), width), dtype=torch.long)
    targets = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
    owner = torch.full((len(rows), width), -1, dtype=torch.long)
    for r, row in enumerate(rows):
        start = 0
        for position, example in row:
            n = len(example.input_ids)
            input_ids[r, start : start + n] = torch.tensor(example.input_ids)
            position_ids[r, start : start + n] = torch.arange(n)
            targets[r, start : start + n - 1] = torch.tensor(example.labels[1:])
            owner[r, start : start + n] = position
            start += n
        # Row-end filler continues counting so it forms one more (ignored) sequence of its own.
        position_ids[r, start:] = torch.arange(width - start)
    target_index = torch.nonzero(targets.flatten() != IGNORE_INDEX).flatten()
    target_owner = owner.flatten()[target_index]
    target_counts = torch.bincount(target_owner, minlength=len(slots)).float()
    segments = [(start, end, slots[owner_]) for start, end, owner_ in runs(owner.flatten().tolist()) if owner_ >= 0]
    tensors = (input_ids, position_ids, targets, target_index, targets.flatten()[target_index], target_owner,
               target_counts)
    return PackedBatch(*(_to_device(t, device) for t in tensors), slots, segments, int((owner >= 0).sum()))


def _to_device(tensor: torch.Tensor, device) -> torch.Tensor:
    """Host to device without blocking the host on a GPU (pinned memory, asynchronous copy)."""
    if torch.device(device).type == "cuda":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)


def runs(values: Sequence[int]) -> list[Segment]:
    """`(start, end, value)` for each run of equal consecutive values."""
    out: list[Segment] = []
    for index, value in enumerate(values):
        if out and out[-1][2] == value and out[-1][1] == index:
            out[-1] = (out[-1][0], index + 1, value)
        else:
            out.append((index, index + 1, value))
    return out


def per_slot_losses(logits: torch.Tensor, batch: PackedBatch) -> torch.Tensor:
    """Mean token cross-entropy of each slot's trained targets (the loss each adapter would get alone)."""
    trained = logits.reshape(-1, logits.shape[-1]).index_select(0, batch.target_index).float()
    token_losses = torch.nn.functional.cross_entropy(trained, batch.target_ids, reduction="none")
    sums = torch.zeros(len(batch.slots), device=logits.device).index_add(0, batch.target_owner, token_losses)
    return sums / batch.target_counts.clamp(min=1)
