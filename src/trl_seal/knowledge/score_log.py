"""What an evaluation has already measured, on disk, so that a killed `trl-seal eval-knowledge` resumes.

A held-out table at the paper's inner settings trains hundreds of adapters (100 passages x 4 conditions is ~2.5 h
on a 2-core CPU). `ScoreLog` appends each finished chunk of passages to a JSONL file, one record per (condition,
passage), and keeps the sampled self-edits of every writer beside it. The file's first line is a fingerprint of the
settings; a run with other settings refuses the folder instead of mixing two evaluations in one table.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass

SCORES_FILE = "scores.jsonl"
SELF_EDITS_FILE = "self_edits.json"
PARTIAL_SELF_EDITS_FILE = "self_edits.partial.json"  # a writer's first passages, while it is still writing


@dataclass
class PartialSelfEdits:
    """The self-edits a writer has written for the first passages of a list, and the torch random state that
    continues their stream (None where each passage draws from its own seed): what `generate_self_edits` resumes."""

    self_edits: list[list[str]]
    rng_state: bytes | None = None


class ScoreLog:
    """Per-passage scores of an evaluation, appended chunk by chunk to `<folder>/scores.jsonl`.

    Args:
        folder (`str`): Where the log lives (the evaluation's output folder).
        fingerprint (`dict`): JSON-able settings the scores depend on (model, passages, inner loop, seed ...).
        resume (`bool`, defaults to `True`): Reuse what a run with the same fingerprint left; `False` starts over.

    Example:
    ```python
    >>> import tempfile
    >>> folder = tempfile.mkdtemp()
    >>> log = ScoreLog(folder, {"seed": 0})
    >>> log.record("passage", [("p1", 0.5), ("p2", 0.0)], {"adapters_per_passage": 1.0})
    >>> ScoreLog(folder, {"seed": 0}).lookup("passage", ["p1", "p2"])
    [(0.5, {'adapters_per_passage': 1.0}), (0.0, {'adapters_per_passage': 1.0})]
    ```
    """

    def __init__(self, folder: str, fingerprint: dict, resume: bool = True):
        self.folder = folder
        self.fingerprint = json.loads(json.dumps(fingerprint))  # as it will read back (tuples become lists)
        self.path = os.path.join(folder, SCORES_FILE)
        self.scores: dict[tuple[str, str], tuple[float, dict]] = {}
        os.makedirs(folder, exist_ok=True)
        if resume and os.path.exists(self.path):
            self._load()
        else:
            self._start()

    def _start(self) -> None:
        for name in (SCORES_FILE, SELF_EDITS_FILE, PARTIAL_SELF_EDITS_FILE):
            if os.path.exists(os.path.join(self.folder, name)):
                os.remove(os.path.join(self.folder, name))
        with open(self.path, "w") as handle:
            handle.write(json.dumps({"fingerprint": self.fingerprint}) + "\n")

    def _load(self) -> None:
        with open(self.path) as handle:
            lines = handle.read().splitlines()
        head = json.loads(lines[0]) if lines else {}
        if head.get("fingerprint") != self.fingerprint:
            changed = sorted(key for key in set(self.fingerprint) | set(head.get("fingerprint") or {})
                             if self.fingerprint.get(key) != (head.get("fingerprint") or {}).get(key))
            raise ValueError(
                f"{self.path} holds scores of an evaluation with other settings (they differ in: "
                f"{', '.join(changed) or 'the whole header'}). Pass another --output_dir, set --resume false to start "
                "over in this one, or rerun with the settings it was written with."
            )
        for number, line in enumerate(lines[1:], 2):
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                if number == len(lines):  # a write cut short by a kill: that chunk is simply measured again
                    break
                raise ValueError(f"{self.path}, line {number}: not JSON. Delete the file to start over.") from None
            self.scores[(row["condition"], row["passage_id"])] = (row["score"], row["extra"])

    def __len__(self) -> int:
        return len(self.scores)

    def lookup(self, condition: str, passage_ids: Sequence[str]) -> list[tuple[float, dict]] | None:
        """`(score, extra)` of every passage, or None unless all of them were recorded for `condition`."""
        found = [self.scores.get((condition, passage_id)) for passage_id in passage_ids]
        return None if any(item is None for item in found) else found

    def record(self, condition: str, rows: Sequence[tuple[str, float]], extra: dict | None = None,
               answers: Sequence[list[list[str]]] | None = None,
               logliks: Sequence[list[float | None]] | None = None,
               specific_logliks: Sequence[list[float | None]] | None = None) -> None:
        """Append the `(passage_id, score)` rows of one finished chunk in a single write, each with the chunk's
        `extra` (e.g. adapters per passage) and, when given, that passage's greedy answers and gold-answer
        log-likelihoods and question-specific log-likelihoods (one entry per adapter): what the grade was given for,
        to check any grader against later (`read_kept`)."""
        extra = dict(extra or {})
        kept = {"answers": answers, "loglik": logliks, "specific_loglik": specific_logliks}
        for key, values in kept.items():
            if values is not None and len(values) != len(rows):
                raise ValueError(f"{len(values)} {key} lists for {len(rows)} passages of {condition!r}: pass one "
                                 "per row.")
        text = "".join(json.dumps({"condition": condition, "passage_id": passage_id, "score": score, "extra": extra,
                                   **{key: values[n] for key, values in kept.items() if values is not None}}) + "\n"
                       for n, (passage_id, score) in enumerate(rows))
        with open(self.path, "a") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        for passage_id, score in rows:
            self.scores[(condition, passage_id)] = (score, extra)

    def read_answers(self) -> dict[tuple[str, str], list[list[str]]]:
        """`{(condition, passage_id): answers}` of every recorded passage that kept its greedy answers."""
        return read_kept(self.folder)

    def self_edits(self, writer: str) -> list[list[str]] | None:
        """The self-edits `writer` wrote in an earlier run with these settings, or None."""
        return self._read_json(SELF_EDITS_FILE).get(writer)

    def save_self_edits(self, writer: str, self_edits: list[list[str]]) -> None:
        """Keep a writer's finished self-edits (and drop what its partial record held)."""
        saved = self._read_json(SELF_EDITS_FILE)
        saved[writer] = self_edits
        self._write_json(SELF_EDITS_FILE, saved)
        partial = self._read_json(PARTIAL_SELF_EDITS_FILE)
        if partial.pop(writer, None) is not None and partial:
            self._write_json(PARTIAL_SELF_EDITS_FILE, partial)
        elif not partial and os.path.exists(os.path.join(self.folder, PARTIAL_SELF_EDITS_FILE)):
            os.remove(os.path.join(self.folder, PARTIAL_SELF_EDITS_FILE))

    def partial_self_edits(self, writer: str) -> PartialSelfEdits | None:
        """What `writer` had written when an earlier run with these settings was stopped mid-writing, or None."""
        row = self._read_json(PARTIAL_SELF_EDITS_FILE).get(writer)
        if row is None:
            return None
        state = row.get("rng_state")
        return PartialSelfEdits(row["self_edits"], None if state is None else base64.b64decode(state))

    def save_partial_self_edits(self, writer: str, partial: PartialSelfEdits) -> None:
        saved = self._read_json(PARTIAL_SELF_EDITS_FILE)
        state = None if partial.rng_state is None else base64.b64encode(partial.rng_state).decode("ascii")
        saved[writer] = {"self_edits": partial.self_edits, "rng_state": state}
        self._write_json(PARTIAL_SELF_EDITS_FILE, saved)

    def _read_json(self, name: str) -> dict:
        path = os.path.join(self.folder, name)
        if not os.path.exists(path):
            return {}
        with open(path) as handle:
            return json.load(handle)

    def _write_json(self, name: str, value: dict) -> None:
        temporary = os.path.join(self.folder, name + ".tmp")
        with open(temporary, "w") as handle:
            json.dump(value, handle)
        os.replace(temporary, os.path.join(self.folder, name))  # never a half-written file


def read_kept(folder: str, key: str = "answers") -> dict[tuple[str, str], list]:
    """What an evaluation in `folder` kept beside its grades, per adapter: `key="answers"`, the greedy answers
    (`{(condition, passage_id): [answers of each adapter]}`), `key="loglik"`, the gold answers' mean
    log-likelihood per token, or `key="specific_loglik"`, that minus the other questions' answers' (kept when the
    evaluation's reward scored `specific_loglik`).

    Example:
    ```python
    >>> answers = read_kept("outputs/seal_squad/eval")
    >>> answers[("passage", passage.passage_id)][0]  # the passage-only adapter's answer to each question
    ```
    """
    path = os.path.join(folder, SCORES_FILE)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no scores there; pass the --output_dir of a `trl-seal eval-knowledge` run.")
    found = {}
    with open(path) as handle:
        for line in handle.readlines()[1:]:
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue  # a write cut short by a kill, measured again on resume
            if key in row:
                found[(row["condition"], row["passage_id"])] = row[key]
    return found
