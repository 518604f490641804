"""`PeftLoRAInnerAdapter`: one self-edit at a time on a resident peft LoRA model, trained by a plain PyTorch loop.

This is the reference path: `LoRAInnerAdapter` (many self-edits per forward/backward) is tested against it, and it
takes any `peft.LoraConfig` (dropout, DoRA, rsLoRA, ...), which the batched path does not.

SEAL (Zweiger et al., 2025, arXiv 2506.10943) applies every self-edit by fine-tuning a temporary LoRA adapter on the
documents the self-edit describes (knowledge: r=32, alpha=64, lr 1e-3, 10 epochs, batch 1). The reference rebuilds a
`Trainer` and reloads the adapter through disk for every self-edit; here the policy copy, the adapter and the
optimizer stay allocated and are reset in place, and no `Trainer` is involved (a `Trainer` built inside a
multi-process run would average the gradients of *different* self-edits across processes).
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import nn

from ..types import AdaptedModel, InnerJob
from .config import InnerLoRAConfig
from .data import batches_for_epoch, collate, lr_at, tokenize_examples
from .policy_sync import build_resident_copy, quantize_copy
from .resident import ResidentPolicyCopy


class PeftLoRAInnerAdapter(ResidentPolicyCopy):
    """Trains one temporary LoRA adapter per self-edit on a resident copy of the policy.

    Args:
        config (`InnerLoRAConfig`, *optional*): every setting (rank, dropout, learning rate, epochs, budgets, dtype,
            quantization); the batching fields (`max_adapters`, `max_tokens_per_step`, `pack_length`,
            `eval_group_size`) do not apply to one adapter at a time and are ignored.
        lora_config (`peft.LoraConfig`, *optional*): a full LoRA config (DoRA, rsLoRA, ...); overrides `r`,
            `lora_alpha`, `target_modules` and `lora_dropout` of `config`.
        **kwargs: fields of `InnerLoRAConfig`, which build the config (or override fields of `config`).

    Example:
    ```python
    >>> from trl_seal import InnerJob, InnerLoRAConfig, PeftLoRAInnerAdapter, TrainingExample
    >>> adapter = PeftLoRAInnerAdapter(InnerLoRAConfig(r=8, lora_alpha=16, num_epochs=2))
    >>> adapter.sync(model, tokenizer)
    >>> for adapted in adapter.adapt([InnerJob([TrainingExample("The sky is green.")])]):
    ...     print(adapted.losses[-1], adapted.failure)
    ```
    """

    def __init__(self, config: InnerLoRAConfig | None = None, lora_config: Any = None, **kwargs):
        super().__init__(config, **kwargs)  # self.model: the PeftModel around the resident copy, built by `sync`
        self._clock = time.perf_counter
        self.lora_config = lora_config or _default_lora_config(self.config)
        self._optimizer: torch.optim.Optimizer | None = None

    # ----------------------------------------------------------------------------------------------- resident copy
    def _drop_built_state(self) -> None:
        self._optimizer = None

    def _build(self, policy: nn.Module, device: torch.device) -> None:
        from peft import get_peft_model

        self.model = None  # free the previous copy before allocating the next
        self._drop_built_state()
        quantization = self.config.quantization
        where = device if quantization is None else torch.device("cpu")
        base = build_resident_copy(policy, self.config.torch_dtype(device), where)
        if quantization is not None:
            base = quantize_copy(base, quantization, device)
        base.requires_grad_(False)
        self.model = get_peft_model(base, self.lora_config)
        self.model.eval()
        params = [p for p in self.model.parameters() if p.requires_grad]
        config = self.config
        self._optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay)

    @contextlib.contextmanager
    def base_model(self) -> Iterator[nn.Module]:
        """The un-adapted resident copy (adapters switched off)."""
        self._require_synced()
        with self.model.disable_adapter():
            yield self.model

    # ------------------------------------------------------------------------------------------------ inner loop
    def adapt(self, jobs: Sequence[InnerJob]) -> Iterator[AdaptedModel]:
        """Train a fresh adapter on each job in turn and yield the adapted model.

        The adapted model is valid until the generator resumes; then the adapter is reset in place, so the base
        weights are never touched and the next job starts from exactly the same state."""
        self._require_synced()
        for index, job in enumerate(jobs):
            self._reset(job.seed)
            adapted = self._train(index, job)
            if adapted.failure is not None:
                self._reset(job.seed)  # a failed adapter must not leak into the evaluation
            self.model.eval()
            try:
                yield adapted
            finally:
                self._reset(job.seed)

    def _train(self, index: int, job: InnerJob) -> AdaptedModel:
        adapted = AdaptedModel(job_index=index, model=self.model, tokenizer=self.tokenizer)
        examples = tokenize_examples(job.examples, self.tokenizer, self.config.max_length)
        if not examples:
            adapted.failure = "no_training_tokens"
            return adapted
        epochs = job.num_epochs if job.num_epochs is not None else self.config.num_epochs
        if (limit := self.config.max_tokens_per_job) and epochs * sum(len(ex.input_ids) for ex in examples) > limit:
            adapted.failure = "too_many_tokens"
            return adapted
        started = self._clock()
        base_lr = job.learning_rate if job.learning_rate is not None else self.config.learning_rate
        total_steps = epochs * math.ceil(len(examples) / self.config.batch_size)
        warmup = int(self.config.warmup_ratio * total_steps)
        generator = torch.Generator().manual_seed(job.seed)
        device = next(self.model.parameters()).device
        pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        self.model.train()
        for _ in range(epochs):
            for batch in batches_for_epoch(examples, self.config.batch_size, generator):
                lr = lr_at(adapted.num_steps, total_steps, base_lr, self.config.lr_scheduler_type, warmup)
                loss = self._step(collate(batch, pad_id, device), lr)
                if not math.isfinite(loss):
                    adapted.failure = "nan_loss"
                    return adapted
                adapted.losses.append(loss)
                adapted.num_steps += 1
                adapted.num_tokens += sum(example.num_trained_tokens for example in batch)
                budget = self.config.max_seconds_per_job
                if budget is not None and self._clock() - started > budget:
                    adapted.failure = "timeout"
                    return adapted
        return adapted

    def _step(self, batch: dict[str, torch.Tensor], lr: float) -> float:
        for group in self._optimizer.param_groups:
            group["lr"] = lr
        loss = self.model(**batch).loss  # mean over the trained (non -100) tokens of the batch
        if not torch.isfinite(loss):
            self._optimizer.zero_grad(set_to_none=True)
            return float("nan")
        loss.backward()
        if self.config.max_grad_norm is not None:
            params = [p for group in self._optimizer.param_groups for p in group["params"]]
            torch.nn.utils.clip_grad_norm_(params, self.config.max_grad_norm)
        self._optimizer.step()
        self._optimizer.zero_grad(set_to_none=True)
        return loss.item()

    @torch.no_grad()
    def _reset(self, seed: int) -> None:
        """Re-initialise every adapter in place (A: Kaiming from `seed`, drawn on the CPU so that every device gets
        the same adapter, as `LoRAInnerAdapter` does; B: zero) and clear the optimizer state."""
        from peft.tuners.lora import LoraLayer

        generator = torch.Generator().manual_seed(seed)
        default_init = self.lora_config.init_lora_weights is True
        devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
        with torch.random.fork_rng(devices=devices):  # leave the trainer's random streams untouched
            torch.manual_seed(seed)
            for module in self.model.modules():
                if isinstance(module, LoraLayer):
                    for adapter in module.active_adapters:
                        module.reset_lora_parameters(adapter, init_lora_weights=self.lora_config.init_lora_weights)
                        if default_init and adapter in module.lora_A:
                            weight = module.lora_A[adapter].weight
                            drawn = torch.empty(weight.shape)
                            nn.init.kaiming_uniform_(drawn, a=math.sqrt(5), generator=generator)
                            weight.copy_(drawn)
        self._optimizer.state.clear()


def _default_lora_config(config: InnerLoRAConfig):
    from peft import LoraConfig

    return LoraConfig(r=config.r, lora_alpha=config.lora_alpha, target_modules=config.target_modules,
                      lora_dropout=config.lora_dropout, task_type="CAUSAL_LM")
