"""ARC grids as text, and the few-shot prompt a model sees.

A grid is a 2-D numpy array of colours 0–9, at most 30×30. As text it is one line per row and one digit per cell,
without separators: `"012\\n340"`. Byte-level BPE tokenizers that split digits (SmolLM2, Llama, Qwen) spend exactly one
token per cell and one per row break, so an answer of H×W cells costs H·(W+1) tokens; spaces between digits would
double that. Parsing model output never raises: anything that is not a clean rectangular digit grid decodes to None.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

MAX_SIDE = 30
INPUT_HEADER = "input:\n"
OUTPUT_HEADER = "output:\n"


def encode_grid(grid: np.ndarray) -> str:
    """One line per row, one digit per cell.

    Example:
    ```python
    >>> encode_grid(np.array([[0, 1, 2], [3, 4, 0]]))
    '012\\n340'
    ```
    """
    return "\n".join("".join(str(int(cell)) for cell in row) for row in grid)


def decode_grid(text: str) -> np.ndarray | None:
    """The grid `text` spells, or None when it is not one (empty, ragged rows, non-digits, a side above 30).

    Surrounding whitespace and trailing spaces on a line are ignored; nothing else is repaired.

    Example:
    ```python
    >>> decode_grid("012\\n340").tolist(), decode_grid("01\\n340"), decode_grid("0a")
    ([[0, 1, 2], [3, 4, 0]], None, None)
    ```
    """
    if not isinstance(text, str):
        return None
    rows = [line.rstrip() for line in text.strip().split("\n")]
    if not rows or not rows[0]:
        return None
    width = len(rows[0])
    if len(rows) > MAX_SIDE or width > MAX_SIDE:
        return None
    if any(len(row) != width or not (row.isascii() and row.isdigit()) for row in rows):
        return None
    return np.array([[int(cell) for cell in row] for row in rows], dtype=np.int64)


def parse_answer(generated: str) -> np.ndarray | None:
    """The grid at the start of a model's answer: text up to the first blank line or the next `input:` header.

    Example:
    ```python
    >>> parse_answer("11\\n22\\n\\ninput:\\n00").tolist()
    [[1, 1], [2, 2]]
    ```
    """
    if not isinstance(generated, str):
        return None
    answer = generated.lstrip("\n").split("\n\n", 1)[0].split(INPUT_HEADER.strip(), 1)[0]
    return decode_grid(answer)


def as_grid(value: Any, where: str) -> np.ndarray:
    """Validate an ARC grid given as nested lists (JSON) and return it as an array.

    Raises a `ValueError` naming `where` (file, task, field) when the value is not a non-empty rectangular list of
    lists of integers 0–9 with sides of at most 30.
    """
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if not isinstance(value, list) or not value or not all(isinstance(row, list) and row for row in value):
        raise ValueError(f"{where}: a grid must be a non-empty list of non-empty lists of colours, got {value!r:.80}.")
    width = len(value[0])
    if any(len(row) != width for row in value):
        lengths = [len(r) for r in value]
        raise ValueError(f"{where}: the grid's rows have different lengths {lengths}; make it rectangular.")
    if not all(isinstance(cell, (int, np.integer)) and not isinstance(cell, bool) and 0 <= cell <= 9
               for row in value for cell in row):
        raise ValueError(f"{where}: every cell must be an integer colour 0-9.")
    if len(value) > MAX_SIDE or width > MAX_SIDE:
        raise ValueError(f"{where}: the grid is {len(value)}x{width}; ARC grids are at most {MAX_SIDE}x{MAX_SIDE}.")
    return np.array(value, dtype=np.int64)


def fits(grid: np.ndarray, max_side: int = MAX_SIDE) -> bool:
    """Whether both sides of `grid` are at most `max_side` (augmentations can grow a grid past ARC's 30×30)."""
    return grid.shape[0] <= max_side and grid.shape[1] <= max_side


def grid_key(grid: np.ndarray) -> tuple:
    """A hashable identity of a grid (shape and cells), for voting and de-duplication."""
    return (grid.shape, grid.astype(np.int8).tobytes())


def format_pair(input_grid: np.ndarray, output_grid: np.ndarray | None = None) -> str:
    """`input:` block then `output:` header, followed by the output grid when it is given."""
    text = f"{INPUT_HEADER}{encode_grid(input_grid)}\n{OUTPUT_HEADER}"
    return text if output_grid is None else text + encode_grid(output_grid)


def few_shot_prompt(demonstrations: Sequence[tuple[np.ndarray, np.ndarray]], query_input: np.ndarray) -> str:
    """The demonstrations as solved pairs separated by blank lines, then the query input and an open `output:`.

    The answer is the query's output grid; an adapted model learns to end it with the end-of-sequence token.

    Example:
    ```python
    >>> print(few_shot_prompt([(np.array([[1]]), np.array([[2]]))], np.array([[3]])))
    input:
    1
    output:
    2
    <BLANKLINE>
    input:
    3
    output:
    <BLANKLINE>
    ```
    """
    blocks = [format_pair(input_grid, output_grid) for input_grid, output_grid in demonstrations]
    return "\n\n".join([*blocks, format_pair(query_input)])


def answer_length_bound(demonstrations: Sequence[tuple[np.ndarray, np.ndarray]], query_input: np.ndarray) -> int:
    """Characters an answer can need (a token bound for tokenizers that merge characters, exact for SmolLM2's).

    The query's output is assumed no larger than the largest demonstration output, or than the query input scaled by
    the largest output/input side ratio among the demonstrations; either orientation (views may transpose), capped
    at 30×30.
    """
    ratio_rows = max(out.shape[0] / inp.shape[0] for inp, out in demonstrations) if demonstrations else 1.0
    ratio_cols = max(out.shape[1] / inp.shape[1] for inp, out in demonstrations) if demonstrations else 1.0
    shapes = [out.shape for _, out in demonstrations]
    shapes.append((int(np.ceil(query_input.shape[0] * ratio_rows)), int(np.ceil(query_input.shape[1] * ratio_cols))))
    sides = [min(max(rows, cols), MAX_SIDE) for rows, cols in shapes]
    smaller = [min(min(rows, cols), MAX_SIDE) for rows, cols in shapes]
    return max(big * (small + 1) for big, small in zip(sides, smaller)) + 1
