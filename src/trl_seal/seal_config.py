"""`SEALConfig`: every knob of a SEAL run, as a `GRPOConfig` with the paper's defaults.

Defaults quote SEAL (Zweiger et al., 2025, arXiv 2506.10943), knowledge-incorporation setting: 50 contexts x 5
self-edits per ReST-EM round, 2 rounds, policy SFT at lr 3e-4 for 2 epochs, sampling at temperature 1.0, top_p 0.95.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from trl import GRPOConfig

STRATEGIES = ("rest_em", "policy_gradient")
# Fields of TrainingArguments/GRPOConfig that SEALConfig derives from the SEAL fields (or that SEAL does not use):
# setting one is refused with the field to use instead. A command-line parser may hide them from --help.
DERIVED_FIELDS = ("max_steps", "num_train_epochs", "generation_batch_size", "steps_per_generation")
# An optimizer step should see several kept self-edits: ~25 self-edits per device is ~5 kept at ReST-EM's 1 in k=5.
SELF_EDITS_PER_OPTIMIZER_STEP = 25
# Seeded self-edit sampling on a CPU: rows per `generate` call (as `generate_batched` answers questions).
CPU_GENERATION_CHUNK = 32


@dataclass
class SEALConfig(GRPOConfig):
    r"""
    Configuration class for [`SEALTrainer`].

    Everything of [`~trl.GRPOConfig`] applies (generation, logging, saving, DeepSpeed, vLLM); the fields below add the
    SEAL outer loop. A ReST-EM *round* is one generation batch of `contexts_per_round` contexts x `num_generations`
    self-edits, scored by the inner loop and then reused for `num_iterations` passes of the policy update. SEALConfig
    derives the run's length and the round's layout from the SEAL fields: `max_steps`, `num_train_epochs`,
    `generation_batch_size` and `steps_per_generation` must not be set, and `gradient_accumulation_steps` is derived
    when left unset (the largest divisor of a pass's micro-batches giving at most ~25 self-edits per optimizer step
    and device, so that a step never straddles two passes or rounds).

    Example:
    ```python
    >>> from trl_seal import SEALConfig
    >>> args = SEALConfig(output_dir="seal-out", num_rounds=2, contexts_per_round=50, num_generations=5)
    >>> args.gradient_accumulation_steps  # 50 micro-batches of 5 self-edits per pass: steps of 5 x 5 self-edits
    5
    >>> args.max_steps  # 2 rounds x 50 micro-batches x 2 passes / 5 accumulation steps
    40
    ```
    """

    # SEAL outer loop
    num_rounds: int = field(
        default=2,
        metadata={
            "help": "Number of ReST-EM rounds (generate, score, update). The paper runs 2 for knowledge, 1 for ARC."
        },
    )
    contexts_per_round: int = field(
        default=50,
        metadata={"help": "Contexts (passages, tasks) per round, across all processes. The paper uses 50 passages."},
    )
    strategy: str = field(
        default="rest_em",
        metadata={
            "help": "Outer update: 'rest_em' (keep the best rewarded self-edit per context, SFT on it) or "
            "'policy_gradient' (TRL's GRPO loss on group-normalised rewards).",
            "choices": list(STRATEGIES),
        },
    )
    reward_threshold: float = field(
        default=0.0,
        metadata={
            "help": "ReST-EM keeps a self-edit only if its reward is strictly above this. With rewards measured as "
            "the gain over the un-adapted model, 0.0 keeps self-edits that helped."
        },
    )
    keep_all_above_threshold: bool = field(
        default=False,
        metadata={"help": "ReST-EM: keep every self-edit above the threshold, not only the best one per context."},
    )
    restart_each_round: bool = field(
        default=False,
        metadata={
            "help": "ReST-EM: reset the policy to its initial weights after each round is scored, as original ReST-EM "
            "does. SEAL (default) continues from the last round's policy."
        },
    )
    free_inner_copy_during_update: bool = field(
        default=False,
        metadata={
            "help": "Free the inner adapter's resident copy of the policy once a round's self-edits are scored, so "
            "that the policy update does not hold it (bf16 SmolLM2-135M: 0.27 GB; a bf16 7B model: 15 GB); the next "
            "round's sync builds it again (seconds at 135M). Needs an inner adapter with `unload()`, as both LoRA "
            "adapters have. The CPU knowledge demo turns it on to stay under 4 GiB."
        },
    )
    seeded_sampling: bool = field(
        default=True,
        metadata={
            "help": "Sample self-edit i of round r from its own random stream seeded by (seed, r, i), so a run gives "
            "the same self-edits on 1 or N processes and when a round is regenerated after a resume. Applies to "
            "transformers generation (not vLLM). False: TRL's per-process stream."
        },
    )
    generation_chunk_size: int | None = field(
        default=None,
        metadata={
            "help": "Self-edits per `generate` call of the seeded sampler, rows sorted by prompt length so that each "
            "call pads little. None: on an accelerator all of a process's self-edits of a round at once (as TRL "
            f"does); on a CPU {CPU_GENERATION_CHUNK}, to bound the KV cache, which grows with the batch (sampling "
            "200 self-edits of SmolLM2-135M in one call, `top` showed 9.5 GiB RSS). Every self-edit draws from its "
            "own seeded stream, so the chunking changes the self-edits only through rounding."
        },
    )
    scoring_chunk_size: int | None = field(
        default=32,
        metadata={
            "help": "Self-edits per reward-function call. Each chunk's rewards go to the ledger as soon as it is "
            "scored, so a crash loses at most one chunk of inner loops; larger chunks batch more inner loops "
            "together. None: all of a process's self-edits of a round in one call."
        },
    )

    # Parameters whose defaults differ from GRPOConfig (values from the paper where it gives them)
    save_steps: float = field(
        default=0,
        metadata={
            "help": "Checkpoint every this many optimizer steps (save_strategy='steps'); must be a multiple of a "
            "round's optimizer steps, since a resumed round restarts at its beginning. 0 (default): every round."
        },
    )
    num_generations: int | None = field(
        default=5, metadata={"help": "Self-edits sampled per context (paper: 5 for knowledge, 15 for ARC)."}
    )
    num_iterations: int = field(
        default=2, metadata={"help": "Passes of the policy update over each round's self-edits (paper: 2 epochs)."}
    )
    learning_rate: float = field(default=3e-4, metadata={"help": "Policy learning rate (paper ReST-EM SFT: 3e-4)."})
    top_p: float = field(default=0.95, metadata={"help": "Nucleus sampling of self-edits (paper: 0.95)."})
    per_device_train_batch_size: int = field(
        default=5, metadata={"help": "Completions per micro-batch of the policy update, per device."}
    )
    gradient_accumulation_steps: int | None = field(
        default=None,
        metadata={
            "help": "Micro-batches per policy optimizer step; must divide a pass's micro-batches x num_iterations. "
            "Unset (default): the largest divisor of a pass's micro-batches giving at most 25 self-edits per step "
            "and device (ReST-EM keeps about 1 in k self-edits, so a step should span several micro-batches)."
        },
    )
    num_train_epochs: float | None = field(
        default=None,
        metadata={
            "help": "Not used by SEAL (leave unset): a run lasts num_rounds rounds of num_iterations passes each."
        },
    )
    max_completion_length: int | None = field(
        default=512, metadata={"help": "Maximum self-edit length in tokens."}
    )

    def __post_init__(self):
        self._check_seal_fields()
        self._refuse_derived_fields()
        derive_accumulation = self.gradient_accumulation_steps is None
        if derive_accumulation:
            self.gradient_accumulation_steps = 1  # placeholder: a pass's micro-batches are known after GRPOConfig's
        every_round = self.save_steps in (0, None)
        if every_round:
            self.save_steps = 1  # placeholder: the round length is known after GRPOConfig's checks
        self.generation_batch_size = self.contexts_per_round * self.num_generations
        self.num_train_epochs = 0.0  # TrainingArguments compares it with 0; max_steps (below) sets the run's length
        try:
            super().__post_init__()
        except ValueError as error:
            if "generation_batch_size" not in str(error):
                raise
            raise ValueError(
                f"A round holds contexts_per_round x num_generations = {self.generation_batch_size} self-edits, "
                f"which must be divisible by per_device_train_batch_size ({self.per_device_train_batch_size}) x the "
                "number of processes. Change contexts_per_round or per_device_train_batch_size."
            ) from error
        if derive_accumulation:
            self.gradient_accumulation_steps = derived_accumulation_steps(
                self.steps_per_generation, self.per_device_train_batch_size
            )
        micro_steps_per_round = self.steps_per_generation * self.num_iterations
        if micro_steps_per_round % self.gradient_accumulation_steps != 0:
            raise ValueError(
                f"A round has {self.steps_per_generation} micro-batches x {self.num_iterations} passes = "
                f"{micro_steps_per_round} micro-steps, which gradient_accumulation_steps="
                f"{self.gradient_accumulation_steps} does not divide: an optimizer step would straddle two rounds. "
                "Choose gradient_accumulation_steps dividing that number, leave it unset (SEALConfig then derives "
                "one), or change per_device_train_batch_size."
            )
        self.max_steps = self.num_rounds * micro_steps_per_round // self.gradient_accumulation_steps
        if every_round:
            self.save_steps = self.optimizer_steps_per_round
        self._check_checkpoint_steps()

    def _refuse_derived_fields(self) -> None:
        """`DERIVED_FIELDS` set by the user: say which SEAL field to set instead."""
        if self.max_steps not in (-1, None) and self.max_steps > 0:
            raise ValueError(
                f"max_steps={self.max_steps} was set, but SEALConfig derives it from num_rounds. Set num_rounds "
                "(and contexts_per_round) instead and leave max_steps unset."
            )
        if self.num_train_epochs is not None:
            raise ValueError(
                f"num_train_epochs={self.num_train_epochs} was set, but SEAL does not run epochs over the dataset: a "
                "run is num_rounds rounds, each trained for num_iterations passes over its self-edits. Set those and "
                "leave num_train_epochs unset."
            )
        round_size = self.contexts_per_round * self.num_generations
        if self.generation_batch_size not in (None, round_size) or self.steps_per_generation is not None:
            raise ValueError(
                f"generation_batch_size={self.generation_batch_size}, "
                f"steps_per_generation={self.steps_per_generation} was set, but a SEAL round is one generation batch "
                f"of contexts_per_round x num_generations = {round_size} self-edits. Set contexts_per_round (and "
                "per_device_train_batch_size) instead."
            )
        if self.gradient_accumulation_steps is None and self.deepspeed:
            raise ValueError(
                "deepspeed= is given to SEALConfig, which resolves DeepSpeed's 'auto' values before SEAL can derive "
                "gradient_accumulation_steps. Set gradient_accumulation_steps explicitly, or pass the DeepSpeed "
                "config through `accelerate launch --config_file` (recipes/accelerate/deepspeed_zero*.yaml)."
            )

    def _check_checkpoint_steps(self) -> None:
        """Checkpoints must fall on round boundaries: a resumed round is regenerated from the round's start."""
        per_round = self.optimizer_steps_per_round
        steps = self.save_steps
        if str(self.save_strategy) in ("steps", "SaveStrategy.STEPS") and steps >= 1 and int(steps) % per_round:
            raise ValueError(
                f"save_steps={steps} is not a multiple of the {per_round} optimizer steps of a round: a checkpoint "
                "taken inside a round cannot be resumed exactly (the round's self-edits are regenerated from its "
                f"start). Use save_steps={per_round} (every round) or a multiple of it."
            )

    @property
    def optimizer_steps_per_round(self) -> int:
        return self.steps_per_generation * self.num_iterations // self.gradient_accumulation_steps

    def _check_seal_fields(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy={self.strategy!r} is unknown: use one of {STRATEGIES}.")
        if self.temperature is not None and not self.temperature > 0:
            raise ValueError(
                f"temperature={self.temperature}: self-edits are sampled, use a temperature > 0 (paper: 1.0)."
            )
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise ValueError(f"top_p={self.top_p} must be in (0, 1] (paper: 0.95).")
        if self.max_completion_length is not None and self.max_completion_length < 1:
            raise ValueError(f"max_completion_length={self.max_completion_length} must be at least 1 token.")
        if self.generation_chunk_size is not None and self.generation_chunk_size < 1:
            raise ValueError(f"generation_chunk_size={self.generation_chunk_size} must be at least 1 (or None: auto).")
        if self.scoring_chunk_size is not None and self.scoring_chunk_size < 1:
            raise ValueError(f"scoring_chunk_size={self.scoring_chunk_size} must be at least 1 (or None: one call).")
        for name in ("num_rounds", "contexts_per_round", "num_iterations"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be at least 1.")
        if self.num_generations is None or self.num_generations < 2:
            raise ValueError(
                f"num_generations={self.num_generations}: SEAL compares several self-edits per context; use >= 2 "
                "(the paper uses 5)."
            )
        if self.restart_each_round and self.strategy != "rest_em":
            raise ValueError("restart_each_round is a ReST-EM option; it needs strategy='rest_em'.")
        if self.keep_all_above_threshold and self.strategy != "rest_em":
            raise ValueError("keep_all_above_threshold is a ReST-EM option; it needs strategy='rest_em'.")


def derived_accumulation_steps(micro_batches_per_pass: int, batch_size: int) -> int:
    """The accumulation SEALConfig derives: the largest divisor of a pass's micro-batches whose optimizer step holds at
    most `SELF_EDITS_PER_OPTIMIZER_STEP` self-edits per device (at least one micro-batch). A divisor of one pass keeps
    every optimizer step inside one pass of one round: each pass gets its own steps, and a resumed round, which
    restarts at its beginning, never owes half a step.

    Example:
    ```python
    >>> derived_accumulation_steps(micro_batches_per_pass=50, batch_size=5), derived_accumulation_steps(2, 4)
    (5, 2)
    ```
    """
    limit = max(1, SELF_EDITS_PER_OPTIMIZER_STEP // batch_size)
    return max(d for d in range(1, min(limit, micro_batches_per_pass) + 1) if micro_batches_per_pass % d == 0)
