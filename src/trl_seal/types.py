"""Protocols and records shared by the SEAL trainer, inner adapters, rewards and outer-loop strategies.

A *self-edit* is text the policy writes for one context (a passage, a few-shot task). An `InnerAdapter` turns the
training examples a domain derives from that self-edit into a temporarily adapted model; a `RewardFn` scores each
self-edit by evaluating the adapted model; an `OuterStrategy` turns the rewards into a policy update (ReST-EM by
default). Every plug-in point is a `typing.Protocol`: any object with the right methods works.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Hashable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    import torch
    from torch import nn


@dataclass(frozen=True)
class TrainingExample:
    """One inner-loop training document: `prompt` tokens are context only (masked out of the loss), `completion`
    tokens are trained on. A plain document is `TrainingExample(prompt="", completion=text)`."""

    completion: str
    prompt: str = ""


@dataclass
class InnerJob:
    """What one self-edit asks the inner loop to do.

    `learning_rate` and `num_epochs` override the adapter's defaults when set (ARC self-edits choose their own);
    `seed` fixes the LoRA initialisation and the order of the examples, so a job trained twice gives the same
    adapter. `tag` is free for the caller (e.g. the completion index)."""

    examples: Sequence[TrainingExample]
    learning_rate: float | None = None
    num_epochs: int | None = None
    seed: int = 0
    tag: Any = None


@dataclass
class AdaptedModel:
    """A model adapted on one `InnerJob`, valid until the adapter's generator is resumed.

    `failure` is a short machine-readable reason (e.g. `"nan_loss"`, `"no_training_tokens"`) when the inner loop did
    not produce a usable adapter; the model then holds the base weights and the reward must be 0."""

    job_index: int
    model: nn.Module
    tokenizer: Any
    losses: list[float] = field(default_factory=list)
    num_steps: int = 0
    num_tokens: int = 0
    failure: str | None = None


@dataclass
class AdaptedGroup:
    """Adapted models trained together and valid together, until the adapter's generator is resumed.

    `routed(member_of_row)` is a context manager giving a model whose batch row `i` runs with the adapter of
    `members[member_of_row[i]]`: one batched `generate` evaluates every member at once. Members whose `failure` is set
    must not be routed to (their reward is 0).

    Example:
    ```python
    >>> for group in adapted_groups(adapter, jobs):
    ...     ok = [i for i, member in enumerate(group.members) if member.failure is None]
    ...     with group.routed(ok) as model:
    ...         outputs = model.generate(**tokenizer(prompts_for(ok), return_tensors="pt", padding=True))
    ```
    """

    members: list[AdaptedModel]
    tokenizer: Any
    routed: Callable[[Sequence[int]], AbstractContextManager[nn.Module]]


def adapted_groups(adapter: InnerAdapter, jobs: Sequence[InnerJob]) -> Iterator[AdaptedGroup]:
    """The adapter's `adapt_groups(jobs)` when it has one (batched), else each `adapt` result as a group of one."""
    if hasattr(adapter, "adapt_groups"):
        yield from adapter.adapt_groups(jobs)
        return
    for adapted in adapter.adapt(jobs):
        yield AdaptedGroup([adapted], adapted.tokenizer, _single_route(adapted))


def _single_route(adapted: AdaptedModel) -> Callable[[Sequence[int]], AbstractContextManager[nn.Module]]:
    def routed(member_of_row: Sequence[int]) -> AbstractContextManager[nn.Module]:
        if any(member != 0 for member in member_of_row):
            raise IndexError(f"A group of one has only member 0, got rows routed to {sorted(set(member_of_row))}.")
        return contextlib.nullcontext(adapted.model)

    return routed


def completion_text(completion) -> str:
    """The text of a completion: a string, or the content of the last message of a conversational completion.

    Model output is data: anything that is not text becomes "", and unpaired surrogates (which no tokenizer or UTF-8
    file accepts) become U+FFFD."""
    text = ""
    if isinstance(completion, str):
        text = completion
    elif isinstance(completion, list) and completion and isinstance(completion[-1], dict):
        content = completion[-1].get("content", "")
        text = content if isinstance(content, str) else ""
    return text.encode("utf-8", errors="surrogatepass").decode("utf-8", errors="replace")


@dataclass
class SelfEdit:
    """A scored self-edit, as logged and kept by the outer loop."""

    context_index: int
    prompt: Any
    text: str
    reward: float | None
    round: int
    kept: bool = False
    reason: str | None = None


@runtime_checkable
class InnerAdapter(Protocol):
    """Applies self-edits to a resident copy of the policy and restores the base weights exactly afterwards.

    `tokenizer` is the policy's tokenizer (set by `sync`); `version` changes whenever the resident copy changes, so
    rewards can cache un-adapted results per version."""

    tokenizer: Any
    version: Hashable

    def sync(self, policy: nn.Module, tokenizer: Any, version: Hashable | None = None) -> None:
        """Make the resident copy equal to `policy`. A call with the `version` of the last sync is free."""

    def adapt(self, jobs: Sequence[InnerJob]) -> Iterator[AdaptedModel]:
        """Train on each job and yield the adapted model; the base is restored when the generator resumes.

        An adapter that trains several jobs at once also offers `adapt_groups(jobs) -> Iterator[AdaptedGroup]`
        (optional; rewards call `adapted_groups(adapter, jobs)`, which falls back to `adapt`)."""

    def base_model(self) -> AbstractContextManager[nn.Module]:
        """The un-adapted resident copy, for the baseline evaluation."""


@runtime_checkable
class RewardFn(Protocol):
    """TRL's reward-function convention, batched over a whole generation batch.

    Called with keyword arguments: `prompts`, `completions`, `completion_ids`, every other dataset column as a list
    (one entry per completion), and, from `SEALTrainer`, `inner_adapter` (synced to the current policy) and
    `record_invalid(index, reason)` for self-edits that got reward 0 because they were unusable, and
    `self_edit_seeds` (one int per completion, from the run seed, the round and the self-edit's index in the round:
    the same on any number of processes; use it to seed the inner loop). Returns one float
    (or None, "not scored") per completion. A reward function that raises is a bug and stops training. An optional
    `check_dataset(dataset)` method is called by `SEALTrainer` before anything is trained, to reject bad rows early.
    """

    def __call__(self, *, prompts: list, completions: list, **kwargs: Any) -> list[float | None]: ...


@runtime_checkable
class OuterStrategy(Protocol):
    """Turns a round's rewards into a policy update.

    `completion_weights` receives the rewards of one generation batch shaped `(num_contexts, k)` (NaN where a
    reward function returned None) and returns a tensor of the same shape: the weight of each self-edit in the update
    (GRPO's `advantages`). `restart_each_round` resets the policy to its initial weights after each round is scored
    (original ReST-EM).

    With `uses_grpo_loss` the update is `GRPOTrainer`'s own loss on those advantages (clipping, KL and `loss_type`
    from the config). Otherwise the trainer forwards only the self-edits whose weight is non-zero (a self-edit of
    weight 0 must contribute nothing) and calls `loss` once per micro-batch with what it computed:

    - `per_token_logps` `(rows, tokens)`: log-probabilities of the completion tokens under the policy, with grad;
    - `completion_mask` `(rows, tokens)`: 1 for real completion tokens, 0 for padding;
    - `weights` `(rows,)`: the rows' completion weights;
    - `normaliser` (0-d): the round's weighted completion tokens (all processes) per optimizer step and process;
      dividing a sum over tokens by it makes one pass average over the round's tokens, however rows are split.

    Example:
    ```python
    >>> import torch
    >>> from trl_seal import RestEM
    >>> logps, mask = torch.tensor([[-1.0, -2.0]]), torch.ones(1, 2)
    >>> RestEM().loss(logps, mask, weights=torch.ones(1), normaliser=torch.tensor(2.0))
    tensor(1.5000)
    ```
    """

    restart_each_round: bool
    uses_grpo_loss: bool

    def completion_weights(self, rewards: torch.Tensor) -> torch.Tensor: ...

    def loss(
        self, per_token_logps: torch.Tensor, completion_mask: torch.Tensor, weights: torch.Tensor,
        normaliser: torch.Tensor,
    ) -> torch.Tensor: ...
