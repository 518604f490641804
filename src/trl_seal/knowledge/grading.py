"""Graders for closed-book answers: SQuAD exact match and F1 (official normalisation), a lenient "gold answer
contained" match, and an optional yes/no LLM judge running a local transformers model.

A grader is a plain callable `grader(prediction, answers, question) -> float in [0, 1]`; with several gold answers
the best match counts, as in the official SQuAD script.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Sequence

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = set(string.punctuation)


def normalize_answer(text: str) -> str:
    """SQuAD v1.1 normalisation: lower case, drop punctuation and articles, collapse whitespace."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(prediction: str, answers: Sequence[str], question: str | None = None) -> float:
    """1.0 if the normalised prediction equals a normalised gold answer.

    Example:
    ```python
    >>> exact_match("The Eiffel Tower!", ["Eiffel tower"])
    1.0
    ```
    """
    normalized = normalize_answer(prediction)
    return float(any(normalized == normalize_answer(answer) for answer in answers))


def f1_score(prediction: str, answers: Sequence[str], question: str | None = None) -> float:
    """Best token-overlap F1 between the normalised prediction and the gold answers (SQuAD v1.1)."""
    return max((_f1(prediction, answer) for answer in answers), default=0.0)


def _f1(prediction: str, answer: str) -> float:
    predicted, gold = normalize_answer(prediction).split(), normalize_answer(answer).split()
    common = Counter(predicted) & Counter(gold)
    overlap = sum(common.values())
    if overlap == 0:
        return 0.0
    precision, recall = overlap / len(predicted), overlap / len(gold)
    return 2 * precision * recall / (precision + recall)


def answer_contained(prediction: str, answers: Sequence[str], question: str | None = None) -> float:
    """1.0 if a normalised gold answer appears as a whole-word span of the normalised prediction.

    Lenient on purpose: chat models answer in sentences ("It was founded in 1871.").

    Example:
    ```python
    >>> answer_contained("It was founded in 1871.", ["1871"]), answer_contained("18712", ["1871"])
    (1.0, 0.0)
    ```
    """
    padded = f" {normalize_answer(prediction)} "
    return float(any(normalize_answer(a) and f" {normalize_answer(a)} " in padded for a in answers))


class LLMJudge:
    """Asks a local causal LM whether a prediction answers the question correctly; 1.0 for "yes".

    The judge compares the next-token probabilities of " yes" and " no" after a grading prompt (no sampling), so
    it is deterministic. Any model name or path works; nothing is downloaded unless you name a hub model.

    Args:
        model_name_or_path (`str`): a transformers causal LM.
        device (`str`, defaults to `"cpu"`).
        trust_remote_code (`bool`, defaults to `False`).

    Example:
    ```python
    >>> judge = LLMJudge("Qwen/Qwen2.5-7B-Instruct", device="cuda")
    >>> judge("Paris, of course.", ["Paris"], "What is the capital of France?")
    1.0
    ```
    """

    PROMPT = (
        "You are grading a quiz. Question: {question}\nGold answer: {gold}\nStudent answer: {prediction}\n"
        "Is the student answer correct (it states the gold answer, possibly in other words)? Reply yes or no."
    )

    def __init__(self, model_name_or_path: str, device: str = "cpu", trust_remote_code: bool = False):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(model_name_or_path, trust_remote_code=trust_remote_code)
        self.model = AutoModelForCausalLM.from_pretrained(model_name_or_path, trust_remote_code=trust_remote_code)
        self.model.to(device).eval()
        self.yes_id, self.no_id = (self._first_token(word) for word in ("yes", "no"))

    def _first_token(self, word: str) -> int:
        return self.tokenizer(word, add_special_tokens=False)["input_ids"][0]

    def __call__(self, prediction: str, answers: Sequence[str], question: str | None = None) -> float:
        import torch

        from ..generation import chat_text

        content = self.PROMPT.format(question=question or "", gold=" / ".join(answers), prediction=prediction)
        text = chat_text(self.tokenizer, content, plain_suffix="\nAnswer:")
        ids = self.tokenizer(text, return_tensors="pt", add_special_tokens=False).to(self.model.device)
        with torch.no_grad():
            logits = self.model(**ids).logits[0, -1]
        return float(logits[self.yes_id] > logits[self.no_id])
