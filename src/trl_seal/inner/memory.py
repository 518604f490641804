"""What the batched inner loop needs in memory, so that K (adapters trained together) and the token budget of a joint
step come from the model, the jobs and the device, within an optional cap (`InnerLoRAConfig.max_memory`).

Sizing rule (`LoRAInnerAdapter._plan`, `plan_slots`): K and the token budget come from the work, never from the
memory that happens to be free.

- GPU: one slot per job up to 64 (a GPU has idle width to fill), a token budget that lets the K largest jobs' typical
  steps run together.
- CPU: the fewest slots whose joint step reaches `CPU_STEP_TOKENS` tokens (at most 16). A CPU has no idle width:
  batching only saves per-step overheads, which are small once a step's matmuls are this large, so more slots would
  only hold more memory (benchmarks/inner_loop.py measures seconds per self-edit against K).
- Both are then shrunk to fit `max_memory` when given; without it, to the safety cap of what the loop holds plus
  90 % of the memory available (a cap, not the sizing rule).

The estimate has three parts and a fixed workspace (the table in docs/benchmarks.md gives them for a few models):

- the resident copy of the policy: its parameters and buffers;
- per adapter slot: the float32 LoRA weights, their gradients and AdamW's two moments (16 bytes per LoRA weight);
  the slots exist only during an adapt call (`LoRAInnerAdapter.release`);
- per token of a joint step: what the forward keeps for the backward (each decoder layer's inputs of its norms and
  linear layers, the attention output and, where the attention kernel materialises it, the float32 attention matrix
  of a packed row; the LoRA products' rank-r intermediates) plus the float32 logits, their log-softmax and gradients
  when the model's logits are computed whole. With the chunked loss (`loss.py`) the logits are a fixed workspace of
  one chunk instead.

It is an upper bound of the measured peak on a CPU (tests/test_inner_memory.py holds a run under it); it leaves out
what the evaluation's `generate` calls hold afterwards (a KV cache, freed before the next joint step).
"""

from __future__ import annotations

import ctypes
import functools
import math
import os
import re
import sys
from dataclasses import dataclass

_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def parse_memory(value: int | float | str | None) -> int | None:
    """Bytes from an int or a string such as `"4GiB"`, `"512MB"` or `"3e9"`; None stays None.

    Example:
    ```python
    >>> parse_memory("4GiB"), parse_memory("1.5 GB"), parse_memory(1024)
    (4294967296, 1500000000, 1024)
    ```
    """
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        number, unit = float(value), ""
    else:
        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][0-9]+)?)\s*([A-Za-z]*)\s*", str(value))
        if match is None or match.group(2).lower() not in _UNITS:
            raise ValueError(f"max_memory={value!r}: use a number of bytes or a size such as '4GiB' or '512MB'.")
        number, unit = float(match.group(1)), match.group(2).lower()
    size = int(number * _UNITS[unit])
    if size <= 0:
        raise ValueError(f"max_memory={value!r} must be > 0.")
    return size


WORKSPACE = 64 * 2**20
# Tokens of a CPU joint step past which per-step overheads are small: the fewest slots that reach it train together
# (measured with benchmarks/inner_loop.py, see the memory section of docs/benchmarks.md).
CPU_STEP_TOKENS = 512


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes the batched inner loop holds: `resident + workspace + slots * per_slot + tokens * per_token`, plus with
    the chunked loss `min(tokens, chunk_rows) * per_chunk_row` for the logits of one chunk."""

    resident: int  # the resident copy of the policy
    per_slot: int  # one adapter slot: LoRA weights, gradients, AdamW moments (float32)
    per_token: int  # one token of a joint step: activations kept for the backward, logits and their gradients
    workspace: int = WORKSPACE  # the autograd engine, kernel workspaces and allocator slack of a step
    chunk_rows: int = 0  # trained tokens per chunk of the chunked loss (0: the logits are computed whole)
    per_chunk_row: int = 0  # one row of a chunk: its logits and their gradient

    def total(self, slots: int, tokens: int) -> int:
        chunk = min(tokens, self.chunk_rows) * self.per_chunk_row
        return self.resident + self.workspace + chunk + slots * self.per_slot + tokens * self.per_token


def estimate_memory(model, slot_width: int, r: int, row_length: int, logit_chunk: int | None = None) -> MemoryEstimate:
    """The estimate for `model` (the resident copy) with `slot_width` LoRA weights per slot of rank `r`, packed rows of
    `row_length` tokens; `logit_chunk`: rows per chunk of the chunked loss, or None when the logits are computed whole.

    Example:
    ```python
    >>> estimate = estimate_memory(model, slot_width=9_768_960, r=32, row_length=160, logit_chunk=170)
    >>> estimate.total(slots=4, tokens=512) / 2**30  # GiB: resident copy + workspace + 4 slots + one step
    ```
    """
    resident = sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers()))
    per_token = activation_bytes_per_token(model, r, row_length, chunked_logits=logit_chunk is not None)
    # One chunk's row: logits in the model dtype and float32, log-sum-exp's float32 temporary, the float32 gradient
    # rounded back to the model dtype (benchmarks/inner_loss_chunking.py measured 14 bytes per entry in bf16).
    per_row = _vocabulary(model) * (2 * _compute_element_size(model) + 12)
    chunk = (logit_chunk, per_row) if logit_chunk else (0, 0)
    return MemoryEstimate(resident, 16 * slot_width, per_token, WORKSPACE, *chunk)


def activation_bytes_per_token(model, r: int, row_length: int, chunked_logits: bool = False) -> int:
    """An upper bound of what one trained token holds at the peak of a joint step (see the module docstring).

    Per decoder layer, in the model's dtype: ~10 hidden-size tensors (norm inputs, statistics and outputs, queries,
    attention output, residuals, and two of slack: with 8, a SmolLM2-135M step measured within 0.5 % of the
    estimate), the key/value projections and ~4 intermediate-size tensors of the MLP (gate, up,
    their activation and product); in float32: the attention row (heads x row length) and 7 rank-r LoRA intermediates.
    Once: one layer's float32 temporaries of the backward, and the logits: with the whole logits, float32 logits,
    log-softmax and their gradients plus the model-dtype logits (16 bytes per vocabulary entry); with the chunked loss,
    the final hidden state's copy and its saved gradient."""
    config = getattr(model, "config", None)
    config = getattr(config, "text_config", None) or config
    element = _compute_element_size(model)
    hidden = getattr(config, "hidden_size", 1024)
    layers = getattr(config, "num_hidden_layers", 24)
    heads = getattr(config, "num_attention_heads", hidden // 64)
    head_dim = getattr(config, "head_dim", None) or hidden // heads
    kv = getattr(config, "num_key_value_heads", heads) * head_dim
    intermediate = getattr(config, "intermediate_size", 4 * hidden)
    per_layer = element * (10 * hidden + 2 * kv + 4 * intermediate) + 4 * (heads * row_length + 7 * r)
    logits = 3 * element * hidden if chunked_logits else 16 * _vocabulary(model)
    return layers * per_layer + logits + 16 * max(hidden, intermediate)


def _vocabulary(model) -> int:
    config = getattr(model, "config", None)
    config = getattr(config, "text_config", None) or config
    return getattr(config, "vocab_size", 32000)


def _compute_element_size(model) -> int:
    """Bytes per activation element: the dtype that holds most of the floating-point parameters (the float32 adapter
    slots do not count; 2 for a 4/8-bit base that computes in bf16/fp16, whose packed weights are stored as uint8)."""
    weights: dict[int, int] = {}
    for name, param in model.named_parameters():
        if param.is_floating_point() and "lora_" not in name:
            weights[param.element_size()] = weights.get(param.element_size(), 0) + param.numel()
    return max(weights, key=weights.get) if weights else 2


def available_memory_bytes(device) -> int:
    """Memory the inner loop may still take: free device memory on a GPU, `MemAvailable` on a CPU host."""
    if getattr(device, "type", str(device)) == "cuda":
        import torch

        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        return 8 << 30


@dataclass(frozen=True)
class StepPlan:
    """K and the token budget of a joint step, and the memory they are expected to take."""

    slots: int
    token_budget: int
    expected_bytes: int


def plan_slots(
    estimate: MemoryEstimate,
    step_tokens: list[int],
    longest_step: int,
    limit: int,
    max_adapters: int | str = "auto",
    max_tokens_per_step: int | str = "auto",
    default_max_adapters: int = 64,
    fill: float = 1.0,
    target_tokens: int | None = None,
) -> StepPlan:
    """Choose K and the token budget from the jobs, then shrink K until the estimate fits `limit` bytes.

    `step_tokens` holds each job's tokens per optimizer step (batch size x its mean example length) and
    `longest_step` the largest single step of any job (which runs alone when it exceeds the budget). An automatic K
    is one slot per job up to `default_max_adapters`, or with `target_tokens` the fewest slots whose K largest steps
    reach that many tokens (a CPU's rule). An automatic token budget lets the K largest of the jobs' typical steps run
    together, so K adapters really do share a step.
    `fill` is the packed rows' tokens per real token (row-end filler computes too). A fixed `max_adapters` or
    `max_tokens_per_step` is kept as given; only what is "auto" is shrunk to fit. K never
    drops below 1: a single job that does not fit is left to the out-of-memory fallback of the step (which fails
    that job alone).

    Example:
    ```python
    >>> estimate = MemoryEstimate(resident=1000, per_slot=100, per_token=10, workspace=0)
    >>> plan_slots(estimate, step_tokens=[20] * 8, longest_step=30, limit=2500)
    StepPlan(slots=5, token_budget=100, expected_bytes=2500)
    >>> plan_slots(estimate, step_tokens=[20] * 8, longest_step=30, limit=2500, target_tokens=60)
    StepPlan(slots=3, token_budget=60, expected_bytes=1900)
    ```
    """
    ordered = sorted(step_tokens or [1], reverse=True)
    fixed_k = max_adapters != "auto"
    k = max(1, min(int(max_adapters) if fixed_k else default_max_adapters, len(ordered)))
    if not fixed_k and target_tokens is not None:
        reached = next((n for n in range(1, k + 1) if sum(ordered[:n]) >= target_tokens), k)
        k = reached

    def budget(slots: int) -> int:
        if max_tokens_per_step != "auto":
            return int(max_tokens_per_step)
        return max(1, sum(ordered[:slots]))

    def needed(slots: int) -> int:  # a step holds at most the budget, or one over-long batch alone
        return estimate.total(slots, max(math.ceil(budget(slots) * fill), longest_step))

    while not fixed_k and k > 1 and needed(k) > limit:
        k -= 1
    return StepPlan(k, budget(k), needed(k))


def release_free_memory() -> None:
    """Hand memory nothing uses back to the system: the CUDA cache, and on Linux with glibc the free pages inside
    malloc's heap (`malloc_trim(0)`). Tensors are freed by reference counting; run `gc.collect()` first where
    reference cycles may hold some (it costs ~0.1 s with transformers loaded, the trim well under a millisecond).

    Why the last one: glibc serves tensors below its mmap threshold (which grows to 32 MiB once such a block is
    freed) from a heap that only shrinks from its top, so what one phase frees stays resident under the next one.
    In the CPU demo's held-out table the main heap held 3.4 GB of which 1.6 GB was in use; `malloc_trim(0)` gave
    1.7 GB back at once (docs/benchmarks.md). It runs where the work changes (the start and end of every adapt call,
    and between a group's training steps and its evaluation), not per step, where the freed pages would only fault
    back in."""
    if _cuda_initialized():
        import torch

        torch.cuda.empty_cache()
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


def _cuda_initialized() -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized()


@functools.lru_cache(maxsize=1)
def _malloc_trim():
    """glibc's `malloc_trim`, or None (another C library or OS: nothing to do)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None
