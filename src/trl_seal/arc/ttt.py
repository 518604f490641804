"""Test-time-training data: the pseudo-tasks a self-edit's adapter trains on.

From a task's n demonstrations we build leave-one-out pseudo-tasks (each demonstration in turn is the query, the
n-1 others are its examples) and leave-two-out ones (one more demonstration dropped from the examples). Each
pseudo-task is then seen under every transform of the chosen augmentation groups (applied to all its grids; a
pseudo-task with a grid over 30×30 is dropped) and, `num_permutations` more times, with a random colour permutation
and a random order of its examples. Duplicates are removed, the rest is shuffled and capped (paper: 250), and
examples longer than `max_tokens` are dropped.

Loss: `"output"` puts the examples and the query input in the prompt (masked out of the loss) and the query's
output in the completion; `"all"` trains on the whole text.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from itertools import combinations

from ..types import TrainingExample
from .augment import ColorPermutation, Pair, permute_examples, transform_pairs, transforms_for
from .grids import encode_grid, few_shot_prompt

DEFAULT_MAX_EXAMPLES = 250


def leave_out_pseudo_tasks(demonstrations: Sequence[Pair], max_left_out: int = 2) -> list[tuple[list[Pair], Pair]]:
    """(examples, query) pseudo-tasks: every demonstration as the query, with 1..`max_left_out` demonstrations
    left out of the examples (the query itself and up to `max_left_out - 1` others); at least one example is kept.

    Example:
    ```python
    >>> len(leave_out_pseudo_tasks(demos_of_3))  # 3 leave-one-out + 3 × 2 leave-two-out
    9
    ```
    """
    tasks = []
    indices = range(len(demonstrations))
    for query in indices:
        others = [index for index in indices if index != query]
        for extra_left_out in range(max_left_out):
            for dropped in combinations(others, extra_left_out):
                kept = [demonstrations[index] for index in others if index not in dropped]
                if kept:
                    tasks.append((kept, demonstrations[query]))
    return tasks


def pseudo_task_example(examples: Sequence[Pair], query: Pair, loss: str) -> TrainingExample:
    """One inner-loop training example; `loss="output"` masks everything but the query's output."""
    prompt = few_shot_prompt(examples, query[0])
    answer = encode_grid(query[1])
    if loss == "output":
        return TrainingExample(completion=answer, prompt=prompt)
    if loss == "all":
        return TrainingExample(completion=prompt + answer)
    raise ValueError(f"loss={loss!r}: use 'output' (answer tokens only) or 'all' (every token).")


def training_examples(
    demonstrations: Sequence[Pair],
    groups: Sequence[str],
    loss: str = "output",
    tokenizer=None,
    max_examples: int = DEFAULT_MAX_EXAMPLES,
    max_tokens: int | None = None,
    num_permutations: int = 1,
    seed: int = 0,
) -> list[TrainingExample]:
    """The de-duplicated, shuffled, capped training set of one task under one self-edit's choices.

    Args:
        demonstrations: the task's (input, output) demonstration pairs.
        groups: augmentation groups to apply (`basic`, `size`, `chain`, `repeat`); the identity is always included.
        loss: `"output"` or `"all"`.
        tokenizer: needed with `max_tokens` to measure examples.
        max_examples: cap after de-duplication (paper: 250).
        max_tokens: drop examples whose prompt + completion exceed this many tokens (None keeps all).
        num_permutations: extra copies of each augmented pseudo-task with random colours and example order.
        seed: seeds the permutations and the shuffle.

    Example:
    ```python
    >>> examples = training_examples(task.train, ["basic"], loss="output", max_examples=64)
    >>> examples[0].prompt.startswith("input:")
    True
    ```
    """
    if max_tokens is not None and tokenizer is None:
        raise ValueError("training_examples: max_tokens needs a tokenizer to count tokens.")
    rng = random.Random(seed)
    unique = list(dict.fromkeys(_augmented_examples(demonstrations, groups, loss, num_permutations, rng)))
    rng.shuffle(unique)
    kept = []
    for example in unique:
        if len(kept) == max_examples:
            break
        if max_tokens is None or _num_tokens(tokenizer, example) <= max_tokens:
            kept.append(example)
    return kept


def _augmented_examples(
    demonstrations: Sequence[Pair], groups: Sequence[str], loss: str, num_permutations: int, rng: random.Random
) -> Iterator[TrainingExample]:
    for transform in transforms_for(groups):
        transformed = transform_pairs(demonstrations, transform)
        if transformed is None:  # a grid grew past 30×30
            continue
        for examples, query in leave_out_pseudo_tasks(transformed):
            yield pseudo_task_example(examples, query, loss)
            for _ in range(num_permutations):
                colors = ColorPermutation.random(rng)
                order = rng.sample(range(len(examples)), len(examples))
                permuted = permute_examples(examples, order)
                recoloured = [(colors.forward(inp), colors.forward(out)) for inp, out in permuted]
                query_recoloured = (colors.forward(query[0]), colors.forward(query[1]))
                yield pseudo_task_example(recoloured, query_recoloured, loss)


def _num_tokens(tokenizer, example: TrainingExample) -> int:
    # The inner loop tokenizes prompt and completion separately (and adds an end-of-sequence token): count the same.
    count = len(tokenizer(example.completion, add_special_tokens=False)["input_ids"]) + 1
    if example.prompt:
        count += len(tokenizer(example.prompt, add_special_tokens=False)["input_ids"])
    return count


def optimizer_steps(num_examples: int, num_epochs: int, batch_size: int) -> int:
    """Optimizer steps an inner loop takes: ceil(examples / batch size) per epoch (the cost filter's measure)."""
    return num_epochs * -(-num_examples // batch_size)
