"""Self-edit prompts for knowledge incorporation, and how a self-edit becomes training documents.

Styles follow the paper's menu (implications is the default); the wording is ours. A user template is any string with
`{title}` and `{context}` placeholders.
"""

from __future__ import annotations

import re

from ..types import TrainingExample
from .data import Passage

SELF_EDIT_PROMPTS = {
    "implications": (
        "Read the passage below and write a list of implications: facts and consequences that follow from it, one "
        "per line. Each line should stand on its own and name who or what it is about.\n\n"
        "Title: {title}\nPassage: {context}\n\nImplications:"
    ),
    "implications-long": (
        "Read the passage below and write a long, thorough list of implications: every fact it states or implies, "
        "restated in your own words, one complete sentence per line, each naming who or what it is about.\n\n"
        "Title: {title}\nPassage: {context}\n\nImplications:"
    ),
    "rewrite": (
        "Rewrite the passage below in several different ways that keep every fact (names, numbers, dates, places). "
        "Put each rewrite on its own line.\n\nTitle: {title}\nPassage: {context}\n\nRewrites:"
    ),
    "self-qa": (
        "Write question and answer pairs that together cover every fact in the passage below. Put each pair on one "
        "line as 'Q: ... A: ...', and name who or what the question is about.\n\n"
        "Title: {title}\nPassage: {context}\n\nQuestions and answers:"
    ),
    # Keeps the passage's own wording (what a small model recalls best) and adds one restatement per sentence.
    "passage-sentences": (
        "Go through the passage below one sentence at a time. For each sentence, copy it on one line, then write it "
        "again in different words on the next line, keeping every name, number, date and place.\n\n"
        "Title: {title}\nPassage: {context}\n\nSentences and restatements:"
    ),
}

QUESTION_PROMPT = "Answer the question about {title} in a few words.\nQuestion: {question}"
QUESTION_PROMPT_NO_TITLE = "Answer the question in a few words.\nQuestion: {question}"

_LIST_MARKER = re.compile(r"^\s*(?:[-*\u2022]|\d+[.)])\s+")


def self_edit_prompt(passage: Passage, style: str = "implications", template: str | None = None) -> str:
    """The text asking the policy for a self-edit of `passage` (a named style, or your own template).

    Example:
    ```python
    >>> self_edit_prompt(passage, template="Summarise {title}: {context}")
    ```
    """
    if template is None:
        if style not in SELF_EDIT_PROMPTS:
            raise ValueError(f"Unknown self-edit style {style!r}: use one of {sorted(SELF_EDIT_PROMPTS)} or a "
                             "template.")
        template = SELF_EDIT_PROMPTS[style]
    elif "{context}" not in template:
        raise ValueError("A self-edit template must contain '{context}' (and may contain '{title}').")
    return template.replace("{title}", passage.title).replace("{context}", passage.context)


# How a self-edit becomes training documents (`training_documents`):
DOCUMENT_LAYOUTS = {
    "lines": "one document per self-edit line, plus the passage (the paper's)",
    "whole": "the whole self-edit as one document, plus the passage",
    "appended": "one document: the passage followed by the self-edit (as many optimizer steps as the passage alone)",
}


def training_documents(
    title: str, context: str, self_edit: str, layout: str = "lines", include_passage: bool = True
) -> list[TrainingExample]:
    """Documents the inner loop trains on, each prefixed by the title. `layout` (`DOCUMENT_LAYOUTS`): each non-empty
    line of the self-edit (list markers stripped) as a document, or the whole self-edit as one, each beside the
    passage itself unless `include_passage=False`; or `"appended"`: the passage and the self-edit in one document.

    Example:
    ```python
    >>> [d.completion for d in training_documents("Quellmarsh", "Quellmarsh is a town.", "1. It is small.\\n")]
    ['Quellmarsh\\nIt is small.', 'Quellmarsh\\nQuellmarsh is a town.']
    >>> [d.completion for d in training_documents("Quellmarsh", "Quellmarsh is a town.", "It is small.", "appended")]
    ['Quellmarsh\\nQuellmarsh is a town.\\nIt is small.']
    ```
    """
    check_layout(layout, include_passage)
    if layout == "appended":
        return [TrainingExample(f"{title}\n{context}\n{self_edit.strip()}" if self_edit.strip() else
                                f"{title}\n{context}")]
    if layout == "lines":
        pieces = [_LIST_MARKER.sub("", line).strip() for line in self_edit.splitlines()]
    else:
        pieces = [self_edit.strip()]
    documents = [TrainingExample(f"{title}\n{piece}") for piece in pieces if piece]
    if include_passage:
        documents.append(TrainingExample(f"{title}\n{context}"))
    return documents


def check_layout(layout: str, include_passage: bool = True) -> None:
    """Fail on an unknown layout, or on `"appended"` without the passage (it is the passage plus the self-edit)."""
    if layout not in DOCUMENT_LAYOUTS:
        raise ValueError(f"document layout {layout!r}: use one of {sorted(DOCUMENT_LAYOUTS)} "
                         f"({'; '.join(f'{k}: {v}' for k, v in DOCUMENT_LAYOUTS.items())}).")
    if layout == "appended" and not include_passage:
        raise ValueError("document layout 'appended' writes the self-edit after the passage, so it needs "
                         "include_passage=True; use 'lines' or 'whole' to train on the self-edit alone.")


def question_prompt(title: str, question: str, with_title: bool = True) -> str:
    """The closed-book question as the adapted model sees it: the passage title (unless `with_title=False`), never
    the passage.

    Example:
    ```python
    >>> question_prompt("Quellmarsh", "How big is it?", with_title=False)
    'Answer the question in a few words.\\nQuestion: How big is it?'
    ```
    """
    template = QUESTION_PROMPT if with_title else QUESTION_PROMPT_NO_TITLE
    return template.format(title=title, question=question)


def self_edit_dataset(passages, style: str = "implications", template: str | None = None, chat: bool = True):
    """A `datasets.Dataset` for `SEALTrainer`: `prompt` (chat messages, or text with `chat=False`) plus the
    context columns `title`, `context`, `questions` (`[{question, answers}]`) and `passage_id`."""
    from datasets import Dataset

    rows = []
    for passage in passages:
        text = self_edit_prompt(passage, style, template)
        rows.append(
            {
                "prompt": [{"role": "user", "content": text}] if chat else text,
                "title": passage.title,
                "context": passage.context,
                "questions": passage.question_rows(),
                "passage_id": passage.passage_id,
            }
        )
    return Dataset.from_list(rows)
