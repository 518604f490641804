"""The ledger and the checkpoint checks: durable appends, torn lines, refused settings, complete checkpoints."""

import json

import pytest
from conftest import seal_args

from trl_seal.ledger import Ledger
from trl_seal.resume import (
    SEAL_STATE,
    check_resumable,
    keep_rounds_before,
    last_complete_checkpoint,
    write_seal_state,
)


def entry(index, reward=0.5, round_index=0):
    return {"round": round_index, "policy_step": 0, "index": index, "self_edit_sha256": f"h{index}", "reward": reward,
            "reason": None}


def test_entries_survive_a_reopen_and_are_shared_across_processes(tmp_path):
    first = Ledger(str(tmp_path), 0, {"seed": 0})
    first.append([entry(0), entry(1, reward=None)])
    Ledger(str(tmp_path), 1, {"seed": 0}, is_main_process=False).append([entry(2, reward=1.0)])
    reopened = Ledger(str(tmp_path), 0, {"seed": 0})
    assert reopened.lookup(0, 0, 1, "h1")["reward"] is None
    assert reopened.lookup(0, 0, 2, "h2")["reward"] == 1.0, "another process's file is read too"
    assert reopened.lookup(0, 0, 2, "other text") is None and reopened.lookup(1, 0, 2, "h2") is None


def test_a_line_torn_by_a_crash_is_dropped_and_does_not_corrupt_the_next(tmp_path):
    ledger = Ledger(str(tmp_path), 0, {"seed": 0})
    ledger.append([entry(0)])
    with open(ledger.path, "a") as f:
        f.write('{"round": 0, "policy_step": 0, "ind')  # SIGKILL mid-write
    reopened = Ledger(str(tmp_path), 0, {"seed": 0})
    assert len(reopened.entries) == 1
    reopened.append([entry(1)])
    assert [json.loads(line)["index"] for line in open(reopened.path)] == [0, 1]


def test_a_ledger_from_other_settings_is_refused_naming_the_field(tmp_path):
    Ledger(str(tmp_path), 0, {"seed": 0, "reward": {"type": "a"}})
    with pytest.raises(ValueError, match=r"seed: 0 there, 1 here"):
        Ledger(str(tmp_path), 0, {"seed": 1, "reward": {"type": "a"}})


def test_a_key_added_later_is_checked_only_in_ledgers_that_hold_it(tmp_path):
    """`inner_dtype_resolved` (what dtype "fastest" chose) came after ledgers were written: an older ledger resumes,
    a newer one begun in bfloat16 is refused in float32."""
    Ledger(str(tmp_path / "old"), 0, {"seed": 0})
    Ledger(str(tmp_path / "old"), 0, {"seed": 0, "inner_dtype_resolved": "float32"})
    Ledger(str(tmp_path / "new"), 0, {"seed": 0, "inner_dtype_resolved": "bfloat16"})
    with pytest.raises(ValueError, match=r"inner_dtype_resolved: 'bfloat16' there, 'float32' here"):
        Ledger(str(tmp_path / "new"), 0, {"seed": 0, "inner_dtype_resolved": "float32"})


def test_checkpoints_from_another_version_or_config_are_refused(tmp_path):
    args = seal_args(tmp_path)
    state = {"trl_seal_version": "9.9", "config": args.to_dict()}
    with pytest.raises(ValueError, match="written by trl_seal 9.9"):
        check_resumable(state, args.to_dict(), "0.1.0", "ckpt")
    changed = seal_args(tmp_path, learning_rate=1e-2, logging_steps=5, num_rounds=3)
    state["trl_seal_version"] = "0.1.0"
    with pytest.raises(ValueError, match=r"learning_rate: 0.003 there, 0.01 here") as error:
        check_resumable(state, changed.to_dict(), "0.1.0", "ckpt")
    assert "logging_steps" not in str(error.value) and "num_rounds" not in str(error.value)
    check_resumable(state, seal_args(tmp_path, logging_steps=5, num_rounds=3).to_dict(), "0.1.0", "ckpt")


def test_the_last_complete_checkpoint_skips_one_cut_short(tmp_path):
    for step in (2, 4, 6):
        (tmp_path / f"checkpoint-{step}").mkdir()
    write_seal_state(str(tmp_path / "checkpoint-2"), {"round": 1})
    write_seal_state(str(tmp_path / "checkpoint-4"), {"round": 2})
    assert last_complete_checkpoint(str(tmp_path)).endswith("checkpoint-4")
    assert (tmp_path / "checkpoint-4" / SEAL_STATE).is_file()
    assert last_complete_checkpoint(str(tmp_path / "missing")) is None


def test_rows_of_rounds_to_redo_are_dropped(tmp_path):
    path = tmp_path / "self_edits.jsonl"
    path.write_text("".join(json.dumps({"round": r, "x": r}) + "\n" for r in (0, 0, 1, 2)) + '{"round": 2, "x"')
    keep_rounds_before(str(path), 1)
    assert [json.loads(line)["round"] for line in path.read_text().splitlines()] == [0, 0]


def test_checkpoints_must_fall_on_round_boundaries(tmp_path):
    args = seal_args(tmp_path, save_strategy="steps", save_steps=0)
    assert args.save_steps == args.optimizer_steps_per_round == 4  # 0: every round
    assert seal_args(tmp_path, save_strategy="steps", save_steps=8).save_steps == 8
    with pytest.raises(ValueError, match="save_steps=6 is not a multiple of the 4 optimizer steps of a round"):
        seal_args(tmp_path, save_strategy="steps", save_steps=6)


def test_the_trainer_fingerprints_what_fastest_chose_on_this_host(monkeypatch):
    from types import SimpleNamespace

    import torch

    from trl_seal import SEALTrainer
    from trl_seal.inner import config
    from trl_seal.inner.lora import LoRAInnerAdapter

    trainer = SimpleNamespace(inner_adapter=LoRAInnerAdapter(dtype="fastest"),
                              accelerator=SimpleNamespace(device=torch.device("cpu")))
    monkeypatch.setattr(config, "native_bfloat16", lambda device: False)
    assert SEALTrainer._fastest_dtype_chosen(trainer) == {"inner_dtype_resolved": "float32"}
    monkeypatch.setattr(config, "native_bfloat16", lambda device: True)
    assert SEALTrainer._fastest_dtype_chosen(trainer) == {"inner_dtype_resolved": "bfloat16"}
    trainer.inner_adapter = LoRAInnerAdapter(dtype="float32")
    assert SEALTrainer._fastest_dtype_chosen(trainer) == {}, "a dtype given by name is in the config already"
