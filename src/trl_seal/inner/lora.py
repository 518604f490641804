"""`LoRAInnerAdapter`: the inner loop of SEAL, many self-edits per forward/backward pass.

SEAL (Zweiger et al., 2025, arXiv 2506.10943) applies every self-edit by fine-tuning a temporary LoRA adapter on the
documents the self-edit describes (knowledge: r=32, alpha=64, lr 1e-3, 10 epochs, batch 1), which the reference
does one self-edit at a time with a new `Trainer` and a disk round trip each. Here K adapters live side by side in
one resident copy of the policy (`MultiLoRALinear` slots), their examples are packed together into few rows with no
padding in the loss, and each adapter keeps its own loss normalisation, gradient clipping, AdamW state and
learning-rate schedule, so the result equals training each alone (tested against `PeftLoRAInnerAdapter`). Slots
freed by short jobs are refilled.
"""

from __future__ import annotations

import contextlib
import gc
import math
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.profiler import record_function

from ..types import AdaptedGroup, AdaptedModel, InnerJob
from .config import InnerLoRAConfig
from .data import TokenizedExample, batches_for_epoch, lr_at, tokenize_examples
from .loss import chunk_rows, per_slot_losses_from_hidden, plain_output_head
from .memory import (
    CPU_STEP_TOKENS,
    MemoryEstimate,
    available_memory_bytes,
    estimate_memory,
    parse_memory,
    plan_slots,
    release_free_memory,
)
from .multi_lora import SlotAdamW, SlotStore, clip_divisors_per_slot, install_multi_lora, reset_slot
from .packing import pack, packed_tokens, per_slot_losses
from .policy_sync import build_resident_copy, quantize_copy
from .resident import ResidentPolicyCopy


@dataclass
class _SlotRun:
    """One job in progress in one slot."""

    slot: int
    adapted: AdaptedModel
    examples: list[TokenizedExample]
    epochs: int
    base_lr: float
    total_steps: int
    warmup_steps: int
    generator: torch.Generator
    started: float = 0.0
    queue: list[list[TokenizedExample]] = field(default_factory=list)
    epochs_started: int = 0

    def next_batch(self, batch_size: int) -> list[TokenizedExample]:
        if not self.queue:
            self.queue = batches_for_epoch(self.examples, batch_size, self.generator)
            self.epochs_started += 1
        return self.queue[0]

    @property
    def done(self) -> bool:
        return self.adapted.num_steps >= self.total_steps


class LoRAInnerAdapter(ResidentPolicyCopy):
    """Trains many temporary LoRA adapters at once on a resident copy of the policy.

    Args:
        config (`InnerLoRAConfig`, *optional*): every setting (rank, learning rate, epochs, batching, budgets, dtype,
            quantization); the defaults are the paper's knowledge-incorporation setting. `lora_dropout` must be 0.
        **kwargs: fields of `InnerLoRAConfig`, which build the config (or override fields of `config`):
            `LoRAInnerAdapter(num_epochs=3)` is `LoRAInnerAdapter(InnerLoRAConfig(num_epochs=3))`.

    K adapters are trained at once (`config.max_adapters`, by default as many as memory allows); adapters whose next
    batch does not fit a joint step's token budget wait for the next step, which does not change their result.
    Finished adapters are handed out `config.eval_group_size` at a time for batched evaluation.

    Example:
    ```python
    >>> from trl_seal import InnerJob, InnerLoRAConfig, LoRAInnerAdapter, TrainingExample
    >>> adapter = LoRAInnerAdapter(InnerLoRAConfig(r=8, lora_alpha=16, num_epochs=2))
    >>> adapter.sync(model, tokenizer)
    >>> texts = ["The sky is green.", "Ice is hot."]
    >>> jobs = [InnerJob([TrainingExample(text)], seed=i) for i, text in enumerate(texts)]
    >>> for group in adapter.adapt_groups(jobs):
    ...     with group.routed([0, 1]) as routed_model:  # row 0 uses the first adapter, row 1 the second
    ...         outputs = routed_model.generate(**tokenizer(["The sky is", "Ice is"], return_tensors="pt"))
    ```
    """

    def __init__(self, config: InnerLoRAConfig | None = None, **kwargs):
        super().__init__(config, **kwargs)
        if self.config.lora_dropout:
            raise ValueError(f"lora_dropout={self.config.lora_dropout}: LoRAInnerAdapter has no adapter dropout; use "
                             "lora_dropout=0 or PeftLoRAInnerAdapter.")
        self._clock = time.perf_counter
        self.last_run: dict[str, float] = {}  # statistics of the last adapt call (slots, steps, tokens, packing)
        self._router = self._layers = self._store = self._optimizer = None
        self._num_slots = 0
        self._head: nn.Linear | None | bool = False  # the output head for the chunked loss; False: not checked yet
        self._slot_of_job: dict[int, int] = {}  # job index -> slot, for the jobs of the current adapt call

    # ----------------------------------------------------------------------------------------------- resident copy
    def _build(self, policy: nn.Module, device: torch.device) -> None:
        self.model = None  # free the old copy (and, below, its slots) before allocating the next
        self._drop_built_state()
        quantization = self.config.quantization
        where = device if quantization is None else torch.device("cpu")
        base = build_resident_copy(policy, self.config.torch_dtype(device), where)
        if quantization is not None:
            base = quantize_copy(base, quantization, device)
        base.requires_grad_(False)
        self.model = base.eval()
        self._install_slots(0)  # slots are allocated by each adapt call and released when it ends

    def _install_slots(self, num_slots: int) -> None:
        if self._store is None:
            self._router, self._store = install_multi_lora(
                self.model, num_slots, self.config.r, self.config.lora_alpha, self.config.target_modules
            )
            self._layers = self._store.layers
            layers = set(self._layers)
            self._wrapped_paths = frozenset(n for n, m in self.model.named_modules() if m in layers)
        else:  # grow: release the old store first (its views in every layer keep it alive), then allocate
            device = self._store.flat.device
            self.release()
            self._store = SlotStore(self._layers, num_slots, device)
        self._optimizer = SlotAdamW(self._store, weight_decay=self.config.weight_decay)
        self._num_slots = num_slots

    def _drop_built_state(self) -> None:
        self._router = self._layers = self._store = self._optimizer = None
        self._num_slots, self._slot_of_job, self._head = 0, {}, False

    def release(self) -> None:
        """Free the adapter slots, their gradients and AdamW moments (K x 16 bytes per LoRA weight).

        Every `adapt_groups` call that runs to its end calls it, so what runs after the inner loop, such as the policy
        update, never shares the memory with slots no job uses; the next call allocates the slots it plans. Safe to
        call at any time outside an adapt call (the adapters of a group taken before are then gone)."""
        if self._store is None or self._num_slots == 0:
            return
        device = self._store.flat.device
        self._optimizer = None
        self._store = SlotStore(self._layers, 0, device)  # rebinds every layer to empty views: the old store is freed
        self._optimizer = SlotAdamW(self._store, weight_decay=self.config.weight_decay)
        self._num_slots = 0
        self._slot_of_job = {}
        release_free_memory()

    @contextlib.contextmanager
    def base_model(self) -> Iterator[nn.Module]:
        """The un-adapted resident copy (every adapter switched off)."""
        self._require_synced()
        with self._router.use("off"):
            yield self.model

    def slot_of(self, member: AdaptedModel) -> int:
        """The slot that holds the adapter of `member` (a finished job of the group being evaluated)."""
        return self._slot_of_job[member.job_index]

    def slot_parameters(self, slot: int) -> dict[str, torch.Tensor]:
        """The LoRA weights of one slot, under peft's names (`<layer>.lora_A.weight`), e.g. to save an adapter."""
        self._require_synced()
        paths = {m: n for n, m in self.model.named_modules()}
        out = {}
        for layer in self._layers:
            out[f"{paths[layer]}.lora_A.weight"] = layer.lora_A[slot].detach().clone()
            out[f"{paths[layer]}.lora_B.weight"] = layer.lora_B[slot].detach().clone()
        return out

    # ------------------------------------------------------------------------------------------------ inner loop
    def adapt(self, jobs: Sequence[InnerJob]) -> Iterator[AdaptedModel]:
        """Train every job and yield its adapted model, one at a time (trained K at a time underneath).

        The yielded model runs with that job's adapter until the generator resumes."""
        for group in self.adapt_groups(jobs):
            for member in sorted(group.members, key=lambda m: m.job_index):
                with self._router.use("slot", slot=self.slot_of(member)):
                    yield member

    def adapt_groups(self, jobs: Sequence[InnerJob]) -> Iterator[AdaptedGroup]:
        """Train the jobs K at a time and yield groups of finished adapters for batched evaluation.

        The adapters of a group stay valid until the generator resumes; then their slots are reset in place (the base
        weights are never written) and refilled with the next jobs. Once the generator is exhausted the slots are
        released (see `release`); a generator dropped early leaves its last group valid until the next call."""
        self._require_synced()
        yield from self._adapt_groups(jobs)
        self.release()

    def _adapt_groups(self, jobs: Sequence[InnerJob]) -> Iterator[AdaptedGroup]:
        release_free_memory()  # what sampling or a policy update left free in the heap, before the slots and steps
        self._slot_of_job = {}
        tokenized = [tokenize_examples(job.examples, self.tokenizer, self.config.max_length) for job in jobs]
        num_slots, token_budget = self._plan(tokenized)
        if num_slots > self._num_slots:
            self._install_slots(num_slots)
        pending = list(range(len(jobs)))[::-1]
        running: dict[int, _SlotRun] = {}
        finished: list[_SlotRun] = []
        free = list(range(num_slots))[::-1]
        stats = {"slots": num_slots, "token_budget": token_budget, "joint_steps": 0, "tokens": 0, "row_tokens": 0,
                 "expected_bytes": self._last_plan.expected_bytes}
        group_size = self.config.eval_group_size or max(1, num_slots // 2)
        while pending or running or finished:
            while free and pending:
                index = pending.pop()
                run = self._start(free.pop(), index, jobs[index], tokenized[index])
                if run.adapted.failure:
                    finished.append(run)
                else:
                    running[run.slot] = run
            if running and len(finished) < group_size:
                for run in self._joint_step(list(running.values()), token_budget, stats):
                    finished.append(running.pop(run.slot))
                for run in self._timed_out(list(running.values())):
                    finished.append(running.pop(run.slot))
                continue
            group, finished = finished, []
            release_free_memory()  # the steps' activations, before the group's answers allocate their own
            yield self._group(group)
            release_free_memory()  # the answers' caches, before the next steps
            for run in group:
                self._clear(run.slot)
                free.append(run.slot)
        self.last_run = stats

    def _start(self, slot: int, index: int, job: InnerJob, examples: list[TokenizedExample]) -> _SlotRun:
        adapted = AdaptedModel(job_index=index, model=self.model, tokenizer=self.tokenizer)
        self._slot_of_job[index] = slot
        epochs = job.num_epochs if job.num_epochs is not None else self.config.num_epochs
        total = epochs * math.ceil(len(examples) / self.config.batch_size)
        base_lr = job.learning_rate if job.learning_rate is not None else self.config.learning_rate
        run = _SlotRun(slot, adapted, examples, epochs, base_lr, total, int(self.config.warmup_ratio * total),
                       torch.Generator().manual_seed(job.seed), started=self._clock())
        reset_slot(self._layers, slot, job.seed)
        self._optimizer.reset(slot)
        if not examples:
            adapted.failure = "no_training_tokens"
        elif (limit := self.config.max_tokens_per_job) and epochs * sum(len(ex.input_ids) for ex in examples) > limit:
            adapted.failure = "too_many_tokens"
            self._clear(slot)
        return run

    def _timed_out(self, runs: list[_SlotRun]) -> list[_SlotRun]:
        if self.config.max_seconds_per_job is None:
            return []
        late = [run for run in runs if self._clock() - run.started > self.config.max_seconds_per_job]
        for run in late:
            run.adapted.failure = "timeout"
            self._clear(run.slot)
        return late

    def _joint_step(self, runs: list[_SlotRun], token_budget: int, stats: dict) -> list[_SlotRun]:
        """One forward/backward over the next batch of every run that fits the token budget; returns finished runs."""
        chosen, tokens = [], 0
        for run in sorted(runs, key=lambda r: r.adapted.num_steps):  # the furthest behind go first: no starvation
            size = sum(len(ex.input_ids) for ex in run.next_batch(self.config.batch_size))
            if chosen and tokens + size > token_budget:
                continue
            chosen.append(run)
            tokens += size
        return self._step_or_split(chosen, stats)

    def _step_or_split(self, chosen: list[_SlotRun], stats: dict) -> list[_SlotRun]:
        """A step that runs out of memory is retried in halves (a slot's update does not depend on the others in the
        step), down to one job, which then fails with reason `"out_of_memory"`."""
        try:
            return self._step(chosen, stats)
        except Exception as error:
            if not is_out_of_memory(error):
                raise
        self._store.grad.zero_()
        gc.collect()
        release_free_memory()
        stats["oom_retries"] = stats.get("oom_retries", 0) + 1
        if len(chosen) == 1:
            chosen[0].adapted.failure = "out_of_memory"
            self._clear(chosen[0].slot)
            return chosen
        half = len(chosen) // 2
        return self._step_or_split(chosen[:half], stats) + self._step_or_split(chosen[half:], stats)

    def _step(self, chosen: list[_SlotRun], stats: dict) -> list[_SlotRun]:
        # The `inner/...` ranges name the step's parts in a torch.profiler trace (benchmarks/inner_loop.py
        # --profile); outside a profiler they cost a few microseconds per step.
        pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        device = next(self.model.parameters()).device
        batch_size = self.config.batch_size
        row_length = self._row_length(device)
        batch = pack([(run.slot, run.next_batch(batch_size)) for run in chosen], row_length, pad_id, device)
        with record_function("inner/forward"):
            losses = self._forward_losses(batch)
        # SegmentLoRA writes the adapters' gradients straight into the slot store and hands autograd none: nothing
        # accumulates into the (non-dense) .grad views, so autograd's gradient-layout warning cannot arise.
        with record_function("inner/backward"):
            losses.sum().backward()
        # The step's one host synchronisation, after the backward is queued: a non-finite loss then discards the
        # step's gradients (no slot has moved yet) and fails its job, as a check before the backward would.
        values = losses.tolist()
        if not all(math.isfinite(value) for value in values):
            self._store.grad.zero_()
            return self._fail_non_finite(chosen, batch, losses)
        divisors = None
        with record_function("inner/clip"):  # the norms only: the optimizer's kernel divides by them as it reads
            if self.config.max_grad_norm is not None:
                _, divisors = clip_divisors_per_slot(self._store, batch.slots, self.config.max_grad_norm)
        rates = [lr_at(r.adapted.num_steps, r.total_steps, r.base_lr, self.config.lr_scheduler_type, r.warmup_steps)
                 for r in chosen]
        with record_function("inner/optimizer"):
            self._optimizer.step(batch.slots, rates, grad_divisors=divisors)
        with record_function("inner/zero_grad"):
            self._store.grad.zero_()  # in place: every layer's .grad is a view of it
        stats["joint_steps"] += 1
        stats["tokens"] += batch.num_tokens
        stats["row_tokens"] += batch.input_ids.numel()
        for run, loss in zip(chosen, values, strict=True):
            trained = run.queue.pop(0)
            run.adapted.losses.append(loss)
            run.adapted.num_steps += 1
            run.adapted.num_tokens += sum(example.num_trained_tokens for example in trained)
        return [run for run in chosen if run.done]

    def _row_length(self, device: torch.device) -> int:
        if self.config.pack_length is not None:
            return self.config.pack_length
        return 1024 if device.type == "cuda" else 160

    def _forward_losses(self, batch, grad: bool = True) -> torch.Tensor:
        head = self._output_head()
        inputs = dict(input_ids=batch.input_ids, position_ids=batch.position_ids, use_cache=False)
        self.model.train()
        try:
            with self._router.use("tokens", segments=batch.segments), torch.set_grad_enabled(grad):
                if head is None:
                    logits = self.model(**inputs).logits
                else:  # the head runs in chunks on the trained positions only (see loss.py)
                    hidden = self.model.get_decoder()(**inputs).last_hidden_state
        finally:
            self.model.eval()
        return per_slot_losses(logits, batch) if head is None else per_slot_losses_from_hidden(hidden, head, batch)

    def _output_head(self) -> nn.Linear | None:
        """The output head when the chunked loss reproduces the model's logits (checked once per resident copy)."""
        if self._head is False:
            self.model.train()  # as in a joint step (a bitsandbytes layer in eval mode repacks its weights on a CPU)
            try:
                with self._router.use("off"):
                    self._head = plain_output_head(self.model)
            finally:
                self.model.eval()
        return self._head

    def _fail_non_finite(self, chosen: list[_SlotRun], batch, losses: torch.Tensor) -> list[_SlotRun]:
        """A non-finite loss fails its job, not the others. A NaN can leak through shared attention rows, so with
        several jobs in the step each suspect is re-run alone to find the real culprit; the step is then retried."""
        suspects = [run for run, loss in zip(chosen, losses.tolist(), strict=True) if not math.isfinite(loss)]
        if len(chosen) > 1:
            device = batch.input_ids.device
            pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
            batch_size = self.config.batch_size
            alone = [pack([(run.slot, run.next_batch(batch_size))], self._row_length(device), pad_id, device)
                     for run in suspects]
            culprits = [run for run, b in zip(suspects, alone, strict=True)
                        if not torch.isfinite(self._forward_losses(b, grad=False)).all()]
            suspects = culprits or suspects
        for run in suspects:
            run.adapted.failure = "nan_loss"
            self._clear(run.slot)
        return suspects

    def _group(self, runs: list[_SlotRun]) -> AdaptedGroup:
        slots = [run.slot for run in runs]

        def routed(member_of_row: Sequence[int]):
            return _RoutedModel(self._router, self.model, [slots[m] for m in member_of_row])

        return AdaptedGroup([run.adapted for run in runs], self.tokenizer, routed)

    @torch.no_grad()
    def _clear(self, slot: int) -> None:
        for layer in self._layers:  # B = 0: an idle or failed slot computes exactly the base model
            layer.lora_B[slot].zero_()
        self._optimizer.reset(slot)

    # ------------------------------------------------------------------------------------------------ planning
    def _plan(self, tokenized: list[list[TokenizedExample]]) -> tuple[int, int]:
        """Choose K (slots) and the token budget of a joint step from the jobs and the device (see `memory.py`):
        on a GPU up to 64 slots, as many as the jobs fill; on a CPU the fewest slots whose joint step reaches
        `CPU_STEP_TOKENS`. Then shrink them to fit the `max_memory` cap, or without one the safety cap of what the
        loop holds now plus 90 % of the memory still available."""
        device = next(self.model.parameters()).device
        estimate = self.memory_estimate()
        limit = parse_memory(self.config.max_memory)
        if limit is None:
            held = estimate.resident + self._num_slots * estimate.per_slot
            limit = held + int(0.9 * available_memory_bytes(device))
        batch_size = self.config.batch_size
        step_tokens = [batch_size * sum(len(ex.input_ids) for ex in examples) // len(examples)
                       for examples in tokenized if examples]
        longest = batch_size * max((len(ex.input_ids) for examples in tokenized for ex in examples), default=1)
        # A GPU fills its width with up to 64 adapters. On a CPU batching has no idle width to fill: once a step's
        # matmuls are large enough to run at full speed, more adapters only hold more memory.
        on_gpu = device.type == "cuda"
        most, target = (64, None) if on_gpu else (16, CPU_STEP_TOKENS)
        planned = most if self.config.max_adapters == "auto" else self.config.max_adapters
        fill = _packing_overhead(tokenized, batch_size, self._row_length(device), planned)
        plan = plan_slots(estimate, step_tokens, longest, limit, self.config.max_adapters,
                          self.config.max_tokens_per_step, most, fill, target_tokens=target)
        if plan.expected_bytes > limit and self.config.max_memory is not None:
            warnings.warn(f"max_memory={self.config.max_memory!r} is below the estimate for a single adapter "
                          f"({plan.expected_bytes / 2**30:.2f} GiB, of which the resident copy "
                          f"{estimate.resident / 2**30:.2f} GiB); training one job at a time anyway. Raise max_memory "
                          "or shorten max_length.", stacklevel=3)
        self._last_plan = plan
        return plan.slots, plan.token_budget

    def memory_estimate(self) -> MemoryEstimate:
        """Bytes this adapter holds: the resident copy, per adapter slot and per token of a joint step."""
        self._require_synced()
        device = next(self.model.parameters()).device
        head = self._output_head()
        rows = None if head is None else chunk_rows(head.weight.shape[0])
        return estimate_memory(self.model, self._store.width, self.config.r, self._row_length(device), rows)


class _RoutedModel(contextlib.AbstractContextManager):
    """Context manager of `AdaptedGroup.routed`: the resident model with row i on slot `row_slots[i]`."""

    def __init__(self, router, model, row_slots):
        self.router, self.model, self.row_slots = router, model, row_slots
        self._context = None

    def __enter__(self):
        self._context = self.router.use("rows", row_slots=self.row_slots)
        self._context.__enter__()
        return self.model

    def __exit__(self, *exc):
        return self._context.__exit__(*exc)


def is_out_of_memory(error: BaseException) -> bool:
    """CUDA's OutOfMemoryError, or the CPU allocator's RuntimeError."""
    if isinstance(error, torch.OutOfMemoryError):
        return True
    message = str(error).lower()
    return isinstance(error, RuntimeError) and ("out of memory" in message or "can't allocate memory" in message)


def _packing_overhead(tokenized: list[list[TokenizedExample]], batch_size: int, row_length: int, slots: int) -> float:
    """Packed-row tokens per real token of the first few joint steps of up to `slots` jobs (the worst of them)."""
    jobs = [examples for examples in tokenized if examples][:slots]
    worst = 1.0
    for step in range(min(3, max((len(examples) for examples in jobs), default=0))):
        sizes = [len(examples[(step * batch_size + i) % len(examples)].input_ids)
                 for examples in jobs for i in range(batch_size)]
        worst = max(worst, packed_tokens(sizes, row_length) / sum(sizes))
    return worst

