"""Stand-ins for adapted models, shared by the knowledge reward tests (no training: answers are fixed texts)."""

import contextlib
import types

import torch
from torch import nn

from trl_seal import AdaptedModel


class AnsweringModel(nn.Module):
    """Answers every question with a fixed text, through the real generate/decode path of the reward."""

    def __init__(self, tokenizer, answer: str):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))
        self.answer_ids = tokenizer(answer, add_special_tokens=False)["input_ids"]
        self.vocab_size = len(tokenizer)

    def forward(self, input_ids, attention_mask=None, **kwargs):
        """Teacher-forced logits that favour the model's own answer tokens everywhere (gold-answer loglik)."""
        logits = torch.zeros(*input_ids.shape, self.vocab_size)
        logits[..., self.answer_ids] = 5.0
        return types.SimpleNamespace(logits=logits)

    def generate(self, input_ids, attention_mask=None, **kwargs):
        answer = torch.tensor([self.answer_ids] * input_ids.shape[0])
        return torch.cat([input_ids, answer], dim=1)


class AppleAdapter:
    """Adapted models answer "apple" when a training document mentions apple, else "river"; every job is recorded,
    base-model uses are counted, and a job mentioning "tiger" fails with `nan_loss`.

    `base_knows` makes the un-adapted model answer "apple" too (so the base and passage baselines differ)."""

    def __init__(self, tokenizer, base_knows: bool = False):
        self.tokenizer, self.version, self.jobs, self.base_calls = tokenizer, 0, [], 0
        self.good, self.bad = AnsweringModel(tokenizer, "apple"), AnsweringModel(tokenizer, "river")
        self.base_knows = base_knows

    @contextlib.contextmanager
    def base_model(self):
        self.base_calls += 1
        yield self.good if self.base_knows else self.bad

    def adapt(self, jobs):
        self.jobs += list(jobs)
        for index, job in enumerate(jobs):
            if any("tiger" in e.completion for e in job.examples):
                yield AdaptedModel(index, self.bad, self.tokenizer, failure="nan_loss")
                continue
            knows = any("apple" in e.completion for e in job.examples)
            yield AdaptedModel(index, self.good if knows else self.bad, self.tokenizer)
