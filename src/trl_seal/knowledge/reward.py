"""`KnowledgeQAReward`: a self-edit is worth what the passage's closed-book questions gain after training on it."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from ..generation import chat_text, generate_batched
from ..rewards import InnerLoopReward
from ..types import InnerJob, completion_text  # noqa: F401 (completion_text: re-exported for callers)
from .grading import answer_contained
from .prompts import question_prompt, training_documents

Grader = Callable[[str, Sequence[str], str], float]


class KnowledgeQAReward(InnerLoopReward):
    """Batched SEAL reward for knowledge incorporation.

    For every self-edit, the inner adapter trains on the documents it describes (one per line, prefixed by the
    title, plus the passage); the adapted model answers the passage's questions closed-book (greedy, batched), and
    the grader scores the answers. The reward is the accuracy gain over the un-adapted model (`mode="gain"`, the
    paper's) or the raw accuracy (`mode="accuracy"`). Un-adapted answers are computed once per passage and policy
    version and cached. An empty self-edit, or one whose inner loop failed, gets 0 and a logged reason. The
    common part (adapter, seeds, reasons, batched groups) is `InnerLoopReward`'s; this class holds the domain.

    Args:
        grader (callable, defaults to `answer_contained`): `grader(prediction, answers, question) -> [0, 1]`.
        mode (`str`, defaults to `"gain"`): `"gain"` or `"accuracy"`.
        split_lines (`bool`, defaults to `True`): one training document per self-edit line.
        include_passage (`bool`, defaults to `True`): also train on the passage itself.
        max_new_tokens (`int`, defaults to `64`): answer length (paper: 64).
        eval_batch_size (`int`, defaults to `32`): questions per generate call.
        inner_adapter: used when the caller does not pass one (e.g. with a plain `GRPOTrainer`).
        show_progress (`bool`, defaults to `True`): a progress bar over the inner loops.
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
    columns = ("title", "context", "questions")
    dataset_builder = "trl_seal.knowledge.prompts.self_edit_dataset(passages)"

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
        super().__init__(inner_adapter, show_progress)
        self.grader, self.mode = grader, mode
        self.split_lines, self.include_passage = split_lines, include_passage
        self.max_new_tokens, self.eval_batch_size = max_new_tokens, eval_batch_size
        self.max_self_edit_chars, self.max_documents = max_self_edit_chars, max_documents
        self._baseline_cache: dict[tuple, list[float]] = {}

    def check_dataset(self, dataset) -> None:
        """Fail before training if a row lacks a usable `title`, `context` or `questions` (names row and field)."""
        from .data import passages_from_rows

        super().check_dataset(dataset)
        rows = ({"title": t, "context": c, "questions": q}
                for t, c, q in zip(dataset["title"], dataset["context"], dataset["questions"], strict=True))
        passages_from_rows(rows, "train_dataset")

    def jobs_for(self, text: str, context: dict, seed: int, adapter) -> InnerJob | str:
        """Train on the self-edit's documents (and the passage); empty, too long or too many documents: a reason."""
        if not text.strip():
            return "empty_self_edit"
        if len(text) > self.max_self_edit_chars:
            return "too_long"
        documents = training_documents(context["title"], context["context"], text, self.split_lines,
                                       self.include_passage)
        if len(documents) > self.max_documents:
            return "too_many_documents"
        return InnerJob(documents, seed=seed)

    def score_group(self, group, members, adapter) -> list[float]:
        """Each member's accuracy on its passage's questions, minus the un-adapted model's in `"gain"` mode."""
        items = [(m.slot, m.context["title"], m.context["questions"]) for m in members]
        scores = []
        for member, grades in zip(members, self.grade_group(group, items), strict=True):
            title, questions = member.context["title"], member.context["questions"]
            baseline = mean(self.baseline(adapter, title, questions)) if self.mode == "gain" else 0.0
            scores.append(mean(grades) - baseline)
        return scores

    def grade_group(self, group, items: list[tuple[int, str, list[dict]]]) -> list[list[float]]:
        """Per-question grades for `(slot, title, questions)` items: every member's questions are answered in the
        same batched generate calls, each row by its own adapted model."""
        prompts, rows = [], []
        for slot, title, questions in items:
            prompts += [question_prompt(title, q["question"]) for q in questions]
            rows += [slot] * len(questions)
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


def generate_answers(
    model, tokenizer, prompts: list[str], max_new_tokens: int = 64, batch_size: int = 32, sampling: dict | None = None,
    route: Callable | None = None,
) -> list[str]:
    """Stripped answers to user prompts (chat template when the tokenizer has one, else the prompt and
    `"\nAnswer:"`), through `generate_batched`: greedy unless `sampling` gives `generate` sampling arguments, each
    batch on `route(prompt_indices)` when given."""
    texts = [chat_text(tokenizer, prompt, plain_suffix="\nAnswer:") for prompt in prompts]
    answers = generate_batched(model, tokenizer, texts, max_new_tokens, batch_size, sampling=sampling, route=route)
    return [answer.strip() for answer in answers]
