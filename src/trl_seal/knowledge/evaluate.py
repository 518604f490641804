"""The paper's knowledge-incorporation conditions, measured the same way for every model.

Conditions (each gives one accuracy per passage, then the mean with a 95 % bootstrap CI over passages):
- `base`: the model answers closed-book, no adaptation;
- `passage`: one adapter trained on the passage alone;
- `self_edits`: the model (any model: the base, a SEAL-trained one, a bigger one) writes k self-edits per passage,
  an adapter is trained on each (plus the passage), the passage's score is the mean over its self-edits;
- `file`: self-edits read from a JSONL file (`{"title", "self_edit"}` per line, several per title allowed);
- `cpt`: continued pretraining, one adapter trained on the documents of all n passages, then all their questions.
Paired differences against `passage` (same passages) come with their own CI: they are far tighter than the
difference of two marginal CIs.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from ..types import InnerJob, TrainingExample, adapted_groups
from .data import Passage
from .prompts import self_edit_prompt, training_documents
from .reward import KnowledgeQAReward, generate_answers, mean


@dataclass
class ConditionResult:
    name: str
    per_passage: list[float]
    extra: dict = field(default_factory=dict)

    def summary(self, reference: ConditionResult | None = None, draws: int = 2000, seed: int = 0) -> dict:
        low, high = bootstrap_ci(self.per_passage, draws, seed)
        out = {"condition": self.name, "passages": len(self.per_passage), "accuracy": mean(self.per_passage),
               "ci95": [low, high], **self.extra}
        if reference is not None and reference is not self and len(reference.per_passage) == len(self.per_passage):
            diffs = [a - b for a, b in zip(self.per_passage, reference.per_passage)]
            paired = {"mean": mean(diffs), "ci95": list(bootstrap_ci(diffs, draws, seed))}
            out["paired_diff_vs_" + reference.name] = paired
        return out


def bootstrap_ci(values: Sequence[float], draws: int = 2000, seed: int = 0) -> tuple[float, float]:
    """Percentile 95 % CI of the mean, resampling passages."""
    if not values:
        return (float("nan"), float("nan"))
    rng = random.Random(seed)
    means = sorted(mean([values[rng.randrange(len(values))] for _ in values]) for _ in range(draws))
    return means[int(0.025 * draws)], means[int(0.975 * draws) - 1]


def evaluate_base(adapter, passages: Sequence[Passage], reward: KnowledgeQAReward) -> ConditionResult:
    with adapter.base_model() as base:
        scores = [mean(reward.score(base, adapter.tokenizer, p.title, _questions(p))) for p in passages]
    return ConditionResult("base", scores)


def evaluate_documents(
    name: str, adapter, passages: Sequence[Passage], documents: Sequence[Sequence[list[TrainingExample]]],
    reward: KnowledgeQAReward, progress: Callable | None = None,
) -> ConditionResult:
    """Train one adapter per (passage, document set) and average each passage's accuracy over its sets."""
    jobs, owners = [], []
    for index, sets in enumerate(documents):
        for number, docs in enumerate(sets):
            jobs.append(InnerJob(docs, seed=number))
            owners.append(index)
    scores: list[list[float]] = [[] for _ in passages]
    for group in adapted_groups(adapter, jobs):
        trained = [(m, passages[owners[member.job_index]])
                   for m, member in enumerate(group.members) if not member.failure]
        grades = reward.grade_group(group, [(m, p.title, _questions(p)) for m, p in trained])
        accuracy = {m: mean(g) for (m, _), g in zip(trained, grades, strict=True)}
        for m, member in enumerate(group.members):
            scores[owners[member.job_index]].append(accuracy.get(m, 0.0))
            if progress is not None:
                progress()
    per_passage = len(jobs) / max(1, len(passages))
    return ConditionResult(name, [mean(s) for s in scores], {"adapters_per_passage": per_passage})


def evaluate_passage_only(adapter, passages, reward, progress=None) -> ConditionResult:
    documents = [[training_documents(p.title, p.context, "")] for p in passages]
    return evaluate_documents("passage", adapter, passages, documents, reward, progress)


def evaluate_self_edits(name, adapter, passages, self_edits: Sequence[Sequence[str]], reward, progress=None):
    documents = [
        [training_documents(p.title, p.context, e, reward.split_lines, reward.include_passage)
         for e in edits if e.strip()]
        or [training_documents(p.title, p.context, "")]
        for p, edits in zip(passages, self_edits, strict=True)
    ]
    return evaluate_documents(name, adapter, passages, documents, reward, progress)


def evaluate_continued_pretraining(adapter, passages, self_edits, reward) -> ConditionResult:
    """One adapter on the documents of all passages (and their self-edits, if given), then every question."""
    documents = []
    for index, passage in enumerate(passages):
        for edit in self_edits[index] if self_edits else []:
            documents += training_documents(passage.title, passage.context, edit, reward.split_lines,
                                            include_passage=False)
        documents += training_documents(passage.title, passage.context, "")
    scores = [0.0] * len(passages)
    for adapted in adapter.adapt([InnerJob(documents, seed=0)]):
        if adapted.failure is None:
            scores = [mean(reward.score(adapted.model, adapted.tokenizer, p.title, _questions(p))) for p in passages]
    return ConditionResult("cpt" + ("+self_edits" if self_edits else ""), scores, {"documents": len(documents)})


def generate_self_edits(model, tokenizer, passages, k: int, style: str = "implications", max_new_tokens: int = 256,
                        temperature: float = 1.0, top_p: float = 0.95, seed: int = 0) -> list[list[str]]:
    """k sampled self-edits per passage from `model` (the paper samples at temperature 1.0, top_p 0.95)."""
    import torch
    from tqdm.auto import tqdm

    prompts = [self_edit_prompt(p, style) for p in passages]
    torch.manual_seed(seed)
    out = []
    for prompt in tqdm(prompts, desc="writing self-edits", unit="passage"):
        out.append(generate_answers(model, tokenizer, [prompt] * k, max_new_tokens, batch_size=k,
                                    sampling={"do_sample": True, "temperature": temperature, "top_p": top_p}))
    return out


def read_self_edit_file(path: str, passages: Sequence[Passage]) -> list[list[str]]:
    """Self-edits from a JSONL file keyed by title (or passage_id), in passage order; a passage with none is an
    error."""
    by_key: dict[str, list[str]] = {}
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            row = json.loads(line)
            key = row.get("passage_id") or row.get("title")
            if not key or not isinstance(row.get("self_edit"), str):
                raise ValueError(f"{path}, line {number}: needs 'title' (or 'passage_id') and a string 'self_edit'.")
            by_key.setdefault(key, []).append(row["self_edit"])
    out = []
    for passage in passages:
        edits = by_key.get(passage.passage_id) or by_key.get(passage.title)
        if not edits:
            raise ValueError(f"{path} has no self-edit for passage {passage.title!r} ({passage.passage_id}).")
        out.append(edits)
    return out


def markdown_table(summaries: Sequence[dict]) -> str:
    lines = ["| condition | passages | accuracy (%) | 95 % CI | paired diff vs passage (95 % CI) |",
             "|---|---|---|---|---|"]
    for s in summaries:
        paired = s.get("paired_diff_vs_passage")
        diff = ""
        if paired:
            low, high = paired["ci95"]
            diff = f"{100 * paired['mean']:+.1f} [{100 * low:+.1f}, {100 * high:+.1f}]"
        lines.append(f"| {s['condition']} | {s['passages']} | {100 * s['accuracy']:.1f} | "
                     f"[{100 * s['ci95'][0]:.1f}, {100 * s['ci95'][1]:.1f}] | {diff} |")
    return "\n".join(lines)


def _questions(passage: Passage) -> list[dict]:
    return [{"question": q.question, "answers": list(q.answers)} for q in passage.questions]


def run_conditions(
    adapter, passages: Sequence[Passage], reward: KnowledgeQAReward, conditions: Sequence[str],
    self_edits: dict[str, Sequence[Sequence[str]]] | None = None, progress: Callable | None = None,
) -> list[dict]:
    """Evaluate `conditions` on `passages` and return one summary per condition (paired diffs vs `passage`).

    `conditions` names `base`, `passage`, `cpt`, `cpt+self_edits`, or a key of `self_edits` (e.g. `"base self-edits"`
    → the self-edits that model wrote). `cpt+self_edits` uses the first self-edit source.
    """
    self_edits = dict(self_edits or {})
    results: dict[str, ConditionResult] = {}
    for condition in conditions:
        if condition == "base":
            results[condition] = evaluate_base(adapter, passages, reward)
        elif condition == "passage":
            results[condition] = evaluate_passage_only(adapter, passages, reward, progress)
        elif condition == "cpt":
            results[condition] = evaluate_continued_pretraining(adapter, passages, None, reward)
        elif condition == "cpt+self_edits":
            if not self_edits:
                raise ValueError("cpt+self_edits needs a self-edit source (a model or a file).")
            first_source = next(iter(self_edits.values()))
            results[condition] = evaluate_continued_pretraining(adapter, passages, first_source, reward)
        elif condition in self_edits:
            results[condition] = evaluate_self_edits(condition, adapter, passages, self_edits[condition], reward,
                                                     progress)
        else:
            raise ValueError(f"Unknown condition {condition!r}: use base, passage, cpt, cpt+self_edits or one of "
                             f"{list(self_edits)}.")
    reference = results.get("passage")
    return [result.summary(reference) for result in results.values()]
