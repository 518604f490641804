"""`InnerLoopReward`: what every SEAL reward does around its domain logic.

A SEAL reward turns each self-edit into inner-loop jobs, lets the inner adapter train them, scores the adapted
models and gives unusable self-edits 0 with a reason. Only two steps depend on the domain: "self-edit -> inner jobs"
(`jobs_for`) and "adapted group -> scores" (`score_group`). `InnerLoopReward` owns the rest: the inner adapter
(argument or attribute), the dataset columns it reads, the self-edit seeds, the reasons, the loop over adapted
groups, the progress bar and how the scores of a self-edit's jobs combine into its reward.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .types import AdaptedGroup, InnerJob, adapted_groups, completion_text


@dataclass
class Member:
    """One usable adapted model of a group, as `score_group` sees it.

    `slot` is its position in `group.members` (what `group.routed` takes), `index` the self-edit's position in the
    batch, `context` what `contexts` gave for that self-edit (a row of the dataset columns by default), `job` the
    job it was trained on."""

    slot: int
    index: int
    context: Any
    job: InnerJob


class InnerLoopReward:
    """Base class of SEAL rewards: a domain writes `jobs_for` and `score_group`, this class does the rest.

    Called like any TRL reward function (`prompts`, `completions`, the dataset columns, and from `SEALTrainer` the
    `inner_adapter`, `record_invalid` and `self_edit_seeds`). For each completion:

    1. `contexts(columns, count)` gives one context per completion (default: a dict of the `columns` it reads);
    2. `jobs_for(text, context, seed, adapter)` returns an `InnerJob`, a list of them (e.g. one self-edit trained
       with several seeds), or a reason string: the self-edit is unusable and gets 0 with that reason (an empty
       list counts as `no_inner_jobs`);
    3. the inner adapter trains every job; adapted groups come back together, and `score_group(group, members,
       adapter)` scores the usable members (one float each). A member whose inner loop failed gives its self-edit
       0 and the failure as reason;
    4. `combine(scores)` turns the scores of a self-edit's jobs into its reward (default: their mean).

    Subclasses set `__name__` (the reward's name in logs) and `columns` (the dataset columns they read;
    `check_dataset` rejects a dataset without them, naming `dataset_builder`, the function that builds a valid one).
    The class attributes `inner_adapter = None` and `show_progress = True` are the defaults, so a subclass need not
    call `super().__init__`.

    Example:
    ```python
    >>> class LengthReward(InnerLoopReward):
    ...     __name__, columns = "length", ("target",)
    ...
    ...     def jobs_for(self, text, context, seed, adapter):
    ...         return InnerJob([TrainingExample(text)], seed=seed) if text.strip() else "empty_self_edit"
    ...
    ...     def score_group(self, group, members, adapter):
    ...         return [float(len(m.job.examples[0].completion) == m.context["target"]) for m in members]
    >>> LengthReward(inner_adapter=adapter)(prompts=["p", "p"], completions=["abc", ""], target=[3, 3])
    [1.0, 0.0]
    ```
    """

    __name__ = "inner_loop_reward"
    columns: tuple[str, ...] = ()
    dataset_builder = ""
    progress_description = "inner loops"
    inner_adapter: Any = None
    show_progress: bool = True

    def __init__(self, inner_adapter: Any = None, show_progress: bool = True):
        self.inner_adapter = inner_adapter
        self.show_progress = show_progress

    # ------------------------------------------------------------------------------------------ domain hooks
    def contexts(self, columns: dict[str, list], count: int) -> Sequence[Any]:
        """One context for each of the `count` completions; by default its row `{column: value}` of the columns the
        reward reads (`columns` holds exactly those, one list each)."""
        return [{name: values[index] for name, values in columns.items()} for index in range(count)]

    def jobs_for(self, text: str, context: Any, seed: int, adapter: Any) -> InnerJob | Sequence[InnerJob] | str:
        """The inner-loop job(s) for one self-edit, or the reason it cannot be trained (its reward is then 0)."""
        raise NotImplementedError(f"{type(self).__name__} must implement jobs_for(text, context, seed, adapter).")

    def score_group(self, group: AdaptedGroup, members: Sequence[Member], adapter: Any) -> Sequence[float]:
        """One score per usable member of an adapted group (evaluate them together through `group.routed`)."""
        raise NotImplementedError(f"{type(self).__name__} must implement score_group(group, members, adapter).")

    def combine(self, scores: Sequence[float]) -> float:
        """A self-edit's reward from the scores of its jobs (in job order): their mean."""
        return sum(scores) / len(scores)

    # ------------------------------------------------------------------------------------------ the common part
    def resolve_adapter(self, inner_adapter: Any = None) -> Any:
        """The inner adapter passed to the call, else `self.inner_adapter`; a clear error when there is neither."""
        adapter = inner_adapter if inner_adapter is not None else self.inner_adapter
        if adapter is None:
            raise ValueError(f"{type(self).__name__} needs an inner adapter: pass inner_adapter= to the call or the "
                             "constructor (SEALTrainer passes it).")
        return adapter

    def check_dataset(self, dataset) -> None:
        """Fail before training when the dataset lacks a column the reward reads (`SEALTrainer` calls this first).

        Subclasses that can check the rows themselves extend it."""
        missing = [name for name in self.columns if name not in dataset.column_names]
        if missing:
            hint = f"; build it with {self.dataset_builder}" if self.dataset_builder else ""
            raise ValueError(f"train_dataset lacks the columns {missing} that {type(self).__name__} reads{hint}.")

    def __call__(self, prompts, completions, inner_adapter=None, record_invalid=None, self_edit_seeds=None, **kwargs):
        adapter = self.resolve_adapter(inner_adapter)
        missing = [name for name in self.columns if name not in kwargs]
        if missing:
            raise ValueError(f"{type(self).__name__} reads the dataset columns {list(self.columns)}, the call lacks "
                             f"{missing}: pass every column as a keyword argument (TRL and SEALTrainer do).")
        texts = [completion_text(completion) for completion in completions]
        contexts = self.contexts({name: kwargs[name] for name in self.columns}, len(texts))
        return self.score_self_edits(adapter, texts, contexts, self_edit_seeds, record_invalid)

    def score_self_edits(
        self, adapter, texts: Sequence[str], contexts: Sequence[Any], seeds: Sequence[int] | None = None,
        record_invalid=None,
    ) -> list[float]:
        """Rewards of self-edit `texts` given their contexts (the call without the column plumbing).

        `seeds` (one per self-edit, default: its index) seed the inner loop; `record_invalid(index, reason)` hears
        about every self-edit that gets 0 because it was unusable or its inner loop failed."""
        record = record_invalid or (lambda index, reason: None)
        seeds = list(range(len(texts))) if seeds is None else list(seeds)
        jobs, owners = self._plan_jobs(adapter, texts, contexts, seeds, record)
        scores, failed = self._train_and_score(adapter, jobs, owners, contexts, record)
        rewards = [0.0] * len(texts)
        for index, scored in scores.items():
            if index not in failed:
                rewards[index] = self.combine([score for _, score in sorted(scored)])
        return rewards

    def _plan_jobs(self, adapter, texts, contexts, seeds, record) -> tuple[list[InnerJob], list[int]]:
        """Every job of every usable self-edit (tagged with its index), and the self-edit each job belongs to."""
        jobs, owners = [], []
        for index, (text, context) in enumerate(zip(texts, contexts, strict=True)):
            planned = self.jobs_for(text, context, seeds[index], adapter)
            planned = [planned] if isinstance(planned, InnerJob) else planned
            if isinstance(planned, str) or not planned:
                record(index, planned or "no_inner_jobs")
                continue
            for job in planned:
                jobs.append(dataclasses.replace(job, tag=index))
                owners.append(index)
        return jobs, owners

    def _train_and_score(self, adapter, jobs, owners, contexts, record) -> tuple[dict[int, list], set[int]]:
        """`(job index, score)` pairs per self-edit, and the self-edits one of whose inner loops failed."""
        scores: dict[int, list[tuple[int, float]]] = {}
        failed: set[int] = set()
        progress = self._progress_bar(len(jobs))
        for group in adapted_groups(adapter, jobs):
            progress.update(len(group.members))
            usable = []
            for slot, adapted in enumerate(group.members):
                index = owners[adapted.job_index]
                if adapted.failure is None:
                    usable.append((adapted.job_index, Member(slot, index, contexts[index], jobs[adapted.job_index])))
                elif index not in failed:  # one reason per self-edit, however many of its jobs fail
                    failed.add(index)
                    record(index, adapted.failure)
            group_scores = self.score_group(group, [member for _, member in usable], adapter) if usable else []
            for (job_index, member), score in zip(usable, group_scores, strict=True):
                scores.setdefault(member.index, []).append((job_index, float(score)))
        progress.close()
        return scores, failed

    def _progress_bar(self, total: int):
        from tqdm.auto import tqdm

        return tqdm(total=total, desc=self.progress_description, unit="job", leave=False,
                    disable=not self.show_progress or total == 0)
