"""The paper's knowledge-incorporation conditions, measured the same way for every model.

Conditions (each gives one accuracy per passage, then the mean with a 95 % bootstrap CI over passages):
- `base`: the model answers closed-book, no adaptation;
- `passage`: one adapter trained on the passage alone;
- `matched_passage`: the passage alone, repeated as many times as each self-edit (of the first source) has documents:
  a self-edit condition's step-matched control, which tells what the self-edit says from how long it trains;
- `self_edits`: the model (any model: the base, a SEAL-trained one, a bigger one) writes k self-edits per passage,
  an adapter is trained on each (plus the passage), the passage's score is the mean over its self-edits;
- `file`: self-edits read from a JSONL file (`{"title", "self_edit"}` per line, several per title allowed);
- `cpt`: continued pretraining, one adapter trained on the documents of all n passages, then all their questions.
Paired differences against `passage` (same passages), and against any other condition asked for, come with their own
CI: they are far tighter than the difference of two marginal CIs. `describe_comparison` says in one sentence what a
table's paired CIs allow one to claim.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from ..types import InnerJob, TrainingExample, adapted_groups
from .data import Passage
from .prompts import self_edit_prompt, training_documents
from .reward import KnowledgeQAReward, generate_answers, mean, specific_scores
from .score_log import PartialSelfEdits, ScoreLog

MATCHED_PASSAGE = "matched_passage"
SEEDED_CALLS_PER_SAVE = 4  # seeded writing: `generate` calls' worth of passages between two saves


@dataclass
class ConditionResult:
    """A condition's score per passage; `answers`, where kept, holds each passage's greedy answers (one list per
    adapter, one answer per question) so that any grader can be checked against them later, `logliks` the mean
    log-likelihood per token of the gold answers (`KnowledgeQAReward(score="loglik")`'s score) of each adapter and,
    when the evaluation's reward has `score="specific_loglik"`, `specific_logliks` that score of each adapter."""

    name: str
    per_passage: list[float]
    extra: dict = field(default_factory=dict)
    answers: list[list[list[str]]] | None = None
    logliks: list[list[float | None]] | None = None  # per passage and adapter: gold-answer loglik per token
    specific_logliks: list[list[float | None]] | None = None  # the same, minus the other questions' answers

    def summary(self, reference: ConditionResult | None = None, draws: int = 2000, seed: int = 0) -> dict:
        low, high = bootstrap_ci(self.per_passage, draws, seed)
        out = {"condition": self.name, "passages": len(self.per_passage), "accuracy": mean(self.per_passage),
               "ci95": [low, high], **self.extra}
        if reference is not None and reference is not self and len(reference.per_passage) == len(self.per_passage):
            out[paired_key(reference.name)] = self.paired_difference(reference, draws, seed)
        return out

    def paired_difference(self, reference: ConditionResult, draws: int = 2000, seed: int = 0) -> dict:
        """Mean of the per-passage differences `self - reference` (same passages, same order) with its 95 % CI."""
        diffs = [a - b for a, b in zip(self.per_passage, reference.per_passage, strict=True)]
        return {"mean": mean(diffs), "ci95": list(bootstrap_ci(diffs, draws, seed))}


def paired_key(reference: str) -> str:
    """The summary key that holds a condition's paired difference against `reference`."""
    return "paired_diff_vs_" + reference


def bootstrap_ci(values: Sequence[float], draws: int = 2000, seed: int = 0) -> tuple[float, float]:
    """Percentile 95 % CI of the mean, resampling passages."""
    if not values:
        return (float("nan"), float("nan"))
    rng = random.Random(seed)
    means = sorted(mean([values[rng.randrange(len(values))] for _ in values]) for _ in range(draws))
    return means[int(0.025 * draws)], means[int(0.975 * draws) - 1]


def evaluate_base(adapter, passages: Sequence[Passage], reward: KnowledgeQAReward) -> ConditionResult:
    with adapter.base_model() as base:
        answers = [reward.answers(base, adapter.tokenizer, p.title, _questions(p)) for p in passages]
        logliks = [[mean(reward.model_scores(base, adapter.tokenizer, p.title, _questions(p), score="loglik"))]
                   for p in passages]
        specific = [[mean(reward.model_scores(base, adapter.tokenizer, p.title, _questions(p)))] for p in passages] \
            if _keeps_specific(reward) else None
    scores = [mean(reward.grade(a, _questions(p))) for a, p in zip(answers, passages, strict=True)]
    return ConditionResult("base", scores, answers=[[a] for a in answers], logliks=logliks, specific_logliks=specific)


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
    kept: list[list[list[str]]] = [[] for _ in passages]
    logliks: list[list[float | None]] = [[] for _ in passages]
    specific: list[list[float | None]] = [[] for _ in passages]
    for group in adapted_groups(adapter, jobs):
        trained = [(m, passages[owners[member.job_index]])
                   for m, member in enumerate(group.members) if not member.failure]
        items = [(m, p.title, _questions(p)) for m, p in trained]
        answers, (gold, contrast) = reward.answer_group(group, items), _gold_logliks(reward, group, items)
        graded = {m: (mean(reward.grade(a, _questions(p))), a, g, c)
                  for (m, p), a, g, c in zip(trained, answers, gold, contrast, strict=True)}
        for m, member in enumerate(group.members):
            # a failed inner loop scores 0 and says nothing
            score, said, loglik, contrasted = graded.get(m, (0.0, [], None, None))
            scores[owners[member.job_index]].append(score)
            kept[owners[member.job_index]].append(said)
            logliks[owners[member.job_index]].append(loglik)
            specific[owners[member.job_index]].append(contrasted)
            if progress is not None:
                progress()
    per_passage = len(jobs) / max(1, len(passages))
    return ConditionResult(name, [mean(s) for s in scores], {"adapters_per_passage": per_passage}, kept, logliks,
                           specific if _keeps_specific(reward) else None)


def _keeps_specific(reward: KnowledgeQAReward) -> bool:
    """Whether an evaluation keeps the question-specific loglik too: only when asked, since its question x answer
    rows cost n times the plain loglik's for passages of n questions."""
    return reward.score_kind == "specific_loglik"


def _gold_logliks(reward, group, items) -> tuple[list[float], list[float | None]]:
    """Per item: the mean gold-answer loglik and, when the evaluation keeps it, the mean question-specific loglik
    (both from one question x answer matrix), else None."""
    if not items:
        return [], []
    if not _keeps_specific(reward):
        return [mean(g) for g in reward.loglik_group(group, items)], [None] * len(items)
    matrices = reward.loglik_matrix_group(group, items)
    return ([mean([row[i] for i, row in enumerate(m)]) for m in matrices],
            [mean(specific_scores(m)) for m in matrices])


def evaluate_passage_only(adapter, passages, reward, progress=None) -> ConditionResult:
    documents = [[training_documents(p.title, p.context, "")] for p in passages]
    return evaluate_documents("passage", adapter, passages, documents, reward, progress)


def evaluate_self_edits(name, adapter, passages, self_edits: Sequence[Sequence[str]], reward, progress=None):
    documents = _per_self_edit(passages, self_edits, lambda p, e: _self_edit_documents(p, e, reward))
    return evaluate_documents(name, adapter, passages, documents, reward, progress)


def evaluate_matched_passage(adapter, passages, self_edits: Sequence[Sequence[str]], reward, progress=None):
    """The step-matched control of a self-edit condition: for every self-edit, the passage alone repeated as many
    times as that self-edit has inner documents (so as many optimizer steps at batch 1; a passage is longer than a
    line, so more tokens). It tells a self-edit's content from its extra steps: on SmolLM2-135M, the passage twice
    taught more than the passage once, and far more than the passage plus the model's own implications at the same
    steps (docs/results.md 0c), so "beats passage only" alone can credit a self-edit with what extra steps did."""
    documents = _per_self_edit(passages, self_edits, lambda p, e: training_documents(p.title, p.context, "")
                               * len(_self_edit_documents(p, e, reward)))
    return evaluate_documents(MATCHED_PASSAGE, adapter, passages, documents, reward, progress)


def _self_edit_documents(passage: Passage, self_edit: str, reward: KnowledgeQAReward) -> list[TrainingExample]:
    return training_documents(passage.title, passage.context, self_edit, reward.document_layout,
                              reward.include_passage)


def _per_self_edit(passages, self_edits, documents_of: Callable) -> list[list[list[TrainingExample]]]:
    """`documents_of(passage, self_edit)` for every non-blank self-edit of a passage; the passage alone where it has
    none, so every passage gets a score."""
    return [[documents_of(p, e) for e in edits if e.strip()] or [training_documents(p.title, p.context, "")]
            for p, edits in zip(passages, self_edits, strict=True)]


def evaluate_continued_pretraining(adapter, passages, self_edits, reward) -> ConditionResult:
    """One adapter on the documents of all passages (and their self-edits, if given), then every question."""
    documents = []
    for index, passage in enumerate(passages):
        edits = [edit for edit in (self_edits[index] if self_edits else []) if edit.strip()]
        appended = reward.document_layout == "appended"  # each edit's document already holds the passage
        for edit in edits:
            documents += training_documents(passage.title, passage.context, edit, reward.document_layout,
                                            include_passage=appended)
        if not (appended and edits):
            documents += training_documents(passage.title, passage.context, "")
    scores = [0.0] * len(passages)
    for adapted in adapter.adapt([InnerJob(documents, seed=0)]):
        if adapted.failure is None:
            scores = [mean(reward.score(adapted.model, adapted.tokenizer, p.title, _questions(p))) for p in passages]
    return ConditionResult("cpt" + ("+self_edits" if self_edits else ""), scores, {"documents": len(documents)})


def generate_self_edits(model, tokenizer, passages, k: int, style: str = "implications", max_new_tokens: int = 256,
                        temperature: float = 1.0, top_p: float = 0.95, seed: int = 0,
                        rows_per_call: int | None = None, resume_from: PartialSelfEdits | None = None,
                        on_progress: Callable[[PartialSelfEdits], None] | None = None) -> list[list[str]]:
    """k sampled self-edits per passage from `model` (the paper samples at temperature 1.0, top_p 0.95).

    By default one passage (k rows) per `generate` call, all drawn from one torch stream seeded by `seed`: the
    self-edits depend on the order and number of the passages (the tables in docs/ were written this way). With
    `rows_per_call`, the self-edit `j` of a passage draws from its own stream seeded by (`seed`, passage id, `j`)
    (`trl_seal.sampling.sample_seeded`) and `rows_per_call` rows of similar length share a call: a passage gets the
    same self-edits in any batch and in any subset of passages, in fewer, fuller calls.

    Writing 100 passages takes minutes on a CPU, so a killed run need not start it over: `on_progress` is handed what
    is written so far (after every passage, or every few calls' worth of passages with `rows_per_call`) and
    `resume_from` continues from it, drawing the same self-edits an uninterrupted run would.

    Example:
    ```python
    >>> edits = generate_self_edits(model, tokenizer, passages, k=2, rows_per_call=32)
    >>> len(edits) == len(passages) and all(len(e) == 2 for e in edits)
    True
    ```
    """
    if rows_per_call is not None and rows_per_call < 1:
        raise ValueError(f"rows_per_call={rows_per_call}: it must be at least 1 (or None: one passage per call).")
    done = list(resume_from.self_edits) if resume_from is not None else []
    if len(done) > len(passages):
        raise ValueError(f"resume_from holds self-edits of {len(done)} passages, more than the {len(passages)} asked "
                         "for: it was written for another passage list; start the writing over.")
    prompts = [self_edit_prompt(p, style) for p in passages]
    from tqdm.auto import tqdm

    with tqdm(total=len(passages), initial=len(done), desc="writing self-edits", unit="passage") as bar:
        if rows_per_call is not None:
            return _seeded_self_edits(model, tokenizer, passages, prompts, k, (max_new_tokens, temperature, top_p),
                                      seed, rows_per_call, done, on_progress, bar)
        return _stream_self_edits(model, tokenizer, prompts, k, (max_new_tokens, temperature, top_p), seed,
                                  done, resume_from, on_progress, bar)


def _stream_self_edits(model, tokenizer, prompts, k, sampling, seed, done, resume_from, on_progress, bar):
    """One passage per call, every passage drawing from the one global torch stream (restored on resume)."""
    import torch

    max_new_tokens, temperature, top_p = sampling
    if done and (resume_from is None or resume_from.rng_state is None):
        raise ValueError("resume_from has self-edits but no random state to continue their stream from: it was "
                         "written with rows_per_call; pass the same rows_per_call, or start the writing over.")
    if done:
        torch.set_rng_state(torch.frombuffer(bytearray(resume_from.rng_state), dtype=torch.uint8))
    else:
        torch.manual_seed(seed)
    out = done
    for prompt in prompts[len(done):]:
        out.append(generate_answers(model, tokenizer, [prompt] * k, max_new_tokens, batch_size=k,
                                    sampling={"do_sample": True, "temperature": temperature, "top_p": top_p}))
        bar.update(1)
        if on_progress is not None:
            on_progress(PartialSelfEdits(list(out), bytes(torch.get_rng_state().numpy())))
    return out


def _seeded_self_edits(model, tokenizer, passages, prompts, k, sampling, seed, rows_per_call, done, on_progress,
                       bar) -> list[list[str]]:
    """One seeded stream per (passage, self-edit), `rows_per_call` rows per call; passages are written a few calls'
    worth at a time (their self-edits do not depend on which others share a call), each batch handed to
    `on_progress`."""
    from transformers import GenerationConfig

    from ..generation import chat_text

    max_new_tokens, temperature, top_p = sampling
    eos = model.generation_config.eos_token_id
    eos = [tokenizer.eos_token_id] if eos is None else [eos] if isinstance(eos, int) else list(eos)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos[0]
    config = GenerationConfig(max_new_tokens=max_new_tokens, do_sample=True, temperature=temperature, top_p=top_p,
                              pad_token_id=pad, eos_token_id=eos)
    ids = tokenizer([chat_text(tokenizer, prompt, plain_suffix="\nAnswer:") for prompt in prompts],
                    add_special_tokens=False)["input_ids"]
    per_batch = max(1, -(-SEEDED_CALLS_PER_SAVE * rows_per_call // k))  # passages between two saves
    out = done
    for start in range(len(done), len(passages), per_batch):
        batch = range(start, min(start + per_batch, len(passages)))
        out += _sample_passages(model, tokenizer, [passages[i] for i in batch], [ids[i] for i in batch], k, config,
                                (pad, eos), seed, rows_per_call)
        bar.update(len(batch))
        if on_progress is not None:
            on_progress(PartialSelfEdits(list(out)))
    return out


def _sample_passages(model, tokenizer, passages, ids, k, config, pad_eos, seed, rows_per_call) -> list[list[str]]:
    from ..sampling import derive_seed, sample_seeded

    rows = [(i, j) for i in range(len(passages)) for j in range(k)]
    seeds = [derive_seed(seed, "self-edit", passages[i].passage_id, j) for i, j in rows]
    completions = sample_seeded(model, [ids[i] for i, _ in rows], seeds, config, *pad_eos, rows_per_call)
    texts = tokenizer.batch_decode(completions, skip_special_tokens=True)
    return [[texts[i * k + j].strip() for j in range(k)] for i in range(len(passages))]


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


def markdown_table(summaries: Sequence[dict], references: Sequence[str] = ("passage",)) -> str:
    """The summaries as a Markdown table: accuracy and its CI, then one column of paired differences (percentage
    points, 95 % CI) per condition in `references`."""
    header = "".join(f" paired diff vs {reference} (95 % CI) |" for reference in references)
    lines = ["| condition | passages | accuracy (%) | 95 % CI |" + header,
             "|---|---|---|---|" + "---|" * len(references)]
    for s in summaries:
        diffs = "".join(f" {_points(s.get(paired_key(reference)))} |" for reference in references)
        lines.append(f"| {s['condition']} | {s['passages']} | {100 * s['accuracy']:.1f} | "
                     f"[{100 * s['ci95'][0]:.1f}, {100 * s['ci95'][1]:.1f}] |" + diffs)
    return "\n".join(lines)


def _points(paired: dict | None) -> str:
    if not paired:
        return ""
    low, high = paired["ci95"]
    return f"{100 * paired['mean']:+.1f} [{100 * low:+.1f}, {100 * high:+.1f}]"


# How `describe_comparison` names the conditions the scripts use; any other condition is named as it is.
CONDITION_PHRASES = {
    "base": "the base model without training",
    "passage": "training on the passage alone",
    "matched_passage": "training on the passage alone for as many steps as the self-edits",
    "base self-edits": "the base model's own self-edits",
    "SEAL self-edits": "the SEAL model's self-edits",
    "self_edits": "the self-edits",
    "file": "the self-edits of the file",
}


def describe_comparison(summaries: Sequence[dict], condition: str = "SEAL self-edits",
                        references: Sequence[str] = ("base self-edits", "passage")) -> str:
    """One plain sentence on what a table shows about `condition`: its accuracy, then for each reference the paired
    difference, its 95 % CI and what the CI allows one to claim (a gain or a loss only when it excludes 0).

    References without a paired difference in `condition`'s summary are left out.

    Example:

    ```python
    >>> rows = [{"condition": "passage", "passages": 24, "accuracy": 0.1, "ci95": [0.05, 0.15]},
    ...         {"condition": "SEAL self-edits", "passages": 24, "accuracy": 0.2, "ci95": [0.1, 0.3],
    ...          "paired_diff_vs_passage": {"mean": 0.1, "ci95": [0.02, 0.18]}}]
    >>> sentence = describe_comparison(rows, references=["passage"])
    >>> sentence.startswith("On 24 held-out passages, the SEAL model's self-edits gave 20.0 % accuracy: +10.0 points")
    True
    >>> sentence.endswith("paired 95 % CI [+2.0, +18.0], above 0: a gain on these passages).")
    True
    ```
    """
    by_name = {s["condition"]: s for s in summaries}
    if condition not in by_name:
        raise ValueError(f"No condition {condition!r} in the summaries ({list(by_name)}): describe one of them.")
    target = by_name[condition]
    clauses = [_comparison_clause(target[paired_key(r)], by_name[r], target["passages"])
               for r in references if r in by_name and paired_key(r) in target]
    head = (f"On {target['passages']} held-out passages, {condition_phrase(condition)} gave "
            f"{100 * target['accuracy']:.1f} % accuracy")
    if not clauses:
        low, high = target["ci95"]
        return f"{head} (95 % CI [{100 * low:.1f}, {100 * high:.1f}]); no paired comparison was made."
    return f"{head}: {' and '.join(clauses)}."


def condition_phrase(condition: str) -> str:
    """A condition's name in a sentence: `self_edits (<writer>)`, as `eval-knowledge` names a writer's condition,
    reads "the self-edits written by <writer>"."""
    if condition in CONDITION_PHRASES:
        return CONDITION_PHRASES[condition]
    writer = re.fullmatch(r"self_edits \((.+)\)", condition)
    return f"the self-edits written by {writer.group(1)}" if writer else condition


def _comparison_clause(paired: dict, reference: dict, passages: int) -> str:
    low, high = paired["ci95"]
    if low > 0:
        verdict = "above 0: a gain on these passages"
    elif high < 0:
        verdict = "below 0: a loss on these passages"
    else:
        verdict = f"includes 0: no difference can be claimed on {passages} passages"
    name = condition_phrase(reference["condition"])
    return (f"{100 * paired['mean']:+.1f} points vs {name} ({100 * reference['accuracy']:.1f} %; paired 95 % CI "
            f"[{100 * low:+.1f}, {100 * high:+.1f}], {verdict})")


def _questions(passage: Passage) -> list[dict]:
    return passage.question_rows()


def run_conditions(
    adapter, passages: Sequence[Passage], reward: KnowledgeQAReward, conditions: Sequence[str],
    self_edits: dict[str, Sequence[Sequence[str]]] | None = None, progress: Callable | None = None,
    paired: Sequence[tuple[str, str]] = (), log: ScoreLog | None = None, passages_per_chunk: int = 16,
    on_chunk: Callable[[list[dict], int], None] | None = None,
) -> list[dict]:
    """Evaluate `conditions` on `passages` and return one summary per condition (paired diffs vs `passage`).

    `conditions` names `base`, `passage`, `cpt`, `cpt+self_edits`, or a key of `self_edits` (e.g. `"base self-edits"`
    → the self-edits that model wrote). `cpt+self_edits` uses the first self-edit source. Each `(condition,
    reference)` in `paired` adds the paired difference `condition - reference` to that condition's summary (under
    `paired_key(reference)`), e.g. `[("SEAL self-edits", "base self-edits")]`.

    With a `log` (`ScoreLog`), the passages are evaluated `passages_per_chunk` at a time, every condition on one chunk
    before the next chunk (the continued-pretraining ones, one adapter over all passages, come last). Each chunk's
    scores are appended to the log as it finishes, and chunks the log already holds are read back instead of trained
    again: a killed evaluation resumes. After every chunk but the last, `on_chunk(summaries, passages_done)` gets the
    paired table of the passages done so far, so a long evaluation shows its interim result.
    """
    unknown = [name for pair in paired for name in pair if name not in conditions]
    if unknown:
        raise ValueError(f"paired names {unknown}, which are not among the conditions {list(conditions)}: pair only "
                         "conditions that are evaluated.")
    if passages_per_chunk < 1:
        raise ValueError(f"passages_per_chunk={passages_per_chunk}: it must be at least 1.")
    self_edits = dict(self_edits or {})
    evaluators = {c: _evaluator(c, adapter, passages, reward, self_edits, progress) for c in conditions}
    chunked = [c for c in conditions if not c.startswith("cpt")]
    chunk_size = passages_per_chunk if log is not None else max(1, len(passages))
    parts: dict[str, list] = {c: [] for c in conditions}
    for start in range(0, len(passages), chunk_size) if chunked else ():
        at = range(start, min(start + chunk_size, len(passages)))
        for condition in chunked:
            parts[condition] += _logged_chunk(condition, passages, at, evaluators[condition], log, progress)
        if on_chunk is not None and at.stop < len(passages):
            done = [(c, parts[c]) for c in chunked]
            on_chunk(_summaries(done, [p for p in paired if set(p) <= set(chunked)]), at.stop)
    for condition in conditions:
        if condition not in chunked:
            result = evaluators[condition](range(len(passages)))
            parts[condition] = [(score, result.extra) for score in result.per_passage]
    return _summaries([(c, parts[c]) for c in conditions], paired)


def _summaries(parts: Sequence[tuple[str, list]], paired: Sequence[tuple[str, str]]) -> list[dict]:
    """One summary per condition from its `(score, extra)` per passage, with the paired differences asked for."""
    results = {name: _merged(name, found) for name, found in parts}
    reference = results.get("passage")
    summaries = {name: result.summary(reference) for name, result in results.items()}
    for name, other in paired:
        if name != other:
            summaries[name][paired_key(other)] = results[name].paired_difference(results[other])
    return list(summaries.values())


def _evaluator(condition, adapter, passages, reward, self_edits, progress) -> Callable[[range], ConditionResult]:
    """A function that evaluates `condition` on the passages at some indices."""
    if condition == "base":
        return lambda at: evaluate_base(adapter, [passages[i] for i in at], reward)
    if condition == "passage":
        return lambda at: evaluate_passage_only(adapter, [passages[i] for i in at], reward, progress)
    if condition == "cpt":
        return lambda at: evaluate_continued_pretraining(adapter, [passages[i] for i in at], None, reward)
    if condition == "cpt+self_edits":
        if not self_edits:
            raise ValueError("cpt+self_edits needs a self-edit source (a model or a file).")
        first = next(iter(self_edits.values()))
        return lambda at: evaluate_continued_pretraining(adapter, [passages[i] for i in at], [first[i] for i in at],
                                                         reward)
    if condition == MATCHED_PASSAGE:
        if not self_edits:
            raise ValueError(f"{MATCHED_PASSAGE} matches the steps of the first self-edit source, and none was given "
                             "(a model or a file).")
        first = next(iter(self_edits.values()))
        return lambda at: evaluate_matched_passage(adapter, [passages[i] for i in at], [first[i] for i in at],
                                                   reward, progress)
    if condition in self_edits:
        edits = self_edits[condition]
        return lambda at: evaluate_self_edits(condition, adapter, [passages[i] for i in at], [edits[i] for i in at],
                                              reward, progress)
    raise ValueError(f"Unknown condition {condition!r}: use base, passage, {MATCHED_PASSAGE}, cpt, cpt+self_edits or "
                     f"one of {list(self_edits)}.")


def _logged_chunk(condition, passages, at: range, evaluate, log, progress) -> list[tuple[float, dict]]:
    """`(score, extra)` of the passages at `at`: read from the log when it holds them all, else evaluated (and
    recorded). A chunk's `extra` (adapters per passage, documents) is stored with each of its passages, so its mean
    over passages equals the uninterrupted run's."""
    ids = [passages[i].passage_id for i in at]
    found = log.lookup(condition, ids) if log is not None else None
    if found is None:
        result = evaluate(at)
        found = [(score, result.extra) for score in result.per_passage]
        if log is not None:
            log.record(condition, [(i, score) for i, (score, _) in zip(ids, found, strict=True)], result.extra,
                       answers=result.answers, logliks=result.logliks, specific_logliks=result.specific_logliks)
    elif progress is not None:
        for _ in range(round(found[0][1].get("adapters_per_passage", 0) * len(at))):
            progress()
    return found


def _merged(condition: str, found: Sequence[tuple[float, dict]]) -> ConditionResult:
    """A condition's result from its `(score, extra)` per passage: an `extra` that differs between chunks is
    averaged over passages."""
    extras = [extra for _, extra in found]
    merged = {}
    for key in dict.fromkeys(key for extra in extras for key in extra):
        values = [extra.get(key, 0) for extra in extras]
        merged[key] = values[0] if len(set(values)) == 1 else mean(values)
    return ConditionResult(condition, [score for score, _ in found], merged)
