"""Bad input fails before any model is loaded, naming the file, row and field and what to do.

The model is given as a path that does not exist: an error about the data proves nothing was loaded first."""

import pytest
from conftest import seal_args
from datasets import Dataset

from trl_seal import ARCReward, SEALTrainer
from trl_seal.knowledge.data import PassageDataError, load_passages
from trl_seal.knowledge.prompts import self_edit_dataset
from trl_seal.knowledge.reward import KnowledgeQAReward

NO_MODEL = "/nonexistent/model-that-would-fail-to-load"
PASSAGES = [{"title": f"T{i}", "context": f"Fact {i}.", "questions": [{"question": "q?", "answer": "a"}]}
            for i in range(4)]


def build(tmp_path, reward, rows):
    return SEALTrainer(model=NO_MODEL, reward_fn=reward, args=seal_args(tmp_path, contexts_per_round=2,
                       num_generations=2, per_device_train_batch_size=2), train_dataset=Dataset.from_list(rows))


def knowledge_rows():
    return self_edit_dataset(load_passages(PASSAGES), chat=False).to_list()


def test_duplicated_context_ids_name_both_rows(tmp_path):
    rows = knowledge_rows()
    rows[3]["passage_id"] = rows[1]["passage_id"]
    with pytest.raises(ValueError, match=r"rows 1 and 3 share passage_id"):
        build(tmp_path, KnowledgeQAReward(), rows)


@pytest.mark.parametrize(("field", "value", "message"), [
    ("context", "  ", r"train_dataset, row 2: field 'context' is missing or empty"),
    ("questions", [{"question": "q?"}], r"row 2, questions\[0\]: field 'answer' \(or 'answers'\) is missing"),
])
def test_knowledge_rows_are_checked_before_the_model_loads(tmp_path, field, value, message):
    rows = knowledge_rows()
    rows[2][field] = value
    with pytest.raises(PassageDataError, match=message):
        build(tmp_path, KnowledgeQAReward(), rows)


def test_missing_reward_columns_say_how_to_build_them(tmp_path):
    with pytest.raises(ValueError, match=r"lacks the columns \['title', 'context', 'questions'\].*self_edit_dataset"):
        build(tmp_path, KnowledgeQAReward(), [{"prompt": f"p{i}"} for i in range(4)])


@pytest.mark.parametrize(("grid", "message"), [
    ([[1, 2], [3]], "rows have different lengths"),
    ([[1, 12]], "integer colour 0-9"),
    ([[0] * 31] * 31, "at most 30x30"),
])
def test_bad_arc_grids_name_the_row(tmp_path, grid, message):
    good = {"input": [[1, 2]], "output": [[2, 1]]}
    rows = [{"prompt": f"p{i}", "task_id": f"t{i}", "train": [good], "test": [good]} for i in range(4)]
    rows[1]["train"] = [{"input": grid, "output": [[1]]}]
    with pytest.raises(ValueError, match=f"dataset row 1.*{message}"):
        build(tmp_path, ARCReward(), rows)


@pytest.mark.parametrize(("overrides", "message"), [
    ({"temperature": 0.0}, "temperature=0.0"),
    ({"top_p": 1.5}, r"top_p=1.5 must be in \(0, 1\]"),
    ({"scoring_chunk_size": 0}, "scoring_chunk_size=0"),
    ({"num_generations": 1}, "num_generations=1"),
    ({"strategy": "ppo"}, "strategy='ppo' is unknown"),
    ({"restart_each_round": True, "strategy": "policy_gradient"}, "restart_each_round is a ReST-EM option"),
])
def test_config_values_out_of_range_or_contradicting(tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        seal_args(tmp_path, **overrides)


def test_unreadable_passage_file_names_the_file(tmp_path):
    path = tmp_path / "passages.json"
    path.write_text('[{"title": "a", "context": ')
    with pytest.raises(PassageDataError, match=f"Cannot read passages from {path}"):
        load_passages(str(path))
