"""The ledger: every scored self-edit, appended and fsync'd as soon as its reward is known.

A SEAL round is hours of inner loops. The ledger (`<output_dir>/seal_ledger/process-<rank>.jsonl`, one file per
process so processes never write the same file) records each scored self-edit under a key that does not depend on
the process layout: round, policy step, index in the round and the SHA-256 of its prompt and text. A resumed run (or
a fresh run in the same folder) regenerates the round's self-edits (seeded sampling makes them the same), looks each
one up, and trains only those the ledger does not hold: nothing scored is scored again. `config.json` beside the
files records the settings that decide rewards; a ledger written under other settings is refused, naming the field.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

LEDGER_FOLDER = "seal_ledger"
# Fingerprint keys added after ledgers were written: a ledger that predates one still resumes (unchecked for it).
ADDED_LATER = ("inner_dtype_resolved",)


def text_sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", errors="surrogatepass")).hexdigest()


class Ledger:
    """Append-only record of scored self-edits, readable across processes and restarts.

    Example:
    ```python
    >>> ledger = Ledger("outputs/run", process_index=0, fingerprint={"seed": 0})
    >>> ledger.append([{"round": 0, "policy_step": 0, "index": 3, "self_edit_sha256": "ab..", "reward": 0.5}])
    >>> ledger.lookup(0, 0, 3, "ab..")["reward"]
    0.5
    ```
    """

    def __init__(self, output_dir: str, process_index: int, fingerprint: dict[str, Any], is_main_process: bool = True):
        self.folder = os.path.join(output_dir, LEDGER_FOLDER)
        self.path = os.path.join(self.folder, f"process-{process_index}.jsonl")
        os.makedirs(self.folder, exist_ok=True)
        self._check_fingerprint(fingerprint, is_main_process)
        self.entries: dict[tuple, dict] = {}
        self.reload()

    @staticmethod
    def key(round_index: int, policy_step: int, index: int, sha256: str) -> tuple:
        return (int(round_index), int(policy_step), int(index), sha256)

    def reload(self) -> None:
        """Read every process's file (a line cut short by a crash is skipped: it was work in flight)."""
        self.entries = {}
        for name in sorted(os.listdir(self.folder)):
            if name.startswith("process-") and name.endswith(".jsonl"):
                for entry in read_complete_lines(os.path.join(self.folder, name)):
                    key = self.key(entry["round"], entry["policy_step"], entry["index"], entry["self_edit_sha256"])
                    self.entries.setdefault(key, entry)
        _drop_partial_last_line(self.path)

    def lookup(self, round_index: int, policy_step: int, index: int, sha256: str) -> dict | None:
        return self.entries.get(self.key(round_index, policy_step, index, sha256))

    def append(self, entries: list[dict]) -> None:
        """Write the entries, flush and fsync before returning: once this returns they survive a SIGKILL."""
        append_jsonl(self.path, entries, ensure_ascii=True)
        for entry in entries:
            key = self.key(entry["round"], entry["policy_step"], entry["index"], entry["self_edit_sha256"])
            self.entries.setdefault(key, entry)

    def _check_fingerprint(self, fingerprint: dict[str, Any], is_main_process: bool) -> None:
        path = os.path.join(self.folder, "config.json")
        fingerprint = json.loads(json.dumps(fingerprint, default=str))  # compare what JSON can hold
        if os.path.exists(path):
            with open(path, encoding="utf-8") as f:
                recorded = json.load(f)
            fingerprint = {k: v for k, v in fingerprint.items() if k in recorded or k not in ADDED_LATER}
            differences = describe_differences(recorded, fingerprint)
            if differences:
                raise ValueError(
                    f"{self.folder} holds rewards scored under other settings ({differences}). Their rewards would "
                    "not match this run: use another output_dir, or the same settings to resume."
                )
        elif is_main_process:
            write_json_atomically(path, fingerprint)


def describe_differences(recorded: dict[str, Any], current: dict[str, Any]) -> str:
    """`"seed: 1 there, 0 here; ..."` for every key whose value differs (missing keys count as None)."""
    keys = sorted(set(recorded) | set(current))
    return "; ".join(f"{k}: {recorded.get(k)!r} there, {current.get(k)!r} here"
                     for k in keys if recorded.get(k) != current.get(k))


def write_json_atomically(path: str, value: Any) -> None:
    """Write to a temporary file, fsync, then rename over `path`: readers see the old or the new file, never half."""
    temporary = f"{path}.tmp-{os.getpid()}"
    with open(temporary, "w", encoding="utf-8") as f:
        json.dump(value, f, indent=1, default=str)
        f.flush()
        os.fsync(f.fileno())
    os.replace(temporary, path)


def append_jsonl(path: str, rows: list[dict], ensure_ascii: bool = False) -> None:
    """Append one JSON line per row, flush and fsync before returning: once this returns the rows survive a SIGKILL
    (and `read_complete_lines` skips a line a kill cut short)."""
    if not rows:
        return
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=ensure_ascii, default=str) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_complete_lines(path: str) -> list[dict]:
    """The rows of a JSONL file, skipping a last line cut short by a crash and lines that are not JSON."""
    entries = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if not line.endswith("\n"):
                break  # cut short by a crash
            try:
                entries.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return entries


def _drop_partial_last_line(path: str) -> None:
    """Truncate a last line without its newline, so the next append does not glue onto it."""
    if not os.path.exists(path) or os.path.getsize(path) == 0:
        return
    with open(path, "rb+") as f:
        data = f.read()
        if data.endswith(b"\n"):
            return
        f.truncate(data.rfind(b"\n") + 1)
