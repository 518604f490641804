import json
from pathlib import Path

import pytest

from trl_seal.knowledge.data import PassageDataError, load_passages, sample_passages

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "squad" / "squad_v1.1_dev_passages.json"
ROWS = [
    {"title": "Quellmarsh", "context": "Quellmarsh was founded in 1702.", "questions": [
        {"question": "When was Quellmarsh founded?", "answer": "1702"}]},
]


def test_list_format_in_memory_and_embedded_set():
    (passage,) = load_passages(ROWS)
    assert passage.title == "Quellmarsh" and passage.questions[0].answers == ("1702",)
    embedded = load_passages()
    assert len(embedded) >= 40 and all(len(p.questions) >= 4 for p in embedded)
    assert all(a in p.context for p in embedded for q in p.questions for a in q.answers)
    assert len({p.passage_id for p in embedded}) == len(embedded)


@pytest.mark.skipif(not SHARED.is_file(), reason="../shared/data is not beside this checkout")
def test_shared_squad_file():
    passages = load_passages(SHARED)
    assert len(passages) == 1867 and passages[0].title == "Super Bowl 50"


def test_official_nested_json(tmp_path):
    data = {"data": [{"title": "T", "paragraphs": [{"context": "C one.", "qas": [
        {"question": "Q?", "answers": [{"text": "one", "answer_start": 2}, {"text": "one"}]}]}]}]}
    path = tmp_path / "squad.json"
    path.write_text(json.dumps(data))
    (passage,) = load_passages(path)
    assert passage.questions[0].answers == ("one",)


def test_flat_rows_are_grouped_by_context(tmp_path):
    rows = [
        {"title": "A", "context": "ctx a", "question": "q1", "answers": {"text": ["x"], "answer_start": [0]}},
        {"title": "B", "context": "ctx b", "question": "q2", "answers": {"text": ["y"]}},
        {"title": "A", "context": "ctx a", "question": "q3", "answer": "z"},
    ]
    path = tmp_path / "flat.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    passages = load_passages(path)
    assert [p.title for p in passages] == ["A", "B"] and [q.question for q in passages[0].questions] == ["q1", "q3"]
    import pyarrow as pa
    import pyarrow.parquet as pq

    parquet = tmp_path / "flat.parquet"
    flat = [{k: v for k, v in r.items() if k != "answers"} | {"answer": "x"} for r in rows]
    pq.write_table(pa.Table.from_pylist(flat), parquet)
    assert len(load_passages(parquet)) == 2


@pytest.mark.parametrize(
    "row, message",
    [
        ({"context": "c", "questions": [{"question": "q", "answer": "a"}]}, "row 1: field 'title'"),
        ({"title": "t", "context": " ", "questions": [{"question": "q", "answer": "a"}]}, "row 1: field 'context'"),
        ({"title": "t", "context": "c", "questions": []}, "row 1: field 'questions'"),
        ({"title": "t", "context": "c", "questions": [{"question": "q", "answer": ""}]},
         r"row 1, questions\[0\]: field 'answer'"),
        ({"title": "t", "context": "c", "questions": [{"answer": "a"}]}, r"row 1, questions\[0\]: field 'question'"),
    ],
)
def test_bad_rows_name_the_row_and_field(row, message):
    with pytest.raises(PassageDataError, match=message):
        load_passages([ROWS[0], row])


def test_unreadable_and_missing_files(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(PassageDataError, match="bad.json"):
        load_passages(bad)
    with pytest.raises(FileNotFoundError, match="missing.json"):
        load_passages(tmp_path / "missing.json")


def _numbered(n: int):
    rows = [{"title": f"t{i}", "context": f"c{i}", "questions": [{"question": "q", "answer": "a"}] * (1 + i % 3)}
            for i in range(n)]
    return load_passages(rows)


def test_sample_passages_is_seeded_nested_and_continues_disjoint():
    passages = _numbered(30)
    first = sample_passages(passages, 5, seed=1, start=10, min_questions=2)
    assert all(i >= 10 and len(p.questions) >= 2 for i, p in first) and len(first) == 5
    assert first == sample_passages(passages, 5, seed=1, start=10, min_questions=2), "seeded"
    assert sample_passages(passages, 8, seed=1, start=10, min_questions=2)[:5] == first, "a larger count extends"
    rest = sample_passages(passages, None, seed=1, start=10, min_questions=2, skip=5)
    assert not {i for i, _ in first} & {i for i, _ in rest} and len(first) + len(rest) == 14, "skip continues"
    assert all(i < 20 for i, _ in sample_passages(passages, 3, start=0, stop=20)), "stop bounds the range"
    with pytest.raises(ValueError, match="Only 14 passages qualify"):
        sample_passages(passages, 15, seed=1, start=10, min_questions=2)
