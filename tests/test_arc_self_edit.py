import json

import pytest

from trl_seal.arc.data import task_from_json
from trl_seal.arc.self_edit import (
    ORACLE,
    InvalidSelfEdit,
    SelfEditConfig,
    parse_self_edit,
    self_edit_dataset,
    self_edit_prompt,
)
from trl_seal.types import completion_text

VALID = {"basic": True, "size": False, "chain": True, "repeat": False, "loss": "all", "learning_rate": 0.001,
         "num_epochs": 3}
TASK = task_from_json("t1", {"train": [{"input": [[1, 2]], "output": [[2, 1]]}],
                             "test": [{"input": [[3, 4]], "output": [[4, 3]]}]}, "inline")


def with_changes(**changes):
    values = {**VALID, **changes}
    return json.dumps({key: value for key, value in values.items() if value is not ...})


def test_valid_self_edits_parse_inside_fences_and_prose():
    config = parse_self_edit(json.dumps(VALID))
    assert config == SelfEditConfig(True, False, True, False, "all", 1e-3, 3)
    assert config.augmentation_groups == ["basic", "chain"]
    assert parse_self_edit("Sure!\n```json\n" + json.dumps(VALID) + "\n```\nDone.") == config
    assert parse_self_edit(with_changes(num_epochs=2.0)).num_epochs == 2
    assert parse_self_edit(ORACLE.to_json()) == ORACLE


@pytest.mark.parametrize("text, reason", [
    ("", "invalid_json"),
    ("basic: true", "invalid_json"),
    ('{"basic": true,', "invalid_json"),
    ("{'basic': True}", "invalid_json"),
    ("[1, 2]", "invalid_json"),
    ('[{"basic": true}]', "missing_key"),  # the first object in the text is the self-edit
    (with_changes(dropout=0.1), "unknown_key"),
    (with_changes(repeat=...), "missing_key"),
    (with_changes(basic=1), "bad_type"),
    (with_changes(loss=0), "bad_type"),
    (with_changes(learning_rate="1e-3"), "bad_type"),
    (with_changes(num_epochs=2.5), "bad_type"),
    (with_changes(num_epochs=True), "bad_type"),
    (with_changes(loss="inputs"), "out_of_range"),
    (with_changes(learning_rate=0.5), "out_of_range"),
    (with_changes(learning_rate=0), "out_of_range"),
    (with_changes(num_epochs=0), "out_of_range"),
    (with_changes(num_epochs=11), "out_of_range"),
])
def test_each_invalid_self_edit_has_its_reason(text, reason):
    with pytest.raises(InvalidSelfEdit) as error:
        parse_self_edit(text)
    assert error.value.reason == reason and error.value.detail


def test_ranges_are_configurable():
    assert parse_self_edit(with_changes(learning_rate=0.5), learning_rate_range=(0.0, 1.0)).learning_rate == 0.5
    with pytest.raises(InvalidSelfEdit, match="out_of_range"):
        parse_self_edit(with_changes(num_epochs=3), epoch_range=(1, 2))


def test_prompt_shows_the_demonstrations_and_the_schema():
    prompt = self_edit_prompt(TASK)
    assert "input:\n12\noutput:\n21" in prompt and "34" not in prompt, "the test pair stays hidden"
    answers = prompt.split("Examples of answers:\n")[1].split("\nYour answer:")[0].split("\n")
    assert len({parse_self_edit(answer) for answer in answers}) == 2  # the example answers are valid and differ
    assert "1e-06 to 0.01" in prompt and "1 to 10" in prompt
    with pytest.raises(ValueError, match="\\{demonstrations\\}"):
        self_edit_prompt(TASK, template="no placeholder")


def test_dataset_columns_and_completion_text():
    dataset = self_edit_dataset([TASK, TASK])
    assert dataset.column_names == ["prompt", "task_id", "train", "test"] and len(dataset) == 2
    assert dataset[0]["prompt"][0]["role"] == "user" and dataset[0]["test"][0]["output"] == [[4, 3]]
    assert isinstance(self_edit_dataset([TASK], chat=False)[0]["prompt"], str)
    assert completion_text([{"role": "assistant", "content": "x"}]) == "x" and completion_text(None) == ""
