"""ARC self-edits: a JSON configuration of test-time training, the prompt that asks for it, and strict parsing.

A self-edit is one JSON object with exactly these keys (paper §4.1; our key names):

| key | type | meaning |
|---|---|---|
| `basic` | bool | rotations, flips, reflections, translation, transpose |
| `size` | bool | ×2 resolution / height / width |
| `chain` | bool | a rotation, flip or transpose, then ×2 resolution |
| `repeat` | bool | tiling ×2 |
| `loss` | `"output"` or `"all"` | train on the answer tokens only, or on every token of the pseudo-task |
| `learning_rate` | number | in [1e-6, 1e-2] by default |
| `num_epochs` | integer | in [1, 10] by default |

Parsing never evaluates model output: it is read with `json`, checked key by key, and anything else is an
`InvalidSelfEdit` whose `reason` is one of a few fixed strings (logged and counted by the trainer).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from .data import ARCTask
from .grids import format_pair

AUGMENTATION_KEYS = ("basic", "size", "chain", "repeat")
LOSSES = ("output", "all")
KEYS = (*AUGMENTATION_KEYS, "loss", "learning_rate", "num_epochs")
LEARNING_RATE_RANGE = (1e-6, 1e-2)
EPOCH_RANGE = (1, 10)


@dataclass(frozen=True)
class SelfEditConfig:
    """A parsed ARC self-edit: which augmentation groups to apply, the loss, and the inner optimiser settings.

    Example:
    ```python
    >>> config = SelfEditConfig(basic=True, loss="output", learning_rate=1e-4, num_epochs=2)
    >>> config.augmentation_groups, config.to_json()[:32]
    (['basic'], '{"basic": true, "size": false, "')
    ```
    """

    basic: bool = False
    size: bool = False
    chain: bool = False
    repeat: bool = False
    loss: str = "output"
    learning_rate: float = 1e-4
    num_epochs: int = 2

    @property
    def augmentation_groups(self) -> list[str]:
        return [key for key in AUGMENTATION_KEYS if getattr(self, key)]

    def to_json(self) -> str:
        """The self-edit as a model should write it (keys in schema order)."""
        return json.dumps(asdict(self))


# The paper's "oracle" test-time training: every augmentation, loss on the answer only.
ORACLE = SelfEditConfig(
    basic=True, size=True, chain=True, repeat=True, loss="output", learning_rate=1e-4, num_epochs=2
)


# A valid configuration is ~150 characters; anything this long is rejected before parsing.
MAX_SELF_EDIT_CHARS = 20_000


class InvalidSelfEdit(ValueError):
    """A self-edit that cannot be used: `reason` is a short fixed string for counting, `detail` says what was wrong."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


def parse_self_edit(
    text: str,
    learning_rate_range: tuple[float, float] = LEARNING_RATE_RANGE,
    epoch_range: tuple[int, int] = EPOCH_RANGE,
) -> SelfEditConfig:
    """Read a self-edit strictly; raise `InvalidSelfEdit` with reason `invalid_json`, `too_long`, `unknown_key`,
    `missing_key`, `bad_type` or `out_of_range`.

    The first JSON object in `text` is read (a ```json fence or prose around it is allowed); its keys must be exactly
    the schema's, with values of the right type and in range. Booleans must be `true`/`false`, not 0/1.

    Example:
    ```python
    >>> parse_self_edit('{"basic": true, "size": false, "chain": false, "repeat": false, "loss": "all", '
    ...                 '"learning_rate": 0.001, "num_epochs": 3}').num_epochs
    3
    >>> parse_self_edit('{"basic": 1}')
    Traceback (most recent call last):
    InvalidSelfEdit: unknown_key ...
    ```
    """
    values = _first_json_object(text)
    unknown = sorted(set(values) - set(KEYS))
    if unknown:
        raise InvalidSelfEdit("unknown_key", f"keys {unknown} are not in the schema {list(KEYS)}")
    missing = [key for key in KEYS if key not in values]
    if missing:
        raise InvalidSelfEdit("missing_key", f"keys {missing} are missing")
    for key in AUGMENTATION_KEYS:
        _require(isinstance(values[key], bool), "bad_type", f"{key} must be true or false, got {values[key]!r}")
    _require(isinstance(values["loss"], str), "bad_type", f"loss must be a string, got {values['loss']!r}")
    _require(values["loss"] in LOSSES, "out_of_range", f"loss must be one of {list(LOSSES)}, got {values['loss']!r}")
    learning_rate, epochs = values["learning_rate"], values["num_epochs"]
    _require(_is_number(learning_rate), "bad_type", f"learning_rate must be a number, got {learning_rate!r}")
    low, high = learning_rate_range
    _require(low <= learning_rate <= high, "out_of_range", f"learning_rate {learning_rate} is outside [{low}, {high}]")
    _require(_is_whole(epochs), "bad_type", f"num_epochs must be an integer, got {epochs!r}")
    _require(epoch_range[0] <= epochs <= epoch_range[1], "out_of_range",
             f"num_epochs {epochs} is outside [{epoch_range[0]}, {epoch_range[1]}]")
    groups = {key: values[key] for key in AUGMENTATION_KEYS}
    return SelfEditConfig(**groups, loss=values["loss"], learning_rate=float(learning_rate), num_epochs=int(epochs))


def _first_json_object(text: str) -> dict:
    if isinstance(text, str) and len(text) > MAX_SELF_EDIT_CHARS:
        raise InvalidSelfEdit("too_long", f"{len(text)} characters; a configuration needs far fewer than "
                              f"{MAX_SELF_EDIT_CHARS}")
    if not isinstance(text, str) or "{" not in text:
        raise InvalidSelfEdit("invalid_json", "no JSON object in the self-edit")
    try:  # decoding from the first "{" can only give an object or fail
        value, _ = json.JSONDecoder().raw_decode(text[text.index("{") :])
    except RecursionError:  # a JSON bomb: thousands of nested brackets
        raise InvalidSelfEdit("invalid_json", "nested too deeply") from None
    except ValueError as error:  # includes integers too long to convert
        raise InvalidSelfEdit("invalid_json", str(error)[:200]) from None
    return value


def _require(condition: bool, reason: str, detail: str) -> None:
    if not condition:
        raise InvalidSelfEdit(reason, detail)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_whole(value) -> bool:
    return _is_number(value) and float(value).is_integer()


# Two example answers with different values: a small model copies the format (and varies the values) far more
# often than it follows a description (an exploratory check with SmolLM2-135M, 24 samples each: 3 valid at
# temperature 1.0 and 9 at 0.7 with this prompt; 0 at 1.0 with a key-by-key description and a single example).
SELF_EDIT_PROMPT = (
    "Here are the solved examples of a puzzle; every digit is a colour.\n\n{demonstrations}\n\n"
    "Before solving a new input, a model trains on copies of these examples. Choose the training settings as a JSON "
    "object with the keys basic, size, chain, repeat (true or false: which augmented copies to add), loss "
    '("output" or "all"), learning_rate (from {lr_low} to {lr_high}) and num_epochs ({epochs_low} to {epochs_high}). '
    "Reply with the JSON object only.\nExamples of answers:\n{answer_examples}\nYour answer:"
)
ANSWER_EXAMPLES = (
    SelfEditConfig(basic=True, size=False, chain=False, repeat=True, loss="all", learning_rate=1e-3, num_epochs=3),
    SelfEditConfig(basic=False, size=True, chain=True, repeat=False, loss="output", learning_rate=1e-4, num_epochs=1),
)


def self_edit_prompt(task: ARCTask, template: str = SELF_EDIT_PROMPT) -> str:
    """The text asking the policy for a self-edit of `task`: its demonstrations, the schema and two example answers.

    A template may use `{demonstrations}` (required), `{answer_examples}`, `{lr_low}`, `{lr_high}`, `{epochs_low}`
    and `{epochs_high}`.

    Example:
    ```python
    >>> print(self_edit_prompt(task)[:52])
    Here are the solved examples of a puzzle; every digit
    ```
    """
    if "{demonstrations}" not in template:
        raise ValueError("A self-edit template must contain '{demonstrations}' (where the task's examples go).")
    demonstrations = "\n\n".join(format_pair(inp, out) for inp, out in task.train)
    values = {
        "{demonstrations}": demonstrations, "{answer_examples}": "\n".join(c.to_json() for c in ANSWER_EXAMPLES),
        "{lr_low}": f"{LEARNING_RATE_RANGE[0]:g}", "{lr_high}": f"{LEARNING_RATE_RANGE[1]:g}",
        "{epochs_low}": str(EPOCH_RANGE[0]), "{epochs_high}": str(EPOCH_RANGE[1]),
    }
    for placeholder, value in values.items():
        template = template.replace(placeholder, value)
    return template


def self_edit_dataset(tasks: Sequence[ARCTask], chat: bool = True, template: str = SELF_EDIT_PROMPT):
    """A `datasets.Dataset` for `SEALTrainer` + `ARCReward`: `prompt` (chat messages, or text with `chat=False`) and
    the context columns `task_id`, `train`, `test` (ARC's json shape, test outputs included)."""
    from datasets import Dataset

    rows = []
    for task in tasks:
        text = self_edit_prompt(task, template)
        rows.append({"prompt": [{"role": "user", "content": text}] if chat else text, **task.to_row()})
    return Dataset.from_list(rows)
