"""SEAL state in checkpoints, and what a resumed run must restore or refuse.

TRL's checkpoint holds the policy (safetensors), optimizer, scheduler, RNG states and the trainer state. SEAL adds
`seal_state.json` (round, restarts, ledger size, the config, the trl_seal version), written last and atomically: a
checkpoint without it was cut short and is never resumed from. With `restart_each_round` the initial policy is saved
too (`seal_initial_policy.safetensors`), since every round restarts from it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from typing import Any

from .ledger import describe_differences, read_complete_lines, write_json_atomically

SEAL_STATE = "seal_state.json"
INITIAL_POLICY = "seal_initial_policy.safetensors"
# Fields that may change between a run and its resumption without changing what it computes.
RESUMABLE_FIELDS = {
    "output_dir", "logging_dir", "logging_steps", "logging_strategy", "logging_first_step", "report_to", "run_name",
    "save_steps", "save_strategy", "save_total_limit", "save_only_model", "disable_tqdm", "push_to_hub",
    "hub_model_id", "hub_token", "hub_strategy", "resume_from_checkpoint", "num_rounds", "max_steps",
    "log_completions", "dataloader_num_workers", "overwrite_output_dir", "trackio_space_id", "project",
}
# Attributes that change while a run goes on (counters, progress bars), not what a reward means.
RUNTIME_ATTRIBUTES = {"num_syncs", "show_progress", "version", "last_run", "eval_batch_size"}
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


def comparable_config(config_dict: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in config_dict.items() if key not in RESUMABLE_FIELDS}


def write_seal_state(checkpoint_dir: str, state: dict[str, Any]) -> None:
    write_json_atomically(os.path.join(checkpoint_dir, SEAL_STATE), state)


def read_seal_state(checkpoint_dir: str) -> dict[str, Any]:
    path = os.path.join(checkpoint_dir, SEAL_STATE)
    if not os.path.exists(path):
        raise ValueError(
            f"{checkpoint_dir} has no {SEAL_STATE}: it was not written by SEALTrainer, or the run stopped while "
            "writing it. Resume from an earlier checkpoint (resume_from_checkpoint=True picks the last complete one)."
        )
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def check_resumable(state: dict[str, Any], config_dict: dict[str, Any], version: str, checkpoint_dir: str) -> None:
    """Refuse a checkpoint written by another trl_seal version or under settings that change the computation."""
    if state.get("trl_seal_version") != version:
        raise ValueError(
            f"{checkpoint_dir} was written by trl_seal {state.get('trl_seal_version')}, this is {version}: rounds "
            "resumed across versions may not reproduce. Finish the run with that version or start a new output_dir."
        )
    differences = describe_differences(comparable_config(state.get("config", {})), comparable_config(config_dict))
    if differences:
        raise ValueError(
            f"{checkpoint_dir} was written under other settings ({differences}). Resume with the same settings, or "
            "start a new output_dir."
        )


def last_complete_checkpoint(output_dir: str) -> str | None:
    """The newest `checkpoint-N` holding a `seal_state.json` (older ones if the newest was cut short)."""
    if not os.path.isdir(output_dir):
        return None
    found = [(int(m.group(1)), name) for name in os.listdir(output_dir) if (m := _CHECKPOINT.match(name))]
    for _, name in sorted(found, reverse=True):
        if os.path.exists(os.path.join(output_dir, name, SEAL_STATE)):
            return os.path.join(output_dir, name)
    return None


def keep_rounds_before(path: str, first_round: int) -> None:
    """Rewrite a per-round JSONL without rows of rounds >= `first_round` (they are about to be redone)."""
    if not os.path.exists(path):
        return
    kept = [json.dumps(row, ensure_ascii=False, default=str) + "\n" for row in read_complete_lines(path)
            if row.get("round", first_round) < first_round]
    temporary = f"{path}.tmp-{os.getpid()}"
    with open(temporary, "w", encoding="utf-8") as f:
        f.writelines(kept)
        f.flush()
        os.fsync(f.fileno())
    os.replace(temporary, path)


def scalar_settings(obj: Any) -> dict[str, Any]:
    """The public scalar attributes of a reward function or inner adapter: what a ledger fingerprint compares.

    An object with a dataclass `config` (the LoRA inner adapters' `InnerLoRAConfig`) contributes every field of it."""
    values = {"type": f"{type(obj).__module__}.{type(obj).__qualname__}"}
    config = getattr(obj, "config", None)
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        values.update(json.loads(json.dumps(dataclasses.asdict(config), default=str)))
    for name, value in sorted(getattr(obj, "__dict__", {}).items()):
        if name.startswith("_") or name in RUNTIME_ATTRIBUTES:
            continue
        if type(value).__name__ == "dtype":  # torch.dtype
            values[name] = str(value)
        elif isinstance(value, (bool, int, float, str, type(None))):
            values[name] = value
        elif isinstance(value, (list, tuple)) and all(isinstance(v, (bool, int, float, str)) for v in value):
            values[name] = list(value)
        elif callable(value) and hasattr(value, "__qualname__"):
            values[name] = f"{getattr(value, '__module__', '')}.{value.__qualname__}"
    return values
