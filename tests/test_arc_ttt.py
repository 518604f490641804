import numpy as np
import pytest

from trl_seal.arc.grids import encode_grid
from trl_seal.arc.ttt import leave_out_pseudo_tasks, optimizer_steps, pseudo_task_example, training_examples


def demos(n, side=3, seed=0):
    rng = np.random.default_rng(seed)
    return [(rng.integers(0, 10, (side, side)), rng.integers(0, 10, (side, side))) for _ in range(n)]


class CharCounter:
    """A stand-in tokenizer: one token per character."""

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": list(range(len(text)))}


def test_leave_one_and_two_out_counts():
    assert len(leave_out_pseudo_tasks(demos(2))) == 2  # leave-two-out would leave no example
    assert len(leave_out_pseudo_tasks(demos(3))) == 3 + 3 * 2
    assert len(leave_out_pseudo_tasks(demos(4))) == 4 + 4 * 3
    assert len(leave_out_pseudo_tasks(demos(4), max_left_out=1)) == 4
    for examples, query in leave_out_pseudo_tasks(demos(4)):
        assert all(example is not query for example in examples) and 2 <= len(examples) <= 3


def test_loss_modes_mask_the_right_tokens():
    (inp, out), query = demos(1)[0], demos(1, seed=1)[0]
    output_only = pseudo_task_example([(inp, out)], query, "output")
    assert output_only.completion == encode_grid(query[1]) and output_only.prompt.endswith("output:\n")
    everything = pseudo_task_example([(inp, out)], query, "all")
    assert everything.prompt == "" and everything.completion == output_only.prompt + output_only.completion
    with pytest.raises(ValueError, match="loss='some'"):
        pseudo_task_example([(inp, out)], query, "some")


def test_counts_dedup_cap_and_seed():
    plain = training_examples(demos(3), [], num_permutations=0)
    assert len(plain) == 9 and len(set(plain)) == 9
    symmetric = [(np.zeros((3, 3), int), np.ones((3, 3), int))] * 3  # identical demonstrations
    assert len(training_examples(symmetric, ["basic"], num_permutations=0)) < 9 * 12, "duplicates are removed"
    everything = training_examples(demos(4), ["basic", "size", "chain", "repeat"])
    assert len(everything) == 250
    assert len(training_examples(demos(4), ["basic"], max_examples=40)) == 40
    assert training_examples(demos(3), ["basic"], seed=1) == training_examples(demos(3), ["basic"], seed=1)
    assert training_examples(demos(3), ["basic"], seed=1) != training_examples(demos(3), ["basic"], seed=2)


def test_grids_over_30_are_dropped_with_their_pseudo_tasks():
    assert len(training_examples(demos(3, side=15), ["size"], num_permutations=0)) == 9 * 4  # 30x30 is allowed
    big = demos(3, side=16)
    assert len(training_examples(big, ["size"], num_permutations=0)) == 9  # only the identity survives
    assert len(training_examples(big, ["basic"], num_permutations=0)) == 9 * 8  # the 4 reflections double a side


def test_over_long_examples_are_dropped_by_token_count():
    examples = training_examples(demos(3), ["size"], num_permutations=0, tokenizer=CharCounter(), max_tokens=120)
    assert examples and all(len(e.prompt) + len(e.completion) + 1 <= 120 for e in examples)
    assert len(examples) < len(training_examples(demos(3), ["size"], num_permutations=0))
    with pytest.raises(ValueError, match="needs a tokenizer"):
        training_examples(demos(3), [], max_tokens=10)


def test_optimizer_steps():
    assert optimizer_steps(250, 3, 2) == 375 and optimizer_steps(251, 3, 2) == 378 and optimizer_steps(5, 1, 2) == 3
