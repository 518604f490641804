"""SEAL: Self-Adapting LLMs (Zweiger, Pari, Guo, Akyürek, Kim, Agrawal; MIT, 2025; arXiv 2506.10943).

A language model writes its own fine-tuning data: for each context (a passage, a few-shot task) it samples k
*self-edits*; an inner loop applies each one as a temporary LoRA adapter and scores the adapted model on held-out
queries; an outer loop (ReST-EM) fine-tunes the policy on the self-edits that earned reward.

`SEALTrainer` is a `GRPOTrainer`: TRL generates the k self-edits per context (optionally with vLLM), gathers rewards
across processes, handles PEFT, quantization, DeepSpeed, logging and checkpoints. SEAL changes three things: the
reward comes from a batched `RewardFn` that trains through an `InnerAdapter` synced to the *current* policy, the
advantages are replaced by the strategy's completion weights (ReST-EM: 1 for kept self-edits), and the loss is the
strategy's (ReST-EM: NLL on kept self-edit tokens, computed on the kept rows only).

Every use of TRL's and transformers' private API is in this file; docs/design.md lists them.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import torch
from accelerate.logging import get_logger
from accelerate.utils import gather, gather_object
from trl import GRPOTrainer
from trl.models import unwrap_model_for_generation

from .generation import contiguous_head_input
from .inner.config import FASTEST
from .inner.lora import LoRAInnerAdapter
from .ledger import Ledger, append_jsonl, text_sha256, write_json_atomically
from .resume import (
    INITIAL_POLICY,
    check_resumable,
    keep_rounds_before,
    last_complete_checkpoint,
    read_seal_state,
    scalar_settings,
    write_seal_state,
)
from .sampling import derive_seed, sample_seeded
from .seal_config import CPU_GENERATION_CHUNK, SEALConfig
from .strategies.policy_gradient import PolicyGradient
from .strategies.rest_em import RestEM
from .types import InnerAdapter, OuterStrategy, RewardFn, completion_text
from .validation import check_rewards, check_vllm, validate_dataset, validate_reward_fn
from .version import __version__

logger = get_logger(__name__)


@dataclass
class ScoredSelfEdits:
    """What the reward wrapper learned about this process's self-edits, beyond the floats TRL's convention returns."""

    prompts: list
    completions: list
    rewards: list[float]  # NaN where the reward function returned None
    invalid: list[tuple[int, str]] = field(default_factory=list)  # (local index, reason)


class SEALTrainer(GRPOTrainer):
    """Trainer for SEAL: self-edit generation, inner-loop rewards and a ReST-EM (or policy-gradient) outer update.

    Args:
        model (`str`, `PreTrainedModel` or `PeftModel`): the policy that writes self-edits.
        reward_fn (`RewardFn`): batched reward, called with TRL's reward-function keyword arguments plus
            `inner_adapter` and `record_invalid`; one float or None per completion.
        args (`SEALConfig`, *optional*): configuration; defaults to `SEALConfig("<model>-SEAL")`.
        train_dataset (`datasets.Dataset`): a `prompt` column of self-edit prompts (text or chat messages) and any
            columns that describe the context; those are passed to `reward_fn`.
        inner_adapter (`InnerAdapter`, *optional*): applies self-edits; defaults to `LoRAInnerAdapter()` (paper
            settings: r=32, alpha=64, lr 1e-3, 10 epochs, batch 1).
        strategy (`OuterStrategy`, *optional*): defaults to the one named by `args.strategy`.
        processing_class, callbacks, optimizers, peft_config: as for `GRPOTrainer`.

    Example:
    ```python
    >>> from trl_seal import LoRAInnerAdapter, SEALConfig, SEALTrainer
    >>> trainer = SEALTrainer(
    ...     model="HuggingFaceTB/SmolLM2-135M-Instruct",
    ...     reward_fn=my_reward,
    ...     args=SEALConfig(output_dir="seal-out", num_rounds=2, contexts_per_round=8),
    ...     train_dataset=dataset,
    ...     inner_adapter=LoRAInnerAdapter(num_epochs=3),
    ... )
    >>> trainer.train()
    ```
    """

    _tag_names = ["trl", "seal"]
    _name = "SEAL"

    def __init__(
        self,
        model,
        reward_fn: RewardFn,
        args: SEALConfig | None = None,
        train_dataset=None,
        inner_adapter: InnerAdapter | None = None,
        strategy: OuterStrategy | None = None,
        processing_class=None,
        callbacks=None,
        optimizers=(None, None),
        peft_config=None,
    ):
        if args is None:
            name = model if isinstance(model, str) else model.config._name_or_path
            args = SEALConfig(f"{str(name).split('/')[-1]}-SEAL")
        if not isinstance(args, SEALConfig):
            raise TypeError(f"args must be a SEALConfig, got {type(args).__name__}: build it with SEALConfig(...).")
        validate_reward_fn(reward_fn)
        validate_dataset(train_dataset, args)
        if callable(getattr(reward_fn, "check_dataset", None)):  # the reward's own column checks, before any model
            reward_fn.check_dataset(train_dataset)
        check_vllm(args)
        self.seal_reward_fn = reward_fn
        self.inner_adapter = inner_adapter if inner_adapter is not None else LoRAInnerAdapter()
        if args.free_inner_copy_during_update and not callable(getattr(self.inner_adapter, "unload", None)):
            raise ValueError(f"free_inner_copy_during_update=True, but {type(self.inner_adapter).__name__} has no "
                             "unload() method to free its copy of the policy: add one (see ResidentPolicyCopy.unload) "
                             "or set free_inner_copy_during_update=False.")
        self.strategy = strategy if strategy is not None else strategy_from_config(args)
        self._round = 0
        self._ledger: Ledger | None = None
        self._ledger_hits = 0
        self._round_ledger_hits = 0
        self._nothing_to_learn = False
        self._restarts = 0
        self._round_record: dict[str, Any] | None = None
        self._scoring_time = 0.0
        self._generation_time_total = 0.0
        self._update_time = 0.0
        # The one side channel around TRL's pipeline: TRL calls the reward wrapper deep inside
        # `_generate_and_score_completions` and keeps only its floats; the wrapper leaves the batch's texts and
        # invalid reasons here, and `_generate_and_score_completions` takes them (and clears it) right after.
        self._scored: ScoredSelfEdits | None = None
        # True while TRL generates for a strategy with its own loss: TRL's old/reference log-probs are not computed.
        self._skip_generation_logps = False
        super().__init__(
            model=model,
            reward_funcs=[self._make_reward_wrapper(reward_fn)],
            args=args,
            train_dataset=train_dataset,
            processing_class=processing_class,
            callbacks=callbacks,
            optimizers=optimizers,
            peft_config=peft_config,
        )
        # sampling's prefill and the policy update's log-probs slice completion positions before the head
        contiguous_head_input(self.accelerator.unwrap_model(self.model))
        self._initial_trainable = self._snapshot_trainable() if self.strategy.restart_each_round else None
        if not self.strategy.uses_grpo_loss:  # vLLM importance sampling needs the old log-probs we skip
            self.vllm_importance_sampling_correction = False

    # ----------------------------------------------------------------------------------------- scoring self-edits
    def _make_reward_wrapper(self, reward_fn: RewardFn):
        def score_self_edits(prompts, completions, completion_ids=None, **kwargs):
            self._sync_inner_adapter()
            start = time.perf_counter()
            rewards, invalid = self._score_with_ledger(reward_fn, prompts, completions, completion_ids, kwargs)
            self._scoring_time += time.perf_counter() - start
            self._scored = ScoredSelfEdits(list(prompts), list(completions),
                                           [math.nan if r is None else float(r) for r in rewards], invalid)
            return rewards

        score_self_edits.__name__ = getattr(reward_fn, "__name__", type(reward_fn).__name__)
        return score_self_edits

    def _score_with_ledger(self, reward_fn, prompts, completions, completion_ids, kwargs):
        """Rewards of the local self-edits: from the ledger when already scored, else from `reward_fn` called on
        chunks of `scoring_chunk_size`, each chunk appended to the ledger as soon as it is scored."""
        count = len(completions)
        seeds = self._self_edit_seeds("inner", count)
        # The prompt is part of the key: the same text written for another context earns another reward.
        hashes = [text_sha256(json.dumps([p, completion_text(c)], default=str)) for p, c in zip(prompts, completions)]
        rewards, invalid, todo = self._rewards_from_ledger(hashes)
        chunk_size = self.args.scoring_chunk_size or max(1, len(todo))
        for begin in range(0, len(todo), chunk_size):
            chunk = todo[begin : begin + chunk_size]
            chunk_rewards, reasons = self._score_chunk(reward_fn, chunk, prompts, completions, completion_ids, seeds,
                                                       kwargs)
            for position, i in enumerate(chunk):
                rewards[i] = chunk_rewards[position]
                if position in reasons:
                    invalid.append((i, reasons[position]))
            self._ledger_append(chunk, chunk_rewards, reasons, hashes, seeds)
        return rewards, invalid

    def _rewards_from_ledger(self, hashes: list[str]):
        """(rewards with None where unknown, their reasons, local indices still to score)."""
        count = len(hashes)
        rewards: list[float | None] = [None] * count
        invalid: list[tuple[int, str]] = []
        ledger = self._ledger if self.model.training else None
        offset = self.accelerator.process_index * count
        todo = []
        for i in range(count):
            entry = ledger.lookup(self._round, self.state.global_step, offset + i, hashes[i]) if ledger else None
            if entry is None:
                todo.append(i)
                continue
            rewards[i] = entry["reward"]
            if entry.get("reason"):
                invalid.append((i, entry["reason"]))
        self._ledger_hits += count - len(todo)
        self._round_ledger_hits += count - len(todo)
        return rewards, invalid, todo

    def _score_chunk(self, reward_fn, chunk, prompts, completions, completion_ids, seeds, kwargs):
        """One `reward_fn` call on the local self-edits `chunk`; returns its rewards and {position: reason}."""
        recorded: list[tuple[int, str]] = []
        rewards = reward_fn(
            prompts=[prompts[i] for i in chunk],
            completions=[completions[i] for i in chunk],
            completion_ids=None if completion_ids is None else [completion_ids[i] for i in chunk],
            inner_adapter=self.inner_adapter,
            record_invalid=lambda index, reason: recorded.append((int(index), str(reason))),
            self_edit_seeds=[seeds[i] for i in chunk],
            **{key: _select(value, chunk, len(completions)) for key, value in kwargs.items()},
        )
        check_rewards(rewards, len(chunk), reward_fn)
        return rewards, {position: reason for position, reason in recorded if 0 <= position < len(chunk)}

    def _ledger_append(self, chunk, rewards, reasons, hashes, seeds) -> None:
        if self._ledger is None or not self.model.training:
            return
        offset = self.accelerator.process_index * len(hashes)
        self._ledger.append([
            {"round": self._round, "policy_step": self.state.global_step, "index": offset + i,
             "context": (offset + i) // self.num_generations, "self_edit_sha256": hashes[i],
             "reward": rewards[position], "reason": reasons.get(position), "seed": seeds[i],
             "process": self.accelerator.process_index, "time": time.time()}
            for position, i in enumerate(chunk)
        ])

    def _self_edit_seeds(self, purpose: str, local_count: int) -> list[int]:
        """One seed per local self-edit from (seed, round, index in the round): the same on any number of processes."""
        offset = self.accelerator.process_index * local_count
        phase = self._round if self.model.training else f"eval{self.state.global_step}"
        return [derive_seed(self.args.seed, purpose, phase, offset + i) for i in range(local_count)]

    def _generate_single_turn(self, prompt_ids, images, multimodal_fields, num_generations, has_tool_images=False):
        plain_text = images is None or all(image is None for image in images)
        if (not self.args.seeded_sampling or self.use_vllm or self.use_transformers_continuous_batching
                or not plain_text or multimodal_fields):
            return super()._generate_single_turn(prompt_ids, images, multimodal_fields, num_generations,
                                                 has_tool_images)
        return self._generate_seeded(prompt_ids)

    def _generate_seeded(self, prompt_ids: list[list[int]]) -> tuple[list[list[int]], None]:
        """TRL's transformers generation path, with each row sampled from its own seeded stream (see `sampling.py`),
        `generation_chunk_size` rows per `generate` call in order of prompt length."""
        seeds = self._self_edit_seeds("sample", len(prompt_ids))
        # every process has as many rows, so all make as many `generate` calls (DeepSpeed ZeRO-3 needs that)
        chunk = self.args.generation_chunk_size or (
            CPU_GENERATION_CHUNK if self.accelerator.device.type == "cpu" else None)
        with (
            unwrap_model_for_generation(
                self.model_wrapped, self.accelerator, gather_deepspeed3_params=self.args.ds3_gather_for_generation,
                generation_kwargs=self.generation_kwargs,
                gradient_checkpointing_kwargs=self.args.gradient_checkpointing_kwargs,
            ) as unwrapped_model,
            torch.no_grad(),
            self._dist.summon_full_params(self.model_wrapped, recurse=False),
        ):
            completions = sample_seeded(unwrapped_model, prompt_ids, seeds, self.generation_config,
                                        self._tokenizer.pad_token_id, self.eos_token_ids, chunk,
                                        self.pad_to_multiple_of, self.accelerator.device)
        return completions, None

    def _policy_version(self) -> tuple[int, int]:
        return (self.state.global_step, self._restarts)

    def _sync_inner_adapter(self) -> None:
        policy = self.accelerator.unwrap_model(self.model)
        tokenizer = getattr(self, "_tokenizer", None) or self.processing_class
        self.inner_adapter.sync(policy, tokenizer, version=self._policy_version())

    def _generate_and_score_completions(self, inputs):
        training = self.model.training
        if training:
            self._close_round()
        self._scoring_time = 0.0
        start = time.perf_counter()
        self._skip_generation_logps = not self.strategy.uses_grpo_loss
        try:
            output = super()._generate_and_score_completions(inputs)
        finally:
            self._skip_generation_logps = False
        elapsed = time.perf_counter() - start
        self._generation_time_total += elapsed
        scored, self._scored = self._scored, None
        rewards = gather(torch.tensor(scored.rewards, dtype=torch.float32, device=self.accelerator.device))
        weights = self.strategy.completion_weights(rewards.view(-1, self.num_generations)).view(-1)
        local = slice(self.accelerator.process_index * len(inputs), (self.accelerator.process_index + 1) * len(inputs))
        output["advantages"] = weights[local].to(output["completion_mask"].device)
        if training:  # the same decision on every process: the weights are gathered
            self._nothing_to_learn = not bool(weights.abs().sum() > 0)
        output["loss_normaliser"] = self._loss_normaliser(output, training)
        if training:
            # TRL shuffles the round's rows next with the global RNG, whose state a resumed run does not share with an
            # uninterrupted one (data-loader iterators draw from it): reseed it from (seed, round, process).
            seed = derive_seed(self.args.seed, "update", self._round, self.accelerator.process_index)
            torch.manual_seed(seed % 2**63)
            self._open_round(rewards, weights, scored, elapsed)
            if self.args.free_inner_copy_during_update:
                self.inner_adapter.unload()  # the update runs without it; the next round's sync rebuilds it
            if self.strategy.restart_each_round and self._initial_trainable is not None:
                self._restore_initial_policy()
        return output

    def _get_per_token_logps_and_entropies(self, model, *args, **kwargs):
        if self._skip_generation_logps:
            # TRL's old-policy (importance sampling) and reference (KL) log-probs, computed in
            # `_generate_and_score_completions`, serve GRPO's loss only: a strategy with its own loss skips them.
            return None, None, None
        return super()._get_per_token_logps_and_entropies(model, *args, **kwargs)

    def _loss_normaliser(self, output, training: bool) -> torch.Tensor:
        """The round's weighted completion tokens (all processes) per optimizer step, per process."""
        local = (output["completion_mask"] * (output["advantages"] != 0).unsqueeze(1)).sum()
        if not training:
            return local.detach().float()
        total = gather(local.detach().float().reshape(1)).sum()
        args = self.args
        share = args.gradient_accumulation_steps / (args.steps_per_generation * self.accelerator.num_processes)
        return total * share

    def _compute_loss(self, model, inputs):
        if self._nothing_to_learn and model.training and not self.is_deepspeed_enabled:
            # A round that kept nothing must not move the policy: without gradients AdamW skips every parameter
            # (no momentum step, no weight decay), and no forward/backward is spent on zero-weight rows.
            return torch.zeros((), device=self.accelerator.device, requires_grad=True)
        if self.strategy.uses_grpo_loss:
            return super()._compute_loss(model, inputs)
        return self._strategy_loss(model, inputs)

    def _strategy_loss(self, model, inputs) -> torch.Tensor:
        """The strategy's loss on the micro-batch's rows of non-zero weight: only those are forwarded."""
        weights = inputs["advantages"]
        rows = torch.nonzero(weights != 0).flatten()
        if rows.numel() == 0:
            if not self._every_micro_step_forwards():
                return torch.zeros((), device=self.accelerator.device, requires_grad=True)
            # DDP all-reduces inside backward and DeepSpeed counts backward calls: this process must take part, with a
            # loss that touches every parameter and moves none (one row, weight 0).
            rows = torch.zeros(1, dtype=torch.long, device=weights.device)
            weights = torch.zeros_like(weights)
        completion_mask = inputs["completion_mask"][rows]
        # Completions are right-padded: columns after the longest kept completion change no kept token's log-prob.
        filled = completion_mask.any(dim=0).nonzero()
        width = int(filled.max()) + 1 if filled.numel() else 1
        completion_ids, completion_mask = inputs["completion_ids"][rows, :width], completion_mask[:, :width]
        input_ids = torch.cat([inputs["prompt_ids"][rows], completion_ids], dim=1)
        attention_mask = torch.cat([inputs["prompt_mask"][rows], completion_mask], dim=1)
        per_token_logps, _, _ = self._get_per_token_logps_and_entropies(model, input_ids, attention_mask, width)
        return self.strategy.loss(per_token_logps, completion_mask, weights[rows], inputs["loss_normaliser"])

    def _every_micro_step_forwards(self) -> bool:
        """Whether each process must run a forward/backward on every micro-step (gradient sync, DeepSpeed, FSDP)."""
        return self.accelerator.num_processes > 1 or self.is_deepspeed_enabled or self.is_fsdp_enabled

    # ------------------------------------------------------------------------------------------ rounds and logging
    def _open_round(self, rewards: torch.Tensor, weights: torch.Tensor, scored: ScoredSelfEdits,
                    elapsed: float) -> None:
        """Log the round just scored (`rewards` and `weights` of all processes, `scored` of this one)."""
        rewards = rewards.float().cpu()
        kept = weights.cpu() > 0
        invalid = [reason for batch in gather_object([scored.invalid]) for _, reason in batch]
        finite = rewards[~torch.isnan(rewards)]
        num_contexts = rewards.numel() // self.num_generations
        record = {
            "round": self._round,
            "global_step": self.state.global_step,
            "num_contexts": num_contexts,
            "num_self_edits": rewards.numel(),
            "reward_mean": finite.mean().item() if finite.numel() else math.nan,
            "reward_max": finite.max().item() if finite.numel() else math.nan,
            "kept_self_edits": int(kept.sum()),
            "kept_fraction": kept.view(-1, self.num_generations).any(dim=1).float().mean().item(),
            "invalid_fraction": len(invalid) / max(1, rewards.numel()),
            "invalid": dict(Counter(invalid)),
            "reused_from_ledger": int(gather(torch.tensor([float(self._round_ledger_hits)],
                                                          device=self.accelerator.device)).sum().item()),
            "time_inner_loop": self._gather_max(self._scoring_time),
            "time_generation": self._gather_max(elapsed - self._scoring_time),
            "time_update": 0.0,
        }
        self._round_ledger_hits = 0
        for key in ("reward_mean", "reward_max", "kept_fraction", "invalid_fraction", "reused_from_ledger",
                    "time_inner_loop"):
            self._metrics["train"][f"seal/{key}"].append(record[key])
        self._metrics["train"]["seal/time_generation"].append(record["time_generation"])
        self._metrics["train"]["seal/round"].append(float(self._round))
        for reason, count in record["invalid"].items():
            self._metrics["train"][f"seal/invalid/{reason}"].append(float(count))
        self._write_self_edits(rewards, kept, scored)
        self._round_record = record
        self._round += 1

    def _close_round(self) -> None:
        """Finish the previous round's record with its update time and append it to `seal_rounds.jsonl`."""
        if self._round_record is None:
            return
        record, self._round_record = self._round_record, None
        record["time_update"], self._update_time = self._update_time, 0.0
        self._metrics["train"]["seal/time_update"].append(record["time_update"])
        if self.accelerator.is_main_process:
            append_jsonl(os.path.join(self.args.output_dir, "seal_rounds.jsonl"), [record])

    def _write_self_edits(self, rewards: torch.Tensor, kept: torch.Tensor, scored: ScoredSelfEdits) -> None:
        prompts = gather_object(scored.prompts)
        completions = gather_object(scored.completions)
        reasons = gather_object(_reasons_by_index(scored.invalid, len(scored.completions)))
        if not self.accelerator.is_main_process:
            return
        rows = [
            {
                "round": self._round,
                "context": index // self.num_generations,
                "prompt": prompt,
                "self_edit": completion,
                "reward": None if math.isnan(reward) else reward,
                "kept": bool(keep),
                "reason": reason,
            }
            for index, (prompt, completion, reward, keep, reason) in enumerate(
                zip(prompts, completions, rewards.tolist(), kept.tolist(), reasons, strict=True)
            )
        ]
        append_jsonl(os.path.join(self.args.output_dir, "self_edits.jsonl"), rows)

    def _gather_max(self, seconds: float) -> float:
        device = self.accelerator.device
        return gather(torch.tensor([seconds], device=device)).max().item()

    def training_step(self, model, inputs, num_items_in_batch):
        start, generation_before = time.perf_counter(), self._generation_time_total
        loss = super().training_step(model, inputs, num_items_in_batch)
        self._update_time += time.perf_counter() - start - (self._generation_time_total - generation_before)
        return loss

    def train(self, resume_from_checkpoint: str | bool | None = None, **kwargs):
        """TRL's `train`, plus SEAL state: `resume_from_checkpoint=True` picks the last *complete* checkpoint (one
        whose `seal_state.json` was written), checks it was made under the same settings, restores the round, and
        reuses every reward already in the ledger; a fresh run in the same output_dir reuses the ledger too."""
        checkpoint = self._resolve_checkpoint(resume_from_checkpoint)
        self._round = self._restore_seal_state(checkpoint) if checkpoint is not None else 0
        output_dir = self.args.output_dir
        if self.accelerator.is_main_process:
            os.makedirs(output_dir, exist_ok=True)
            write_json_atomically(os.path.join(output_dir, "seal_config.json"), self.args.to_dict())
            for name in ("self_edits.jsonl", "seal_rounds.jsonl"):  # rows of rounds about to be redone
                keep_rounds_before(os.path.join(output_dir, name), self._round)
            self._ledger = Ledger(output_dir, 0, self._ledger_fingerprint())
        self.accelerator.wait_for_everyone()
        if not self.accelerator.is_main_process:
            self._ledger = Ledger(output_dir, self.accelerator.process_index, self._ledger_fingerprint(), False)
        if self._ledger.entries:
            logger.info("Ledger in %s holds %d scored self-edits: they will not be trained again.",
                        self._ledger.folder, len(self._ledger.entries))
        self._log_round_layout()
        output = super().train(resume_from_checkpoint=checkpoint, **kwargs)
        self._close_round()
        return output

    def _log_round_layout(self) -> None:
        args = self.args
        logger.info(
            "SEAL: %d rounds of %d self-edits; each process trains a round in %d micro-batches of %d x %d passes, "
            "gradient_accumulation_steps=%d (derived unless set) -> %d optimizer steps per round, %d in all.",
            args.num_rounds, args.generation_batch_size, args.steps_per_generation, args.per_device_train_batch_size,
            args.num_iterations, args.gradient_accumulation_steps, args.optimizer_steps_per_round, args.max_steps,
        )

    def _resolve_checkpoint(self, resume_from_checkpoint: str | bool | None) -> str | None:
        if resume_from_checkpoint in (None, False):
            return None
        if resume_from_checkpoint is True:
            checkpoint = last_complete_checkpoint(self.args.output_dir)
            if checkpoint is None:
                logger.info("No complete checkpoint in %s: starting at round 0 (the ledger's rewards are reused).",
                            self.args.output_dir)
            return checkpoint
        return str(resume_from_checkpoint)

    def _restore_seal_state(self, checkpoint: str) -> int:
        state = read_seal_state(checkpoint)
        check_resumable(state, self.args.to_dict(), __version__, checkpoint)
        self._restarts = int(state["restarts"])
        if self.strategy.restart_each_round:
            from safetensors.torch import load_file

            self._initial_trainable = load_file(os.path.join(checkpoint, INITIAL_POLICY))
        return int(state["round"])

    def _save_checkpoint(self, model, trial) -> None:
        self._close_round()  # the round is over: its record goes out before the checkpoint that follows it
        super()._save_checkpoint(model, trial)
        if not self.accelerator.is_main_process:
            return
        checkpoint = os.path.join(self._get_output_dir(trial=trial), f"checkpoint-{self.state.global_step}")
        if self._initial_trainable is not None:
            from safetensors.torch import save_file

            save_file({k: v.contiguous() for k, v in self._initial_trainable.items()},
                      os.path.join(checkpoint, INITIAL_POLICY))
        write_seal_state(checkpoint, {  # written last: a checkpoint without it was cut short
            "round": self._round, "restarts": self._restarts, "global_step": self.state.global_step,
            "ledger_entries": len(self._ledger.entries) if self._ledger is not None else 0,
            "trl_seal_version": __version__, "config": self.args.to_dict(),
        })

    def _ledger_fingerprint(self) -> dict[str, Any]:
        """What decides a self-edit's reward besides its text: a ledger made under other values is refused."""
        args = self.args
        policy = self.accelerator.unwrap_model(self.model)
        fields = ("seed", "num_generations", "contexts_per_round", "temperature", "top_p", "top_k", "min_p",
                  "repetition_penalty", "max_completion_length", "seeded_sampling", "generation_kwargs")
        return {
            **{name: getattr(args, name, None) for name in fields},
            "model": getattr(getattr(policy, "config", None), "_name_or_path", None),
            "reward": scalar_settings(self.seal_reward_fn),
            "inner_adapter": scalar_settings(self.inner_adapter),
            "trl_seal_version": __version__,
            **self._fastest_dtype_chosen(),
        }

    def _fastest_dtype_chosen(self) -> dict[str, str]:
        """`{"inner_dtype_resolved": ...}` when the inner adapter's dtype is "fastest": bfloat16 on one host, float32
        on another, so a ledger begun on one is not finished in another precision on the other."""
        config = getattr(self.inner_adapter, "config", None)
        if getattr(config, "dtype", None) != FASTEST:
            return {}
        return {"inner_dtype_resolved": config.chosen_dtype_name(self.accelerator.device)}

    # -------------------------------------------------------------------------------- original ReST-EM restarts
    def _snapshot_trainable(self) -> dict[str, torch.Tensor]:
        if self.is_deepspeed_enabled:
            raise ValueError(
                "restart_each_round=True is not supported with DeepSpeed (its optimizer keeps its own master "
                "weights). Use restart_each_round=False (SEAL's default) or train without DeepSpeed."
            )
        policy = self.accelerator.unwrap_model(self.model)
        return {n: p.detach().cpu().clone() for n, p in policy.named_parameters() if p.requires_grad}

    @torch.no_grad()
    def _restore_initial_policy(self) -> None:
        policy = self.accelerator.unwrap_model(self.model)
        for name, param in policy.named_parameters():
            if name in self._initial_trainable:
                param.copy_(self._initial_trainable[name].to(param.device))
        if self.optimizer is not None:
            getattr(self.optimizer, "optimizer", self.optimizer).state.clear()
        self._restarts += 1


def strategy_from_config(args: SEALConfig) -> OuterStrategy:
    """The outer strategy named by `args.strategy`, with the ReST-EM options of the config."""
    if args.strategy == "policy_gradient":
        return PolicyGradient()
    return RestEM(args.reward_threshold, args.keep_all_above_threshold, args.restart_each_round)


def _select(value, indices: list[int], count: int):
    """The entries of a per-completion column at `indices`; anything else (trainer_state, log_extra...) unchanged."""
    if isinstance(value, (list, tuple)) and len(value) == count:
        return [value[i] for i in indices]
    return value


def _reasons_by_index(invalid: list[tuple[int, str]], size: int) -> list[str | None]:
    reasons: list[str | None] = [None] * size
    for index, reason in invalid:
        if 0 <= index < size:
            reasons[index] = reason
    return reasons
