"""Invertible grid transforms: the augmentation groups a self-edit chooses from, and the views of augmented inference.

Every transform maps a grid to a grid and has an `inverse` with `inverse(forward(g)) == g` for every grid `g`
(for the transforms that grow a grid, `inverse` reads the original back from the grown one). Groups follow the
paper's menu (DESIGN.md §2):

| group | transforms |
|---|---|
| basic | rotations by 90/180/270°, flips (up-down, left-right), reflections (the grid with its mirror image |
|       | appended, on either side and axis), translation (cyclic shift by one row and one column), transpose |
| size | ×2 resolution, ×2 height, ×2 width |
| chain | a rotation, flip or transpose, then ×2 resolution |
| repeat | tiling ×2 vertically, horizontally, both |

A transform is applied to every grid of a task (inputs and outputs alike), so the task's rule is transformed with it.
Colour and example permutations act on a whole task and are drawn at random.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .grids import fits

Pair = tuple[np.ndarray, np.ndarray]


@dataclass(frozen=True)
class Identity:
    name = "identity"

    def forward(self, grid: np.ndarray) -> np.ndarray:
        return grid

    def inverse(self, grid: np.ndarray) -> np.ndarray:
        return grid


@dataclass(frozen=True)
class Rotate:
    """Clockwise rotation by `quarter_turns` × 90°."""

    quarter_turns: int

    @property
    def name(self) -> str:
        return f"rot{90 * self.quarter_turns}"

    def forward(self, grid: np.ndarray) -> np.ndarray:
        return np.rot90(grid, -self.quarter_turns)

    def inverse(self, grid: np.ndarray) -> np.ndarray:
        return np.rot90(grid, self.quarter_turns)


@dataclass(frozen=True)
class Flip:
    """Mirror along `axis` (0: upside down, 1: left-right); its own inverse."""

    axis: int

    @property
    def name(self) -> str:
        return "flip_ud" if self.axis == 0 else "flip_lr"

    def forward(self, grid: np.ndarray) -> np.ndarray:
        return np.flip(grid, self.axis)

    def inverse(self, grid: np.ndarray) -> np.ndarray:
        return np.flip(grid, self.axis)


@dataclass(frozen=True)
class Transpose:
    """Mirror along the main diagonal; its own inverse."""

    name = "transpose"

    def forward(self, grid: np.ndarray) -> np.ndarray:
        return grid.T

    def inverse(self, grid: np.ndarray) -> np.ndarray:
        return grid.T


@dataclass(frozen=True)
class AntiTranspose:
    """Mirror along the anti-diagonal; its own inverse."""

    name = "anti_transpose"

    def forward(self, grid: np.ndarray) -> np.ndarray:
        return np.rot90(grid, 2).T

    def inverse(self, grid: np.ndarray) -> np.ndarray:
        return np.rot90(grid, 2).T


@dataclass(frozen=True)
class Reflect:
    """The grid followed by its mirror image along `axis` (`mirror_first`: the mirror image first): twice the size."""

    axis: int
    mirror_first: bool = False

    @property
    def name(self) -> str:
        return f"reflect_{'rows' if self.axis == 0 else 'cols'}{'_mirror_first' if self.mirror_first else ''}"

    def forward(self, grid: np.ndarray) -> np.ndarray:
        mirror = np.flip(grid, self.axis)
        halves = (mirror, grid) if self.mirror_first else (grid, mirror)
        return np.concatenate(halves, axis=self.axis)

    def inverse(self, grid: np.ndarray) -> np.ndarray:
        half = grid.shape[self.axis] // 2
        original = grid[half:] if self.axis == 0 else grid[:, half:]
        if not self.mirror_first:
            original = grid[:half] if self.axis == 0 else grid[:, :half]
        return original


@dataclass(frozen=True)
class Translate:
    """Cyclic shift by `rows` down and `cols` right: no cell is lost, so the shift is invertible."""

    rows: int = 1
    cols: int = 1

    @property
    def name(self) -> str:
        return f"translate_{self.rows}_{self.cols}"

    def forward(self, grid: np.ndarray) -> np.ndarray:
        return np.roll(grid, (self.rows, self.cols), axis=(0, 1))

    def inverse(self, grid: np.ndarray) -> np.ndarray:
        return np.roll(grid, (-self.rows, -self.cols), axis=(0, 1))


@dataclass(frozen=True)
class Upscale:
    """Every cell becomes a `rows`×`cols` block (×2 resolution: 2×2; ×2 height: 2×1; ×2 width: 1×2)."""

    rows: int
    cols: int

    @property
    def name(self) -> str:
        names = {(2, 2): "x2_resolution", (2, 1): "x2_height", (1, 2): "x2_width"}
        return names.get((self.rows, self.cols), f"upscale_{self.rows}x{self.cols}")

    def forward(self, grid: np.ndarray) -> np.ndarray:
        return np.repeat(np.repeat(grid, self.rows, axis=0), self.cols, axis=1)

    def inverse(self, grid: np.ndarray) -> np.ndarray:
        return grid[:: self.rows, :: self.cols]


@dataclass(frozen=True)
class Tile:
    """The grid repeated `rows` times vertically and `cols` times horizontally."""

    rows: int
    cols: int

    @property
    def name(self) -> str:
        return f"tile_{self.rows}x{self.cols}"

    def forward(self, grid: np.ndarray) -> np.ndarray:
        return np.tile(grid, (self.rows, self.cols))

    def inverse(self, grid: np.ndarray) -> np.ndarray:
        return grid[: grid.shape[0] // self.rows, : grid.shape[1] // self.cols]


@dataclass(frozen=True)
class Chain:
    """`steps` applied in order; the inverse undoes them in reverse order."""

    steps: tuple

    @property
    def name(self) -> str:
        return "+".join(step.name for step in self.steps)

    def forward(self, grid: np.ndarray) -> np.ndarray:
        for step in self.steps:
            grid = step.forward(grid)
        return grid

    def inverse(self, grid: np.ndarray) -> np.ndarray:
        for step in reversed(self.steps):
            grid = step.inverse(grid)
        return grid


@dataclass(frozen=True)
class ColorPermutation:
    """Colour `c` becomes `mapping[c]` (a permutation of 0–9)."""

    mapping: tuple[int, ...]

    def __post_init__(self):
        if sorted(self.mapping) != list(range(10)):
            raise ValueError(f"ColorPermutation: mapping {self.mapping} must be a permutation of the colours 0-9.")

    @property
    def name(self) -> str:
        return "colors_" + "".join(str(c) for c in self.mapping)

    def forward(self, grid: np.ndarray) -> np.ndarray:
        return np.asarray(self.mapping)[grid]

    def inverse(self, grid: np.ndarray) -> np.ndarray:
        return np.argsort(self.mapping)[grid]

    @classmethod
    def random(cls, rng: random.Random, keep_background: bool = True) -> ColorPermutation:
        """A random permutation; black (0), ARC's usual background, stays black unless `keep_background=False`."""
        colors = list(range(1, 10) if keep_background else range(10))
        rng.shuffle(colors)
        return cls(tuple([0] + colors) if keep_background else tuple(colors))


GEOMETRIC = (Rotate(1), Rotate(2), Rotate(3), Flip(0), Flip(1), Transpose())
AUGMENTATION_GROUPS: dict[str, tuple] = {
    "basic": (
        *GEOMETRIC,
        Reflect(0), Reflect(0, mirror_first=True), Reflect(1), Reflect(1, mirror_first=True),
        Translate(1, 1),
    ),
    "size": (Upscale(2, 2), Upscale(2, 1), Upscale(1, 2)),
    "chain": tuple(Chain((step, Upscale(2, 2))) for step in GEOMETRIC),
    "repeat": (Tile(2, 1), Tile(1, 2), Tile(2, 2)),
}
# The dihedral group of the square: every view of a grid that keeps its cells, for augmented inference.
INFERENCE_VIEWS = (Identity(), Transpose(), Rotate(1), Rotate(2), Rotate(3), Flip(0), Flip(1), AntiTranspose())


def transforms_for(groups: Sequence[str]) -> list:
    """The identity followed by every transform of the named groups (`basic`, `size`, `chain`, `repeat`).

    Example:
    ```python
    >>> [t.name for t in transforms_for(["size"])]
    ['identity', 'x2_resolution', 'x2_height', 'x2_width']
    ```
    """
    unknown = [group for group in groups if group not in AUGMENTATION_GROUPS]
    if unknown:
        raise ValueError(f"Unknown augmentation groups {unknown}: use {sorted(AUGMENTATION_GROUPS)}.")
    return [Identity(), *(transform for group in groups for transform in AUGMENTATION_GROUPS[group])]


def transform_pairs(pairs: Sequence[Pair], transform) -> list[Pair] | None:
    """`transform` applied to every grid of `pairs`; None when a grid would exceed 30×30 (ARC's limit)."""
    transformed = [(transform.forward(inp), transform.forward(out)) for inp, out in pairs]
    return transformed if all(fits(inp) and fits(out) for inp, out in transformed) else None


def permute_examples(pairs: Sequence[Pair], order: Sequence[int]) -> list[Pair]:
    """The pairs in the given order (a permutation of their indices)."""
    if sorted(order) != list(range(len(pairs))):
        raise ValueError(f"permute_examples: order {list(order)} is not a permutation of range({len(pairs)}).")
    return [pairs[index] for index in order]


def inverse_order(order: Sequence[int]) -> list[int]:
    """The order that undoes `permute_examples(pairs, order)`."""
    return [int(index) for index in np.argsort(order)]
