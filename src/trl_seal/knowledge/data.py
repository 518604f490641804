"""Loading SQuAD-style passages and building the self-edit dataset.

Accepted sources, all producing `Passage` records:
- the list format of the embedded set (and of SQuAD exports in that shape):
  `[{title, context, questions: [{question, answer}]}]`;
- the official nested SQuAD json (`{"data": [{"title", "paragraphs": [{"context", "qas": [...]}]}]}`);
- flat SQuAD rows (one row per question: `title`, `context`, `question`, `answers` = `{"text": [...]}` or a string),
  grouped into passages by context, as `rajpurkar/squad` on the hub;
- local .json / .jsonl / .parquet files in any of these shapes, or a hub dataset name.
A row with a missing or empty field fails with an error naming the source, the row and the field.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

EMBEDDED = Path(__file__).resolve().parent.parent / "data" / "invented_passages.json"


@dataclass(frozen=True)
class Question:
    question: str
    answers: tuple[str, ...]


@dataclass(frozen=True)
class Passage:
    title: str
    context: str
    questions: tuple[Question, ...]

    def question_rows(self) -> list[dict]:
        """The questions as `[{"question", "answers"}]` rows (the format every passage source accepts)."""
        return [{"question": q.question, "answers": list(q.answers)} for q in self.questions]

    @property
    def passage_id(self) -> str:
        """A stable id: hash of title and context."""
        return hashlib.sha1(f"{self.title}\n{self.context}".encode()).hexdigest()[:16]


class PassageDataError(ValueError):
    """A passage source has a malformed row."""


def sample_passages(
    passages: Sequence[Passage], count: int | None, seed: int = 0, start: int = 0, stop: int | None = None,
    min_questions: int = 1, max_questions: int | None = None, skip: int = 0,
) -> list[tuple[int, Passage]]:
    """`(index, passage)` pairs drawn without replacement from `passages[start:stop]` with `min_questions` to
    `max_questions` questions, in an order shuffled by `seed`, after the first `skip` of that order (`count=None`:
    all the rest).

    The same pool and seed always give the same order, so a larger `count` extends a smaller sample and `skip=N`
    continues, disjoint, where a sample of N ended: studies, training and evaluation can take non-overlapping
    samples of one file.

    Example:
    ```python
    >>> first = sample_passages(passages, 24, start=1000, min_questions=4, max_questions=8)
    >>> after = sample_passages(passages, 100, start=1000, min_questions=4, max_questions=8, skip=24)  # disjoint
    ```
    """
    pool = [(i, p) for i, p in enumerate(passages[:stop]) if i >= start and len(p.questions) >= min_questions
            and (max_questions is None or len(p.questions) <= max_questions)]
    random.Random(seed).shuffle(pool)
    wanted = len(pool) - skip if count is None else count
    if skip < 0 or wanted < 0 or skip + wanted > len(pool):
        raise ValueError(f"Only {len(pool)} passages qualify (index {start} to {stop if stop is not None else 'end'}, "
                         f"{min_questions} to {max_questions or 'any'} questions); {skip} skipped + {wanted} asked "
                         "for do not fit: ask for fewer or widen the range.")
    return pool[skip : skip + wanted]


def load_passages(source: str | Path | Sequence[Mapping] | None = None, split: str = "validation") -> list[Passage]:
    """Load passages from rows in memory, a local file, or a hub dataset name (None: the embedded invented set).

    Example:
    ```python
    >>> passages = load_passages("squad_passages.json")  # a local file in any accepted format
    >>> passages[0].title, len(passages[0].questions)
    ```
    """
    if source is None:
        source = EMBEDDED
    if isinstance(source, (list, tuple)):
        return passages_from_rows(source, "the given rows")
    path = Path(source)
    if path.suffix in (".json", ".jsonl", ".parquet"):
        if not path.is_file():
            raise FileNotFoundError(
                f"Passage file {path} does not exist: pass a .json/.jsonl/.parquet path or a hub name."
            )
        return passages_from_rows(_read_rows(path), str(path))
    from datasets import load_dataset

    return passages_from_rows(load_dataset(str(source), split=split), f"{source}[{split}]")


def _read_rows(path: Path) -> list[Mapping]:
    try:
        if path.suffix == ".parquet":
            import pyarrow.parquet as pq

            return pq.read_table(path).to_pylist()
        text = path.read_text(encoding="utf-8")
        if path.suffix == ".jsonl":
            return [json.loads(line) for line in text.splitlines() if line.strip()]
        data = json.loads(text)
    except (OSError, ValueError) as error:
        raise PassageDataError(f"Cannot read passages from {path}: {error}. Check the file's format.") from error
    if isinstance(data, Mapping) and isinstance(data.get("data"), list):
        return _unnest_official(data["data"])
    if not isinstance(data, list):
        raise PassageDataError(
            f"{path}: expected a JSON list of rows or SQuAD's {{'data': [...]}}, got {type(data).__name__}."
        )
    return data


def _unnest_official(articles: list[Mapping]) -> list[Mapping]:
    rows = []
    for article in articles:
        for paragraph in article.get("paragraphs", []):
            questions = [
                {"question": qa.get("question"), "answers": [a.get("text") for a in qa.get("answers", [])]}
                for qa in paragraph.get("qas", [])
            ]
            rows.append({"title": article.get("title"), "context": paragraph.get("context"), "questions": questions})
    return rows


def passages_from_rows(rows: Iterable[Mapping], source: str) -> list[Passage]:
    """Validate rows in the list or flat format and group flat rows into passages (order of first appearance)."""
    grouped: dict[tuple[str, str], list[Question]] = {}
    for index, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise PassageDataError(f"{source}, row {index}: expected an object, got {type(row).__name__}.")
        title = _text(row, "title", index, source)
        context = _text(row, "context", index, source)
        questions = grouped.setdefault((title, context), [])
        if "questions" in row:
            if not isinstance(row["questions"], list) or not row["questions"]:
                raise PassageDataError(f"{source}, row {index}: field 'questions' must be a non-empty list.")
            questions.extend(_question(q, index, source, f"questions[{i}]") for i, q in enumerate(row["questions"]))
        else:
            questions.append(_question(row, index, source, "question"))
    return [Passage(title, context, tuple(questions)) for (title, context), questions in grouped.items()]


def _question(row: Any, index: int, source: str, where: str) -> Question:
    if not isinstance(row, Mapping):
        raise PassageDataError(f"{source}, row {index}, {where}: expected an object with 'question' and 'answer(s)'.")
    question = _text(row, "question", index, source, where)
    raw = row.get("answers", row.get("answer"))
    if isinstance(raw, Mapping):  # hub SQuAD: {"text": [...], "answer_start": [...]}
        raw = raw.get("text")
    answers = [raw] if isinstance(raw, str) else list(raw or [])
    answers = [a.strip() for a in answers if isinstance(a, str) and a.strip()]
    if not answers:
        raise PassageDataError(
            f"{source}, row {index}, {where}: field 'answer' (or 'answers') is missing or empty; give the gold answer."
        )
    return Question(question, tuple(dict.fromkeys(answers)))


def _text(row: Mapping, field: str, index: int, source: str, where: str = "") -> str:
    value = row.get(field)
    if not isinstance(value, str) or not value.strip():
        place = f", {where}" if where else ""
        raise PassageDataError(
            f"{source}, row {index}{place}: field '{field}' is missing or empty ({value!r}); every row needs a "
            f"non-empty '{field}'."
        )
    return value.strip()
