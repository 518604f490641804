import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from trl_seal.arc.grids import (
    answer_length_bound,
    as_grid,
    decode_grid,
    encode_grid,
    few_shot_prompt,
    fits,
    grid_key,
    parse_answer,
)

grids = arrays(np.int64, st.tuples(st.integers(1, 30), st.integers(1, 30)), elements=st.integers(0, 9))


@given(grids)
def test_codec_round_trips_every_grid(grid):
    text = encode_grid(grid)
    assert text.count("\n") == grid.shape[0] - 1 and len(text) == grid.shape[0] * (grid.shape[1] + 1) - 1
    decoded = decode_grid(text)
    assert decoded.shape == grid.shape and np.array_equal(decoded, grid)
    assert np.array_equal(parse_answer(text + "\n\ninput:\n123"), grid)


@pytest.mark.parametrize("text", [
    "", "   ", "\n\n", "01\n012", "0a1\n222", "1 2\n3 4", "-1", "0.5", "\u00b2\u00b2", "[[1, 2]]",
    "0" * 31, "\n".join(["0"] * 31), "12\n\n34", None,
])
def test_malformed_text_decodes_to_none_without_raising(text):
    assert decode_grid(text) is None


def test_parse_answer_stops_at_blank_line_or_next_input_and_tolerates_spacing():
    assert parse_answer("\n12\n34  \n\nnoise").tolist() == [[1, 2], [3, 4]]
    assert parse_answer("12\ninput:\n55").tolist() == [[1, 2]]
    assert parse_answer("garbage\n12") is None and parse_answer(None) is None


def test_as_grid_errors_name_the_place_and_the_fix():
    assert as_grid([[1, 2], [3, 4]], "here").tolist() == [[1, 2], [3, 4]]
    for value, words in [([], "non-empty"), ([[1, 2], [3]], "rectangular"), ([[1, 10]], "0-9"),
                         ([[True]], "0-9"), ([[0] * 31], "at most 30x30"), ("12", "non-empty list")]:
        with pytest.raises(ValueError, match="task x, train\\[0\\].input") as error:
            as_grid(value, "task x, train[0].input")
        assert words in str(error.value)


def test_prompt_layout_fits_and_keys():
    prompt = few_shot_prompt([(np.array([[1, 2]]), np.array([[3]]))], np.array([[4, 5]]))
    assert prompt == "input:\n12\noutput:\n3\n\ninput:\n45\noutput:\n"
    assert fits(np.zeros((30, 30))) and not fits(np.zeros((31, 2)))
    assert grid_key(np.array([[1, 2]])) != grid_key(np.array([[1], [2]]))


def test_answer_length_bound_covers_scaled_outputs_and_transposes():
    demos = [(np.zeros((2, 3)), np.zeros((4, 6)))]  # outputs are inputs at double size
    bound = answer_length_bound(demos, np.zeros((3, 5)))  # expected output 6x10, possibly transposed
    assert bound >= 10 * 7 and bound == 10 * 7 + 1
    assert answer_length_bound(demos, np.zeros((20, 20))) == 30 * 31 + 1  # capped at ARC's 30x30
