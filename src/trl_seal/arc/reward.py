"""`ARCReward`: a self-edit is worth 1 when test-time training with its configuration solves the task, else 0."""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Sequence
from typing import Any

from ..rewards import InnerLoopReward
from ..types import InnerJob
from .augment import INFERENCE_VIEWS
from .data import ARCTask, tasks_from_columns
from .inference import build_queries, predict_attempts, task_solved
from .self_edit import (
    EPOCH_RANGE,
    LEARNING_RATE_RANGE,
    InvalidSelfEdit,
    SelfEditConfig,
    parse_self_edit,
)
from .ttt import DEFAULT_MAX_EXAMPLES, optimizer_steps, training_examples

logger = logging.getLogger(__name__)


class ARCReward(InnerLoopReward):
    """Batched SEAL reward for few-shot ARC (paper §4.1).

    Each completion is parsed as a self-edit (`SelfEditConfig`); its test-time-training data (leave-one/two-out
    pseudo-tasks under the chosen augmentations) trains an adapter through the inner adapter with the self-edit's
    learning rate and epochs; the adapted model predicts every test output of the task under `views` (inverted,
    majority vote, `num_attempts` attempts). Reward 1.0 when every test output is among its attempts, else 0.0.
    Unusable self-edits get 0.0 and a reason through `record_invalid`: the parser's (`invalid_json`,
    `unknown_key`, `missing_key`, `bad_type`, `out_of_range`), `too_costly` (more than `max_steps`
    optimizer steps: not trained), `no_training_examples`, or the inner loop's failure.

    The dataset columns it reads are `task_id`, `train` and `test` (see `self_edit_dataset`). All adapted models of a
    group are evaluated in batched `generate` calls (left padding, greedy, answer length bounded by the task). The
    common part (adapter, seeds, reasons, batched groups) is `InnerLoopReward`'s; this class holds the domain.

    Args:
        max_examples (`int`, defaults to `250`): cap on training examples per self-edit (paper: 250).
        max_tokens (`int` or `None`, defaults to `2048`): examples longer than this many tokens (or than the
            adapter's `max_length`, whichever is smaller) are dropped rather than truncated.
        max_steps (`int`, defaults to `375`): cost filter on optimizer steps (paper: 375).
        train_batch_size (`int` or `None`): batch size for the step count; None reads the adapter's `batch_size`.
        num_permutations (`int`, defaults to `1`): random colour/example-order copies per augmented pseudo-task.
        views (sequence of transforms, defaults to the 8 symmetries of the square): augmented-inference views.
        num_attempts (`int`, defaults to `2`): attempts per test output (ARC's scoring).
        eval_batch_size (`int`, defaults to `32`): rows per `generate` call.
        learning_rate_range, epoch_range: the ranges a self-edit must respect.
        inner_adapter: used when the caller does not pass one (e.g. with a plain `GRPOTrainer`).
        show_progress (`bool`, defaults to `True`): a progress bar over the inner loops.

    Example:
    ```python
    >>> reward = ARCReward(max_examples=64)
    >>> reward(prompts=prompts, completions=['{"basic": true, ...}', "not json"], task_id=ids, train=demos,
    ...        test=tests, inner_adapter=adapter, record_invalid=lambda i, why: print(i, why))
    1 invalid_json
    [1.0, 0.0]
    ```
    """

    __name__ = "arc_ttt"
    columns = ("task_id", "train", "test")
    dataset_builder = "trl_seal.arc.self_edit.self_edit_dataset(tasks)"
    progress_description = "ARC inner loops"

    def __init__(
        self,
        max_examples: int = DEFAULT_MAX_EXAMPLES,
        max_tokens: int | None = 2048,
        max_steps: int = 375,
        train_batch_size: int | None = None,
        num_permutations: int = 1,
        views: Sequence = INFERENCE_VIEWS,
        num_attempts: int = 2,
        eval_batch_size: int = 32,
        learning_rate_range: tuple[float, float] = LEARNING_RATE_RANGE,
        epoch_range: tuple[int, int] = EPOCH_RANGE,
        inner_adapter: Any = None,
        show_progress: bool = True,
    ):
        for name, value in (("max_examples", max_examples), ("max_steps", max_steps), ("num_attempts", num_attempts),
                            ("eval_batch_size", eval_batch_size)):
            if value < 1:
                raise ValueError(f"ARCReward: {name}={value} must be at least 1.")
        if not views:
            raise ValueError("ARCReward: views must hold at least one transform (e.g. augment.Identity()).")
        super().__init__(inner_adapter, show_progress)
        self.max_examples, self.max_tokens, self.max_steps = max_examples, max_tokens, max_steps
        self.train_batch_size, self.num_permutations = train_batch_size, num_permutations
        self.views, self.num_attempts, self.eval_batch_size = tuple(views), num_attempts, eval_batch_size
        self.learning_rate_range, self.epoch_range = learning_rate_range, epoch_range

    def check_dataset(self, dataset) -> None:
        """Fail before training on a row whose task is unusable (ragged grids, colours outside 0-9, sides over 30)."""
        super().check_dataset(dataset)
        tasks_from_columns(dataset["task_id"], dataset["train"], dataset["test"])

    def contexts(self, columns: dict[str, list], count: int) -> list[ARCTask]:
        """The task of every completion, parsed and checked once per call."""
        return tasks_from_columns(columns["task_id"], columns["train"], columns["test"])

    def jobs_for(self, text: str, task: ARCTask, seed: int, adapter) -> InnerJob | str:
        """Parse the self-edit strictly and build its test-time-training job, or say why it cannot be trained."""
        try:
            config = parse_self_edit(text, self.learning_rate_range, self.epoch_range)
        except InvalidSelfEdit as error:
            logger.debug("invalid self-edit: %s", error)
            return error.reason
        return self.job_for_config(config, task, seed, adapter)

    def job_for_config(self, config: SelfEditConfig, task: ARCTask, seed: int, adapter) -> InnerJob | str:
        """The job of an already-parsed configuration, or `no_training_examples` / `too_costly`.

        `seed` fixes the example permutations and the LoRA initialisation."""
        batch_size = self.train_batch_size or getattr(adapter, "batch_size", 1)
        # An example longer than the adapter truncates would lose the end of its answer: drop it instead.
        max_tokens = min(self.max_tokens or math.inf, getattr(adapter, "max_length", None) or math.inf)
        max_tokens = None if max_tokens == math.inf else int(max_tokens)
        examples = training_examples(
            task.train, config.augmentation_groups, config.loss, adapter.tokenizer, self.max_examples, max_tokens,
            self.num_permutations, seed=seed,
        )
        if not examples:
            return "no_training_examples"
        if optimizer_steps(len(examples), config.num_epochs, batch_size) > self.max_steps:
            return "too_costly"
        return InnerJob(examples, config.learning_rate, config.num_epochs, seed=seed)

    def score_group(self, group, members, adapter) -> list[float]:
        """1.0 for each member that solves its task under augmented inference (all members in batched calls)."""
        solved = self._solved(group.routed, group.tokenizer, [m.context for m in members], [m.slot for m in members])
        return [float(success) for success in solved]

    def in_context_rewards(self, adapter, tasks: Sequence[ARCTask]) -> list[float]:
        """Rewards of the un-adapted model (in-context learning only), with the same augmented inference."""
        with adapter.base_model() as model:
            solved = self._solved(lambda rows: contextlib.nullcontext(model), adapter.tokenizer, tasks,
                                  [0] * len(tasks))
        return [float(success) for success in solved]

    def _solved(self, model_for_rows, tokenizer, tasks: Sequence[ARCTask], members: Sequence[int]) -> list[bool]:
        if not tasks:
            return []
        queries = build_queries(tasks, members, self.views)
        attempts = predict_attempts(model_for_rows, tokenizer, queries, self.num_attempts, self.eval_batch_size)
        return [task_solved(attempts, member, index, task) for index, (task, member) in enumerate(zip(tasks, members))]
