"""`KnowledgeQAReward`: a self-edit is worth what the passage's closed-book questions gain after training on it."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

from ..generation import chat_text, continuation_logprobs, generate_batched
from ..rewards import InnerLoopReward
from ..sampling import derive_seed
from ..types import InnerJob, completion_text  # noqa: F401 (completion_text: re-exported for callers)
from .grading import answer_contained, normalize_answer
from .prompts import check_layout, question_prompt, training_documents

Grader = Callable[[str, Sequence[str], str], float]
SCORES = ("accuracy", "loglik", "specific_loglik")
BASELINES = ("base", "passage", "none")
_MODE_TO_BASELINE = {"gain": "base", "accuracy": "none"}  # the deprecated `mode=` values
_PASSAGE_ONLY = "__passage_only__"  # marks the context of a passage-only baseline job among the self-edits


class KnowledgeQAReward(InnerLoopReward):
    """Batched SEAL reward for knowledge incorporation.

    For every self-edit, the inner adapter trains on the documents it describes (one per line, prefixed by the
    title, plus the passage), `num_scorings` times with different seeds; each adapted model is scored on the
    passage's closed-book questions, and the reward is the mean score minus a baseline. Empty self-edits, and those
    whose inner loop failed, get 0 and a logged reason. The common part (adapter, seeds, reasons, batched groups) is
    `InnerLoopReward`'s; this class holds the domain.

    Scores (`score`):
    - `"accuracy"`: greedy answers (batched, each row on its own adapter) graded by `grader`, mean over questions;
    - `"loglik"`: the teacher-forced log-likelihood of the gold answer given the same question prompt, as the mean
      log-probability per answer token (so answers of different lengths compare), the best of the question's
      distinct gold answers (as graders take the best match), averaged over questions. One forward pass per batch,
      no decoding; continuous, so it sees progress a 0/1 grade misses.
    - `"specific_loglik"`: the same log-likelihood of a question's gold answer minus the mean log-likelihood, given
      the same question, of the passage's *other* questions' gold answers (answers equal to this question's are left
      out). An adapter that recites its passage, or one that stops reciting, moves every answer of the passage
      alike, and the contrast cancels it; what is left is knowledge of which answer goes with which question
      (docs/results.md 0f and 0h). Needs passages of 2 or more questions with different answers; costs n x (the
      passage's distinct answers) rows per passage of n questions instead of one row per answer.

    Baselines (`baseline`), all cached per passage and policy version:
    - `"base"`: the un-adapted model's score (the paper's);
    - `"passage"`: the score of adapters trained on the passage alone (same inner settings, `num_scorings` seeds
      `0..m-1`), so a self-edit is rewarded for what it adds to the passage. They are trained in the same batched
      call as the self-edits the first time a passage is seen under a policy version;
    - `"none"`: the raw score.

    Args:
        grader (callable, defaults to `answer_contained`): `grader(prediction, answers, question) -> [0, 1]`.
        score (`str`, defaults to `"accuracy"`): `"accuracy"` or `"loglik"`.
        num_scorings (`int`, defaults to `1`): inner loops per self-edit (paper: 3); the first uses the self-edit's
            seed, the others seeds derived from it. The reward is their mean.
        baseline (`str`, *optional*): `"base"` (default), `"passage"` or `"none"`.
        mode (`str`, *optional*): deprecated alias of `baseline`: `"gain"` is `"base"`, `"accuracy"` is `"none"`.
        question_with_title (`bool`, defaults to `True`): the question prompt names the passage title (the paper's).
        document_layout (`str`, defaults to `"lines"`): how a self-edit becomes training documents
            (`DOCUMENT_LAYOUTS`): `"lines"` (one per line, the paper's), `"whole"` (one document) or `"appended"`
            (the passage followed by the self-edit, one document: as many inner steps as the passage alone).
        split_lines (`bool`, *optional*): deprecated alias: `True` is layout `"lines"`, `False` is `"whole"`.
        include_passage (`bool`, defaults to `True`): also train on the passage itself.
        max_new_tokens (`int`, defaults to `64`): answer length (paper: 64).
        eval_batch_size (`int`, defaults to `32`): questions per generate call or forward pass.
        inner_adapter: used when the caller does not pass one (e.g. with a plain `GRPOTrainer`).
        show_progress (`bool`, defaults to `True`): a progress bar over the inner loops.
        max_self_edit_chars (`int`, defaults to `50000`): longer self-edits get reward 0, reason `too_long`.
        max_documents (`int`, defaults to `512`): self-edits that split into more training documents get reward 0,
            reason `too_many_documents` (a 1024-token self-edit has a few dozen lines).

    Example:
    ```python
    >>> reward = KnowledgeQAReward(score="loglik", num_scorings=3, baseline="passage")
    >>> reward(prompts=prompts, completions=self_edits, title=titles, context=contexts, questions=questions,
    ...        inner_adapter=adapter)
    [0.31, -0.02, 0.12]
    ```
    """

    __name__ = "knowledge_qa"
    columns = ("title", "context", "questions")
    dataset_builder = "trl_seal.knowledge.prompts.self_edit_dataset(passages)"

    def __init__(
        self,
        grader: Grader = answer_contained,
        score: str = "accuracy",
        num_scorings: int = 1,
        baseline: str | None = None,
        mode: str | None = None,
        question_with_title: bool = True,
        document_layout: str | None = None,
        split_lines: bool | None = None,
        include_passage: bool = True,
        max_new_tokens: int = 64,
        eval_batch_size: int = 32,
        inner_adapter: Any = None,
        show_progress: bool = True,
        max_self_edit_chars: int = 50_000,
        max_documents: int = 512,
    ):
        if score not in SCORES:
            raise ValueError(f"score={score!r}: use 'accuracy' (graded greedy answers), 'loglik' (log-likelihood "
                             "of the gold answers) or 'specific_loglik' (that log-likelihood minus the other "
                             "questions' answers').")
        if not isinstance(num_scorings, int) or num_scorings < 1:
            raise ValueError(f"num_scorings={num_scorings!r}: use a positive int (paper: 3).")
        super().__init__(inner_adapter, show_progress)
        self.grader, self.score_kind, self.num_scorings = grader, score, num_scorings
        self.baseline_kind = _resolve_baseline(baseline, mode)
        self.question_with_title = question_with_title
        self.document_layout = _resolve_layout(document_layout, split_lines, include_passage)
        self.include_passage = include_passage
        self.max_new_tokens, self.eval_batch_size = max_new_tokens, eval_batch_size
        self.max_self_edit_chars, self.max_documents = max_self_edit_chars, max_documents
        self._baseline_cache: dict[tuple, list[float]] = {}

    @property
    def split_lines(self) -> bool:
        """Deprecated view of `document_layout`: whether each self-edit line is its own document."""
        return self.document_layout == "lines"

    @property
    def mode(self) -> str:
        """Deprecated view of `baseline_kind`: `"gain"` when a baseline is subtracted, else `"accuracy"`."""
        return "accuracy" if self.baseline_kind == "none" else "gain"

    def check_dataset(self, dataset) -> None:
        """Fail before training if a row lacks a usable `title`, `context` or `questions` (names row and field)."""
        from .data import passages_from_rows

        super().check_dataset(dataset)
        rows = ({"title": t, "context": c, "questions": q}
                for t, c, q in zip(dataset["title"], dataset["context"], dataset["questions"], strict=True))
        self.check_passages(passages_from_rows(rows, "train_dataset"), "train_dataset")

    def check_passages(self, passages, source: str) -> None:
        """With `score="specific_loglik"`, fail before any training on a passage whose questions cannot be
        contrasted (a question without another of a different answer), naming `source` and the passage."""
        if self.score_kind == "specific_loglik":
            for passage in passages:
                _contrast_pairs(passage.title, passage.question_rows(), where=source)

    # ------------------------------------------------------------------------------------------ jobs
    def scoring_seeds(self, seed: int) -> list[int]:
        """The inner-loop seeds of a self-edit seeded `seed`: `seed` itself, then `num_scorings - 1` derived ones."""
        return [seed] + [derive_seed(seed, "scoring", j) for j in range(1, self.num_scorings)]

    def passage_seeds(self) -> tuple[int, ...]:
        """Seeds of the passage-only baseline adapters (fixed, so the baseline is cached per policy version)."""
        return tuple(range(self.num_scorings))

    def jobs_for(self, text: str, context: dict, seed: int, adapter) -> list[InnerJob] | str:
        """`num_scorings` jobs on the self-edit's documents (and the passage); empty, too long or too many documents:
        a reason. The context of a passage-only baseline gives its passage-only jobs."""
        if context.get(_PASSAGE_ONLY):
            documents = training_documents(context["title"], context["context"], "")
            return [InnerJob(documents, seed=s) for s in self.passage_seeds()]
        if not text.strip():
            return "empty_self_edit"
        if len(text) > self.max_self_edit_chars:
            return "too_long"
        documents = training_documents(context["title"], context["context"], text, self.document_layout,
                                       self.include_passage)
        if len(documents) > self.max_documents:
            return "too_many_documents"
        return [InnerJob(documents, seed=s) for s in self.scoring_seeds(seed)]

    # ------------------------------------------------------------------------------------------ scoring
    def score_self_edits(self, adapter, texts, contexts, seeds=None, record_invalid=None) -> list[float]:
        """Rewards of self-edits: raw scores (with any missing passage-only baselines trained in the same batched
        call), minus the baseline; an unusable self-edit gets 0."""
        record = record_invalid or (lambda index, reason: None)
        seeds = list(range(len(texts))) if seeds is None else list(seeds)
        extra = self._missing_passage_baselines(adapter, contexts) if self.baseline_kind == "passage" else {}
        invalid: set[int] = set()

        def record_real(index: int, reason: str) -> None:
            invalid.add(index)
            if index < len(texts):
                record(index, reason)

        everything = list(contexts) + [dict(c, **{_PASSAGE_ONLY: True}) for c in extra.values()]
        raw = super().score_self_edits(adapter, list(texts) + [""] * len(extra), everything,
                                       seeds + [0] * len(extra), record_real)
        for offset, key in enumerate(extra):
            if len(texts) + offset in invalid:
                warnings.warn(f"A passage-only baseline inner loop failed for {key[-2]!r}; that passage uses the "
                              "un-adapted model's score this time.", stacklevel=2)
            else:
                self._baseline_cache[key] = raw[len(texts) + offset]
        return [0.0 if index in invalid else raw[index] - self.baseline_score(adapter, context)
                for index, context in enumerate(contexts)]

    def score_group(self, group, members, adapter) -> list[float]:
        """Each member's raw score (`score`) on its passage's questions; baselines are subtracted afterwards."""
        items = [(m.slot, m.context["title"], m.context["questions"]) for m in members]
        return [mean(scores) for scores in self.question_scores(group, items)]

    def question_scores(self, group, items: list[tuple[int, str, list[dict]]], score: str | None = None):
        """Per-question scores (`score`, default the reward's) of `(slot, title, questions)` items of a group."""
        kind = score or self.score_kind
        if kind == "accuracy":
            return self.grade_group(group, items)
        return self.loglik_group(group, items) if kind == "loglik" else self.specific_loglik_group(group, items)

    def grade_group(self, group, items: list[tuple[int, str, list[dict]]]) -> list[list[float]]:
        """Per-question grades for `(slot, title, questions)` items: every member's questions are answered in the
        same batched generate calls, each row by its own adapted model."""
        answers = self.answer_group(group, items)
        return [[self.grader(a, q["answers"], q["question"]) for a, q in zip(item_answers, questions, strict=True)]
                for item_answers, (_, _, questions) in zip(answers, items, strict=True)]

    def answer_group(self, group, items: list[tuple[int, str, list[dict]]]) -> list[list[str]]:
        """The greedy answers behind `grade_group`, per item and question, so other graders can read them."""
        prompts, rows = [], []
        for slot, title, questions in items:
            prompts += [self.question_prompt(title, q["question"]) for q in questions]
            rows += [slot] * len(questions)
        answers = generate_answers(
            None, group.tokenizer, prompts, self.max_new_tokens, self.eval_batch_size,
            route=lambda chunk: group.routed([rows[i] for i in chunk]), row_adapters=rows,
        )
        per_item, start = [], 0
        for _, _, questions in items:
            per_item.append(answers[start : start + len(questions)])
            start += len(questions)
        return per_item

    def loglik_group(self, group, items: list[tuple[int, str, list[dict]]]) -> list[list[float]]:
        """Per-question gold-answer log-likelihoods for `(slot, title, questions)` items, every member's rows in the
        same batched forward passes, each row on its own adapted model."""
        rows: list[int] = []

        def collect(slot, count):
            rows.extend([slot] * count)

        prompts, answers, owners = self._answer_rows(items, collect)
        route = lambda chunk: group.routed([rows[i] for i in chunk])  # noqa: E731
        values = answer_logprobs(None, group.tokenizer, prompts, answers, self.eval_batch_size, route=route,
                                 row_adapters=rows)
        return _best_per_question(values, owners, [len(questions) for _, _, questions in items])

    def specific_loglik_group(self, group, items: list[tuple[int, str, list[dict]]]) -> list[list[float]]:
        """Per-question `"specific_loglik"` scores for `(slot, title, questions)` items (see the class docstring):
        every item's question x answer rows in the same batched forward passes, each row on its own adapted model."""
        return [specific_scores(matrix) for matrix in self.loglik_matrix_group(group, items)]

    def loglik_matrix_group(self, group, items: list[tuple[int, str, list[dict]]]) -> list[list[list[float | None]]]:
        """Per item, the matrix whose entry [i][j] is the best log-likelihood per token of question j's gold answers
        given question i's prompt (`None` where j's answers include one of i's); the diagonal is `loglik_group`'s."""
        rows: list[int] = []
        prompts, answers, owners = self._contrast_rows(items, lambda slot, count: rows.extend([slot] * count))
        route = lambda chunk: group.routed([rows[i] for i in chunk])  # noqa: E731
        values = answer_logprobs(None, group.tokenizer, prompts, answers, self.eval_batch_size, route=route,
                                 row_adapters=rows)
        return _best_per_pair(values, owners, [len(questions) for _, _, questions in items])

    def question_prompt(self, title: str, question: str) -> str:
        """The closed-book question, with or without the title as `question_with_title` says."""
        return question_prompt(title, question, with_title=self.question_with_title)

    # ------------------------------------------------------------------------------------------ baselines
    def baseline_score(self, adapter, context: dict) -> float:
        """The score subtracted from a self-edit's raw score on this passage (0 with `baseline="none"`)."""
        if self.baseline_kind == "none":
            return 0.0
        key = self._passage_key(adapter, context)
        if self.baseline_kind == "passage" and key in self._baseline_cache:
            return self._baseline_cache[key]
        return mean(self.baseline(adapter, context["title"], context["questions"]))

    def baseline(self, adapter, title: str, questions: list[dict]) -> list[float]:
        """Per-question scores (`score`) of the un-adapted model, cached per (policy version, passage)."""
        key = (id(adapter), getattr(adapter, "version", None), self.score_kind, self.question_with_title, "base",
               title, tuple(q["question"] for q in questions))
        if key not in self._baseline_cache:
            with adapter.base_model() as base:
                self._baseline_cache[key] = self.model_scores(base, adapter.tokenizer, title, questions)
        return self._baseline_cache[key]

    def _passage_key(self, adapter, context: dict) -> tuple:
        questions = tuple(q["question"] for q in context["questions"])
        return (id(adapter), getattr(adapter, "version", None), self.score_kind, self.question_with_title,
                self.passage_seeds(), context["context"], context["title"], questions)

    def _missing_passage_baselines(self, adapter, contexts) -> dict[tuple, dict]:
        """One context per passage whose passage-only baseline is not cached yet (in first-seen order)."""
        missing: dict[tuple, dict] = {}
        for context in contexts:
            key = self._passage_key(adapter, context)
            if key not in self._baseline_cache and key not in missing:
                missing[key] = context
        return missing

    # ------------------------------------------------------------------------------------------ one model
    def model_scores(
        self, model, tokenizer, title: str, questions: list[dict], score: str | None = None
    ) -> list[float]:
        """Per-question scores (`score`, default the reward's) of one `model`."""
        kind = score or self.score_kind
        if kind == "accuracy":
            return self.score(model, tokenizer, title, questions)
        rows = self._answer_rows if kind == "loglik" else self._contrast_rows
        prompts, answers, owners = rows([(0, title, questions)], lambda slot, count: None)
        values = answer_logprobs(model, tokenizer, prompts, answers, self.eval_batch_size)
        if kind == "loglik":
            return _best_per_question(values, owners, [len(questions)])[0]
        return specific_scores(_best_per_pair(values, owners, [len(questions)])[0])

    def score(self, model, tokenizer, title: str, questions: list[dict]) -> list[float]:
        """Per-question grades of `model` answering closed-book."""
        return self.grade(self.answers(model, tokenizer, title, questions), questions)

    def answers(self, model, tokenizer, title: str, questions: list[dict]) -> list[str]:
        """`model`'s greedy closed-book answers to `questions`, as `score` grades them."""
        prompts = [self.question_prompt(title, q["question"]) for q in questions]
        return generate_answers(model, tokenizer, prompts, self.max_new_tokens, self.eval_batch_size)

    def grade(self, answers: list[str], questions: list[dict]) -> list[float]:
        """Per-question grades (`grader`) of `answers` to `questions`."""
        return self._grades(answers, [questions])[0]

    def _grades(self, answers: list[str], question_lists: list[list[dict]]) -> list[list[float]]:
        grades, start = [], 0
        for questions in question_lists:
            chunk = answers[start : start + len(questions)]
            grades.append([self.grader(a, q["answers"], q["question"]) for a, q in zip(chunk, questions, strict=True)])
            start += len(questions)
        return grades

    def _answer_rows(self, items, collect) -> tuple[list[str], list[str], list[tuple[int, int]]]:
        """One row per distinct gold answer of every question: formatted prompt, answer text, (item, question)."""
        prompts, answers, owners = [], [], []
        for item, (slot, title, questions) in enumerate(items):
            for number, question in enumerate(questions):
                golds = _distinct_answers(question["answers"])
                if not golds:
                    raise ValueError(f"Question {question['question']!r} of {title!r} has no gold answer: the "
                                     "loglik score needs one.")
                prompts += [self.question_prompt(title, question["question"])] * len(golds)
                answers += golds
                owners += [(item, number)] * len(golds)
                collect(slot, len(golds))
        return prompts, answers, owners

    def _contrast_rows(self, items, collect) -> tuple[list[str], list[str], list[tuple[int, int, int]]]:
        """`loglik_matrix_group`'s rows: every question's prompt with every distinct gold answer of every question of
        its passage that shares no answer with it; owners are (item, question, answer's question)."""
        prompts, answers, owners = [], [], []
        for item, (slot, title, questions) in enumerate(items):
            for number, other, golds in _contrast_pairs(title, questions):
                prompts += [self.question_prompt(title, questions[number]["question"])] * len(golds)
                answers += golds
                owners += [(item, number, other)] * len(golds)
                collect(slot, len(golds))
        return prompts, answers, owners


def _contrast_pairs(title: str, questions: Sequence[dict], where: str = "") -> list[tuple[int, int, list[str]]]:
    """(question, answer's question, its distinct golds) for every pair whose answers differ after normalisation;
    a ValueError naming the passage when a question has no gold answer or no other question to contrast with."""
    passage = f"{where}: passage {title!r}" if where else f"Passage {title!r}"
    golds = [_distinct_answers(q["answers"]) for q in questions]
    keys = [{normalize_answer(a) for a in g} for g in golds]
    pairs = []
    for number, question in enumerate(questions):
        if not golds[number]:
            raise ValueError(f"{passage}: question {question['question']!r} has no gold answer; the loglik "
                             "scores need one.")
        others = [j for j in range(len(questions)) if j != number and golds[j] and not keys[j] & keys[number]]
        if not others:
            raise ValueError(f"{passage}: question {question['question']!r} has no other question with "
                             "a different gold answer to contrast with; score='specific_loglik' needs "
                             "passages of 2 or more questions with different answers (use score='loglik', or drop "
                             "the passage).")
        pairs += [(number, other, golds[other]) for other in [number, *others]]
    return pairs


def contrastable(questions: Sequence[dict]) -> bool:
    """Whether `score="specific_loglik"` can score these questions: each has a gold answer and another question of
    a different one."""
    try:
        _contrast_pairs("", questions)
    except ValueError:
        return False
    return True


def specific_scores(matrix: Sequence[Sequence[float | None]]) -> list[float]:
    """Per question i: matrix[i][i] minus the mean of matrix[i][j] over the other questions j (`None`s skipped)."""
    scores = []
    for i, row in enumerate(matrix):
        others = [value for j, value in enumerate(row) if j != i and value is not None]
        scores.append(row[i] - mean(others))
    return scores


def _best_per_pair(values, owners, counts) -> list[list[list[float | None]]]:
    matrices: list[list[list[float | None]]] = [[[None] * count for _ in range(count)] for count in counts]
    for value, (item, number, other) in zip(values, owners, strict=True):
        current = matrices[item][number][other]
        matrices[item][number][other] = value if current is None else max(current, value)
    return matrices


def _resolve_layout(layout: str | None, split_lines: bool | None, include_passage: bool) -> str:
    if split_lines is not None:
        implied = "lines" if split_lines else "whole"
        if layout is not None and layout != implied:
            raise ValueError(f"split_lines={split_lines} and document_layout={layout!r} disagree: drop split_lines "
                             "(deprecated).")
        layout = implied
    layout = layout or "lines"
    check_layout(layout, include_passage)
    return layout


def _resolve_baseline(baseline: str | None, mode: str | None) -> str:
    if mode is not None and mode not in _MODE_TO_BASELINE:
        raise ValueError(f"mode={mode!r}: use baseline= instead ('base', 'passage' or 'none'); the deprecated mode "
                         "accepts 'gain' (= baseline 'base') or 'accuracy' (= baseline 'none').")
    if baseline is not None and baseline not in BASELINES:
        raise ValueError(f"baseline={baseline!r}: use 'base' (the un-adapted model), 'passage' (adapters trained "
                         "on the passage alone) or 'none' (the raw score).")
    if mode is not None and baseline is not None and _MODE_TO_BASELINE[mode] != baseline:
        raise ValueError(f"mode={mode!r} and baseline={baseline!r} disagree: drop mode (deprecated).")
    if mode is not None:
        return _MODE_TO_BASELINE[mode]
    return baseline or "base"


def _distinct_answers(answers: Sequence[str]) -> list[str]:
    """Gold answers that differ after SQuAD normalisation, first spelling kept."""
    seen, out = set(), []
    for answer in answers:
        key = normalize_answer(answer)
        if answer.strip() and key not in seen:
            seen.add(key)
            out.append(answer.strip())
    return out


def _best_per_question(values, owners, counts) -> list[list[float]]:
    best = [[float("-inf")] * count for count in counts]
    for value, (item, number) in zip(values, owners, strict=True):
        best[item][number] = max(best[item][number], value)
    return best


def mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def answer_logprobs(
    model, tokenizer, prompts: list[str], answers: list[str], batch_size: int = 32, route: Callable | None = None,
    row_adapters: Sequence[int] | None = None,
) -> list[float]:
    """Mean per-token log-probability of each `answer` as the reply to its user prompt, formatted as
    `generate_answers` formats it (chat template, else the prompt, `"\nAnswer:"` and a space before the answer)."""
    texts = [chat_text(tokenizer, prompt, plain_suffix="\nAnswer:") for prompt in prompts]
    if not getattr(tokenizer, "chat_template", None):
        answers = [" " + answer for answer in answers]
    return continuation_logprobs(model, tokenizer, texts, answers, batch_size, route=route, row_adapters=row_adapters)


def generate_answers(
    model, tokenizer, prompts: list[str], max_new_tokens: int = 64, batch_size: int = 32, sampling: dict | None = None,
    route: Callable | None = None, row_adapters: Sequence[int] | None = None,
) -> list[str]:
    """Stripped answers to user prompts (chat template when the tokenizer has one, else the prompt and
    `"\nAnswer:"`), through `generate_batched`: greedy unless `sampling` gives `generate` sampling arguments, each
    batch on `route(prompt_indices)` when given (`row_adapters`: each prompt's adapter, see `generate_batched`)."""
    texts = [chat_text(tokenizer, prompt, plain_suffix="\nAnswer:") for prompt in prompts]
    answers = generate_batched(model, tokenizer, texts, max_new_tokens, batch_size, sampling=sampling, route=route,
                               row_adapters=row_adapters)
    return [answer.strip() for answer in answers]
