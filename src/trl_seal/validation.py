"""Checks that run before SEALTrainer loads a model, and on what a reward function returns.

Each error says what is wrong, where (row, field, count) and how to fix it.
"""

from __future__ import annotations

import inspect

from .seal_config import SEALConfig


def check_vllm(args: SEALConfig) -> None:
    """`use_vllm=True` needs vLLM; say which extra installs it before TRL fails deeper down."""
    from trl.import_utils import is_vllm_available

    if args.use_vllm and not is_vllm_available():
        raise ImportError(
            "use_vllm=True, but vLLM is not installed. Install it with `pip install 'trl-seal[vllm]'` (vLLM pins its "
            "own torch build: use an environment made for it), or set use_vllm=False to generate with transformers."
        )


def validate_reward_fn(reward_fn) -> None:
    """Fail before any model is loaded if `reward_fn` cannot take TRL's keyword arguments."""
    if not callable(reward_fn):
        raise TypeError(f"reward_fn must be callable (a RewardFn), got {type(reward_fn).__name__}.")
    target = reward_fn if inspect.isfunction(reward_fn) or inspect.ismethod(reward_fn) else reward_fn.__call__
    parameters = inspect.signature(target).parameters.values()
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        name = getattr(reward_fn, "__name__", type(reward_fn).__name__)
        raise TypeError(
            f"reward_fn {name!r} must accept **kwargs: SEALTrainer calls it with prompts=, completions=, every "
            "dataset column, inner_adapter= and record_invalid=. Define it as "
            "`def reward(prompts, completions, **kwargs)`."
        )


CONTEXT_ID_COLUMNS = ("context_id", "passage_id", "task_id")


def validate_dataset(dataset, args: SEALConfig) -> None:
    """Fail before training if the dataset cannot feed SEAL rounds."""
    if dataset is None:
        raise ValueError("SEALTrainer needs a train_dataset with a 'prompt' column of self-edit prompts.")
    columns = getattr(dataset, "column_names", None)
    if columns is None or "prompt" not in columns:
        raise ValueError(
            f"train_dataset has columns {columns}, but SEAL needs a 'prompt' column holding the self-edit prompt of "
            "each context (text or a list of chat messages). Rename or add it, e.g. dataset.map(...)."
        )
    if not hasattr(dataset, "__len__"):
        return
    if len(dataset) < args.contexts_per_round:
        raise ValueError(
            f"train_dataset has {len(dataset)} contexts but contexts_per_round={args.contexts_per_round}: a round "
            "would never fill. Lower contexts_per_round or add contexts."
        )
    for row, prompt in enumerate(dataset["prompt"]):
        if not (isinstance(prompt, str) and prompt.strip()) and not (isinstance(prompt, list) and prompt):
            raise ValueError(
                f"train_dataset row {row}: field 'prompt' is {prompt!r}; it must be a non-empty string or a non-empty "
                "list of chat messages."
            )
    for column in CONTEXT_ID_COLUMNS:
        if column in columns:
            first_row: dict = {}
            for row, value in enumerate(dataset[column]):
                if value in first_row:
                    raise ValueError(
                        f"train_dataset rows {first_row[value]} and {row} share {column} {value!r}: each context must "
                        "appear once (a duplicate is trained and rewarded twice per round). Drop duplicates first."
                    )
                first_row[value] = row


def check_rewards(rewards, expected: int, reward_fn) -> None:
    name = getattr(reward_fn, "__name__", type(reward_fn).__name__)
    if not isinstance(rewards, (list, tuple)) or len(rewards) != expected:
        got = len(rewards) if hasattr(rewards, "__len__") else type(rewards).__name__
        raise ValueError(
            f"reward_fn {name!r} returned {got} values for {expected} completions: return a list with one float "
            "(or None) per completion, in order."
        )
    for index, value in enumerate(rewards):
        if value is not None and not isinstance(value, (int, float)):
            raise ValueError(
                f"reward_fn {name!r} returned {value!r} ({type(value).__name__}) for completion {index}: rewards must "
                "be floats or None."
            )
