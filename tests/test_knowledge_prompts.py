import pytest

from trl_seal.knowledge.data import load_passages
from trl_seal.knowledge.prompts import SELF_EDIT_PROMPTS, self_edit_dataset, self_edit_prompt, training_documents

PASSAGE = load_passages([{"title": "Quellmarsh", "context": "Quellmarsh was founded in 1702.",
                          "questions": [{"question": "When was Quellmarsh founded?", "answer": "1702"}]}])[0]


@pytest.mark.parametrize("style", sorted(SELF_EDIT_PROMPTS))
def test_every_style_shows_title_and_passage(style):
    text = self_edit_prompt(PASSAGE, style)
    assert "Quellmarsh was founded in 1702." in text and "Title: Quellmarsh" in text


def test_user_template_and_errors():
    prompt = self_edit_prompt(PASSAGE, template="Notes on {title}: {context}")
    assert prompt == "Notes on Quellmarsh: " + PASSAGE.context
    with pytest.raises(ValueError, match="context"):
        self_edit_prompt(PASSAGE, template="about {title}")
    with pytest.raises(ValueError, match="implications"):
        self_edit_prompt(PASSAGE, "summary")


def test_training_documents():
    edit = "1. It is old.\n\n- It lies on a river.\n   \n* Founded 1702."
    docs = [d.completion for d in training_documents("Q", "Q is a town.", edit)]
    assert docs == ["Q\nIt is old.", "Q\nIt lies on a river.", "Q\nFounded 1702.", "Q\nQ is a town."]
    whole = training_documents("Q", "Q is a town.", edit, "whole", include_passage=False)
    assert len(whole) == 1 and whole[0].completion.startswith("Q\n1. It is old.")
    assert all(d.prompt == "" for d in whole)
    beside = [d.completion for d in training_documents("Q", "Q is a town.", "It is old.\nOn a river.", "whole")]
    assert beside == ["Q\nIt is old.\nOn a river.", "Q\nQ is a town."]
    appended = training_documents("Q", "Q is a town.", "  It is old.\nOn a river.\n", "appended")
    assert [d.completion for d in appended] == ["Q\nQ is a town.\nIt is old.\nOn a river."]
    assert [d.completion for d in training_documents("Q", "Q is a town.", " \n", "appended")] == ["Q\nQ is a town."]


def test_training_documents_reject_unknown_or_impossible_layouts():
    with pytest.raises(ValueError, match="'paragraphs'.*appended.*lines.*whole"):
        training_documents("Q", "Q is a town.", "It is old.", "paragraphs")
    with pytest.raises(ValueError, match="needs include_passage=True"):
        training_documents("Q", "Q is a town.", "It is old.", "appended", include_passage=False)


def test_self_edit_dataset_columns():
    dataset = self_edit_dataset([PASSAGE])
    assert set(dataset.column_names) == {"prompt", "title", "context", "questions", "passage_id"}
    assert dataset[0]["prompt"][0]["role"] == "user" and dataset[0]["questions"][0]["answers"] == ["1702"]
    assert isinstance(self_edit_dataset([PASSAGE], chat=False)[0]["prompt"], str)
