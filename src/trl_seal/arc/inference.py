"""Augmented inference: predict a test output under several invertible views, invert each answer, vote.

For every test input and every view (by default the 8 symmetries of the square), the model sees the task's
demonstrations and the test input transformed by the view, answers greedily, and the decoded answer is mapped back
by the view's inverse. The grids that come back most often are the attempts (2, as in ARC's scoring); the test
output is solved if the gold grid is among them. Unparseable answers get no vote.

Rows of many models go through one batched `generate`: `model_for_rows(member_of_row)` gives a model whose batch
row `i` runs with adapter `member_of_row[i]` (an `AdaptedGroup.routed`, or one plain model for all rows).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass

import numpy as np

from ..generation import generate_batched
from .augment import INFERENCE_VIEWS
from .data import ARCTask
from .grids import answer_length_bound, few_shot_prompt, grid_key, parse_answer


@dataclass
class Query:
    """One generation row: a view of one test input of one task, for one member of a group of models."""

    member: int
    task_index: int
    test_index: int
    view: object
    prompt: str
    max_new_tokens: int


def build_queries(tasks: Sequence[ARCTask], members: Sequence[int], views: Sequence = INFERENCE_VIEWS) -> list[Query]:
    """Rows for every (member, test input, view); `tasks[i]` is the task member `members[i]` is evaluated on."""
    queries = []
    for task_index, (task, member) in enumerate(zip(tasks, members, strict=True)):
        for test_index, (test_input, _) in enumerate(task.test):
            for view in views:
                demonstrations = [(view.forward(inp), view.forward(out)) for inp, out in task.train]
                query_input = view.forward(test_input)
                prompt = few_shot_prompt(demonstrations, query_input)
                budget = answer_length_bound(demonstrations, query_input)
                queries.append(Query(member, task_index, test_index, view, prompt, budget))
    return queries


def vote(candidates: Sequence[np.ndarray | None], num_attempts: int = 2) -> list[np.ndarray]:
    """The `num_attempts` most frequent distinct grids among `candidates` (None: no vote); ties go to the grid seen
    first, so the identity view wins a tie when it comes first.

    Example:
    ```python
    >>> a, b, c = np.array([[1]]), np.array([[2]]), np.array([[3]])
    >>> [g.item() for g in vote([c, a, b, a, None, b, a])]
    [1, 2]
    ```
    """
    counts = Counter(grid_key(grid) for grid in candidates if grid is not None)
    first_seen: dict[tuple, np.ndarray] = {}
    for grid in candidates:
        if grid is not None:
            first_seen.setdefault(grid_key(grid), grid)
    order = {key: position for position, key in enumerate(first_seen)}
    ranked = sorted(counts, key=lambda key: (-counts[key], order[key]))
    return [first_seen[key] for key in ranked[:num_attempts]]


def is_solved(attempts: Sequence[np.ndarray], gold: np.ndarray) -> bool:
    """Whether one of the attempts equals the gold grid exactly (shape and every cell)."""
    return any(attempt.shape == gold.shape and np.array_equal(attempt, gold) for attempt in attempts)


def predict_attempts(
    model_for_rows: Callable[[Sequence[int]], AbstractContextManager],
    tokenizer,
    queries: Sequence[Query],
    num_attempts: int = 2,
    batch_size: int = 32,
) -> dict[tuple[int, int, int], list[np.ndarray]]:
    """Attempts per (member, task index, test index): generate every query greedily on its member's model (raw-text
    prompts, the format the inner loop trains on; batches of similar length, each up to its longest answer bound),
    invert each parsed answer by its view, and vote."""
    texts = generate_batched(
        None, tokenizer, [query.prompt for query in queries], [query.max_new_tokens for query in queries], batch_size,
        route=lambda rows: model_for_rows([queries[index].member for index in rows]),
        row_adapters=[query.member for query in queries], eos_token_id=tokenizer.eos_token_id,
    )
    answers: dict[int, np.ndarray | None] = {}
    for index, text in enumerate(texts):
        grid = parse_answer(text)
        answers[index] = None if grid is None else queries[index].view.inverse(grid)
    candidates: dict[tuple[int, int, int], list] = {}
    for index, query in enumerate(queries):  # vote in view order, so ties go to the earlier view
        candidates.setdefault((query.member, query.task_index, query.test_index), []).append(answers[index])
    return {key: vote(grids, num_attempts) for key, grids in candidates.items()}


def task_solved(attempts: dict[tuple[int, int, int], list[np.ndarray]], member: int, task_index: int,
                task: ARCTask) -> bool:
    """A task counts as solved when every one of its test outputs is among its attempts."""
    return all(is_solved(attempts.get((member, task_index, test_index), []), gold)
               for test_index, (_, gold) in enumerate(task.test))
