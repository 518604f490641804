"""`KnowledgeQAReward`: a self-edit is worth what the passage's closed-book questions gain after training on it."""

from __future__ import annotations

import contextlib

from collections.abc import Callable, Sequence
from typing import Any

import torch

from ..types import InnerJob, adapted_groups, completion_text
from .grading import answer_contained
from .prompts import question_prompt, training_documents

Grader = Callable[[str, Sequence[str], str], float]


class KnowledgeQAReward:
    """Batched SEAL reward for knowledge incorporation.

    For every self-edit, the inner adapter trains on the documents it describes (one per line, prefixed by the
    title, plus the passage); the adapted model answers the passage's questions closed-book (greedy, batched), and
    the grader scores the answers. The reward is the accuracy gain over the un-adapted model (`mode="gain"`, the
    paper's) or the raw accuracy (`mode="accuracy"`). Un-adapted answers are computed once per passage and policy
    version and cached. An empty self-edit, or one whose inner loop failed, gets 0 and a logged reason.

    Args:
        grader (callable, defaults to `answer_contained`): `grader(prediction, answers, question) -> [0, 1]`.
        mode (`str`, defaults to `"gain"`): `"gain"` or `"accuracy"`.
        split_lines (`bool`, defaults to `True`): one training document per self-edit line.
        include_passage (`bool`, defaults to `True`): also train on the passage itself.
        max_new_tokens (`int`, defaults to `64`): answer length (paper: 64).
        eval_batch_size (`int`, defaults to `32`): questions per generate call.
        inner_adapter: used when the caller does not pass one (e.g. with a plain `GRPOTrainer`).
        max_self_edit_chars (`int`, defaults to `50000`): longer self-edits get reward 0, reason `too_long`.
        max_documents (`int`, defaults to `512`): self-edits that split into more training documents get reward 0,
            reason `too_many_documents` (a 1024-token self-edit has a few dozen lines).

    Example:
    ```python
    >>> reward = KnowledgeQAReward(grader=exact_match)
    >>> reward(prompts=prompts, completions=self_edits, title=titles, context=contexts, questions=questions,
    ...        inner_adapter=adapter)
    [0.25, 0.0, -0.25]
    ```
    """

    __name__ = "knowledge_qa"

    def __init__(
        self,
        grader: Grader = answer_contained,
        mode: str = "gain",
        split_lines: bool = True,
        include_passage: bool = True,
        max_new_tokens: int = 64,
        eval_batch_size: int = 32,
        inner_adapter: Any = None,
        show_progress: bool = True,
        max_self_edit_chars: int = 50_000,
        max_documents: int = 512,
    ):
        if mode not in ("gain", "accuracy"):
            raise ValueError(f"mode={mode!r}: use 'gain' (accuracy minus the un-adapted model's) or 'accuracy'.")
        self.grader, self.mode = grader, mode
        self.split_lines, self.include_passage = split_lines, include_passage
        self.max_new_tokens, self.eval_batch_size = max_new_tokens, eval_batch_size
        self.inner_adapter = inner_adapter
        self.show_progress = show_progress
        self.max_self_edit_chars, self.max_documents = max_self_edit_chars, max_documents
        self._baseline_cache: dict[tuple, list[float]] = {}

    def check_dataset(self, dataset) -> None:
        """Fail before training if a row lacks a usable `title`, `context` or `questions` (names row and field)."""
        from .data import passages_from_rows

        missing = [c for c in ("title", "context", "questions") if c not in dataset.column_names]
        if missing:
            raise ValueError(f"train_dataset lacks the columns {missing} that KnowledgeQAReward reads; build it with "
                             "trl_seal.knowledge.prompts.self_edit_dataset(passages).")
        rows = ({"title": t, "context": c, "questions": q}
                for t, c, q in zip(dataset["title"], dataset["context"], dataset["questions"], strict=True))
        passages_from_rows(rows, "train_dataset")

    def __call__(self, prompts, completions, title, context, questions, inner_adapter=None, record_invalid=None,
                 self_edit_seeds=None, **kwargs):
        adapter = inner_adapter if inner_adapter is not None else self.inner_adapter
        if adapter is None:
            raise ValueError("KnowledgeQAReward needs an inner adapter: pass inner_adapter= (SEALTrainer does).")
        texts = [completion_text(c) for c in completions]
        seeds = list(range(len(texts))) if self_edit_seeds is None else list(self_edit_seeds)
        rewards: list[float | None] = [0.0] * len(texts)
        jobs = []
        for index, text in enumerate(texts):
            if not text.strip():
                _record(record_invalid, index, "empty_self_edit")
                continue
            if len(text) > self.max_self_edit_chars:
                _record(record_invalid, index, "too_long")
                continue
            documents = training_documents(title[index], context[index], text, self.split_lines, self.include_passage)
            if len(documents) > self.max_documents:
                _record(record_invalid, index, "too_many_documents")
                continue
            jobs.append(InnerJob(documents, seed=seeds[index], tag=index))
        progress = _progress_bar(len(jobs), self.show_progress)
        for group in adapted_groups(adapter, jobs):
            progress.update(len(group.members))
            scored = []
            for member_index, member in enumerate(group.members):
                index = jobs[member.job_index].tag
                if member.failure is not None:
                    _record(record_invalid, index, member.failure)
                else:
                    scored.append((member_index, index))
            grades = self.score_group(group, [(m, title[i], questions[i]) for m, i in scored])
            for (_, index), accuracy in zip(scored, grades, strict=True):
                baseline = mean(self.baseline(adapter, title[index], questions[index])) if self.mode == "gain" else 0.0
                rewards[index] = mean(accuracy) - baseline
        progress.close()
        return rewards

    def score_group(self, group, items: list[tuple[int, str, list[dict]]]) -> list[list[float]]:
        """Per-question grades for `(member, title, questions)` items: every member's questions are answered in the
        same batched generate calls, each row by its own adapted model."""
        prompts, rows = [], []
        for member, title, questions in items:
            prompts += [question_prompt(title, q["question"]) for q in questions]
            rows += [member] * len(questions)
        answers = generate_answers(
            None, group.tokenizer, prompts, self.max_new_tokens, self.eval_batch_size,
            route=lambda chunk: group.routed([rows[i] for i in chunk]),
        )
        grades, start = [], 0
        for _, _, questions in items:
            chunk = answers[start : start + len(questions)]
            grades.append([self.grader(a, q["answers"], q["question"]) for a, q in zip(chunk, questions, strict=True)])
            start += len(questions)
        return grades

    def baseline(self, adapter, title: str, questions: list[dict]) -> list[float]:
        """Per-question scores of the un-adapted model, cached per (policy version, passage)."""
        key = (id(adapter), getattr(adapter, "version", None), title, tuple(q["question"] for q in questions))
        if key not in self._baseline_cache:
            with adapter.base_model() as base:
                self._baseline_cache[key] = self.score(base, adapter.tokenizer, title, questions)
        return self._baseline_cache[key]

    def score(self, model, tokenizer, title: str, questions: list[dict]) -> list[float]:
        """Per-question grades of `model` answering closed-book."""
        prompts = [question_prompt(title, q["question"]) for q in questions]
        answers = generate_answers(model, tokenizer, prompts, self.max_new_tokens, self.eval_batch_size)
        return [self.grader(a, q["answers"], q["question"]) for a, q in zip(answers, questions, strict=True)]


def mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def _progress_bar(total: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="inner loops", unit="self-edit", disable=not enabled or total == 0, leave=False)


def _record(record_invalid, index: int, reason: str) -> None:
    if record_invalid is not None:
        record_invalid(index, reason)


@torch.no_grad()
def generate_answers(
    model, tokenizer, prompts: list[str], max_new_tokens: int = 64, batch_size: int = 32, sampling: dict | None = None,
    route: Callable | None = None,
) -> list[str]:
    """Answers to user prompts (chat template when the tokenizer has one), greedy unless `sampling` gives generate()
    sampling arguments.

    Prompts are batched by length (left padding, so little of it) and answered in their original order. With
    `route`, each batch runs on `route(prompt_indices)`, a context manager giving the model for those rows (e.g.
    `AdaptedGroup.routed`: one adapted model per row)."""
    decoding = sampling or {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}
    texts = [_as_chat(tokenizer, p) for p in prompts]
    lengths = [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]] if texts else []
    order = sorted(range(len(texts)), key=lambda i: lengths[i])
    answers: list[str] = [""] * len(texts)
    padding_side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            with route(chunk) if route is not None else contextlib.nullcontext(model) as chunk_model:
                device = next(chunk_model.parameters()).device
                batch = tokenizer([texts[i] for i in chunk], return_tensors="pt", padding=True, add_special_tokens=False)
                batch = batch.to(device)
                output = chunk_model.generate(
                    **batch, max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id, use_cache=True,
                    **decoding,
                )
            decoded = tokenizer.batch_decode(output[:, batch["input_ids"].shape[1] :], skip_special_tokens=True)
            for i, answer in zip(chunk, decoded, strict=True):
                answers[i] = answer.strip()
    finally:
        tokenizer.padding_side = padding_side
    return answers


def _as_chat(tokenizer, prompt: str) -> str:
    if getattr(tokenizer, "chat_template", None):
        messages = [{"role": "user", "content": prompt}]
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return prompt + "\nAnswer:"
