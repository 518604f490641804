"""Kept vs discarded self-edits on fresh seeds: did a ReST-EM round keep better self-edits, or luckier ones?

A knowledge reward is one noisy draw (the inner loop's seed moves it as much as the self-edit does on a small model),
so a round may keep self-edits that were merely lucky. This module retrains every self-edit of a finished run
`num_scorings` more times, with inner seeds the run never used, and compares the self-edits the run kept with those
it discarded: if keeping picked better teaching data, kept self-edits still score higher on fresh seeds; if it
picked luck, the gap shrinks towards 0 (regression to the mean).

The unit is the context (a passage and its k self-edits): the paired difference is, per context that has both, the
mean fresh reward of its kept self-edits minus that of its discarded ones, and its CI resamples contexts.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence

from ..ledger import text_sha256
from ..sampling import derive_seed
from ..types import completion_text
from .data import Passage
from .evaluate import bootstrap_ci
from .prompts import SELF_EDIT_PROMPTS, self_edit_prompt
from .reward import KnowledgeQAReward
from .stats import pearson, spearman

NAN = float("nan")


def prompt_text(prompt) -> str:
    """The text of a self-edit prompt as the trainer logged it: a string, or the content of its last user message."""
    if isinstance(prompt, str):
        return prompt
    users = [m.get("content", "") for m in prompt or [] if isinstance(m, dict) and m.get("role") == "user"]
    return users[-1] if users else ""


def match_passages(rows: Sequence[dict], passages: Sequence[Passage], rows_file: str, passages_file: str,
                   positions: Iterable[int] | None = None) -> dict[int, Passage]:
    """The passage of each row at `positions` (default: all), found by rebuilding its self-edit prompt (any named
    style) and matching exactly. A row whose prompt matches no passage is an error naming the row (its line in
    `rows_file`) and `passages_file`.

    Example:
    ```python
    >>> passage = Passage("Quellmarsh", "Quellmarsh is a town.", ())
    >>> rows = [{"prompt": [{"role": "user", "content": self_edit_prompt(passage)}]}]
    >>> match_passages(rows, [passage], "self_edits.jsonl", "passages.json")[0].title
    'Quellmarsh'
    ```
    """
    by_prompt = {self_edit_prompt(p, style): p for style in SELF_EDIT_PROMPTS for p in passages}
    matched = {}
    for position in range(len(rows)) if positions is None else positions:
        row = rows[position]
        matched[position] = by_prompt.get(prompt_text(row.get("prompt")))
        if matched[position] is None:
            raise ValueError(
                f"{rows_file} line {position + 1} (round {row.get('round')}, context {row.get('context')}): its "
                f"prompt matches no passage of {passages_file}. Pass the passage file the run trained on (its "
                "--passages), unchanged."
            )
    return matched


def is_valid(row: dict) -> bool:
    """A self-edit the run could score: it has a reward and no reason (empty, too long, failed inner loop...)."""
    return row.get("reward") is not None and not row.get("reason")


def select_rows(rows: Sequence[dict], rounds: Iterable[int] | None = None, max_contexts: int | None = None,
                valid: bool = True, kept_contexts_only: bool = False) -> list[int]:
    """Positions of the valid rows (`valid=False`: the invalid ones) of `rounds` (the file's 0-based numbers; None:
    all), in the first `max_contexts` contexts of each round; with `kept_contexts_only`, only contexts where the run
    kept a self-edit count (the others cannot inform the kept - discarded gap)."""
    wanted = None if rounds is None else set(rounds)
    with_kept = {(row["round"], row["context"]) for row in rows if row.get("kept")}
    contexts: dict[int, list[int]] = {}
    chosen = []
    for position, row in enumerate(rows):
        if wanted is not None and row["round"] not in wanted:
            continue
        if kept_contexts_only and (row["round"], row["context"]) not in with_kept:
            continue
        seen = contexts.setdefault(row["round"], [])
        if row["context"] not in seen:
            if max_contexts is not None and len(seen) >= max_contexts:
                continue
            seen.append(row["context"])
        if is_valid(row) == valid:
            chosen.append(position)
    return chosen


def round_positions(rows: Sequence[dict]) -> list[int]:
    """Each row's index within its round (the trainer writes a round's self-edits in index order): what the run's
    inner seed was derived from."""
    counts: dict[int, int] = {}
    positions = []
    for row in rows:
        positions.append(counts.get(row["round"], 0))
        counts[row["round"]] = positions[-1] + 1
    return positions


def fresh_seeds(seed: int, round_index: int, index: int, num_scorings: int) -> list[int]:
    """Seeds of the fresh scorings of self-edit `index` of a round: `derive_seed(seed, "rescore", round, index, j)`.
    The run derived its own from `(run seed, "inner", round, index)`, so the two never meet."""
    return [derive_seed(seed, "rescore", round_index, index, j) for j in range(num_scorings)]


def rescore(rows: Sequence[dict], passages: Mapping[int, Passage], positions: Sequence[int], reward: KnowledgeQAReward,
            adapter, num_scorings: int, seed: int, run_seed: int | None = None,
            on_record: Callable[[dict], None] | None = None, on_inner_loops: Callable[[int], None] | None = None,
            ) -> list[dict]:
    """Score the rows at `positions` `num_scorings` times each with fresh seeds; one record per self-edit.

    `passages` maps a row's position to its passage (`match_passages`); `adapter` holds the policy that scored the
    rows' round. The self-edits of one context are scored in one batched call. A fresh scoring is one reward (its own
    `reward.num_scorings` inner loops, as in the run); a scoring whose inner loop failed is None. With `run_seed`, a
    fresh inner seed equal to one the run used is an error. `on_record` hears each record once its context is done.

    Example:
    ```python
    >>> positions = select_rows(rows, rounds=[0], max_contexts=4)
    >>> records = rescore(rows, match_passages(rows, passages, "self_edits.jsonl", "train.json", positions),
    ...                   positions, KnowledgeQAReward(), adapter, num_scorings=3, seed=1)
    >>> round_statistics(records)[0]["fresh_difference"]
    0.05
    ```
    """
    indices = round_positions(rows)
    by_context: dict[tuple[int, int], list[int]] = {}
    for position in positions:
        by_context.setdefault((rows[position]["round"], rows[position]["context"]), []).append(position)
    records = []
    for (round_index, _), members in by_context.items():
        seeds = {p: fresh_seeds(seed, round_index, indices[p], num_scorings) for p in members}
        if run_seed is not None:
            _check_distinct(reward, seeds, run_seed, round_index, len(indices))
        fresh = _score_context(rows, passages, members, seeds, reward, adapter)
        if on_inner_loops is not None:
            on_inner_loops(len(members) * num_scorings * reward.num_scorings)
        for position in members:
            record = self_edit_record(rows[position], passages[position], indices[position], fresh[position],
                                      seeds[position])
            records.append(record)
            if on_record is not None:
                on_record(record)
    return records


def _score_context(rows, passages: Mapping[int, Passage], members, seeds, reward, adapter) -> dict[int, list]:
    """Every fresh scoring of one context's self-edits in one batched reward call: {position: rewards}."""
    texts, contexts, order, failed = [], [], [], set()
    for position in members:
        passage = passages[position]
        context = {"title": passage.title, "context": passage.context, "questions": passage.question_rows()}
        for j in range(len(seeds[position])):
            texts.append(completion_text(rows[position]["self_edit"]))
            contexts.append(context)
            order.append((position, j))
    values = reward.score_self_edits(adapter, texts, contexts, [s for p in members for s in seeds[p]],
                                     lambda i, reason: failed.add(i))
    fresh: dict[int, list[float | None]] = {p: [None] * len(seeds[p]) for p in members}
    for i, (position, j) in enumerate(order):
        fresh[position][j] = None if i in failed else values[i]
    return fresh


def _check_distinct(reward, seeds: dict[int, list[int]], run_seed: int, round_index: int, count: int) -> None:
    used = {s for i in range(count) for s in reward.scoring_seeds(derive_seed(run_seed, "inner", round_index, i))}
    clash = sorted({s for fresh in seeds.values() for f in fresh for s in reward.scoring_seeds(f)} & used)
    if clash:
        raise ValueError(f"Fresh inner seeds {clash} of round {round_index + 1} were used by the run: pick another "
                         "--seed.")


def self_edit_sha256(row: dict) -> str:
    """The hash of a row's prompt and self-edit: with round and index, what identifies it across restarts."""
    return text_sha256(f"{prompt_text(row['prompt'])}\n{completion_text(row['self_edit'])}")


def self_edit_record(row: dict, passage: Passage, index: int, fresh: list, seeds: list[int]) -> dict:
    usable = [v for v in fresh if v is not None]
    return {"round": row["round"], "context": row["context"], "index": index, "sha256": self_edit_sha256(row),
            "title": passage.title, "kept": bool(row["kept"]), "run_reward": row["reward"], "fresh_rewards": fresh,
            "fresh_mean": sum(usable) / len(usable) if usable else None, "fresh_seeds": seeds}


# ----------------------------------------------------------------------------------------------- statistics
def round_statistics(records: Sequence[dict], skipped: dict[int, int] | None = None, draws: int = 2000,
                     seed: int = 0) -> list[dict]:
    """Per round (numbered from 1): mean fresh reward of kept and of discarded self-edits, the paired within-context
    difference (kept mean - discarded mean, over contexts with both) with a 95 % bootstrap CI over contexts, the same
    difference in the run's own rewards, and Spearman/Pearson between run reward and fresh mean over self-edits.
    `skipped` counts the invalid rows of each round (0-based), which were not rescored.

    Example:
    ```python
    >>> values = [(0, True, 0.6, 0.4), (0, False, 0.0, 0.2), (1, True, 0.4, 0.2), (1, False, 0.2, 0.2)]
    >>> records = [{"round": 0, "context": c, "kept": k, "run_reward": r, "fresh_mean": f} for c, k, r, f in values]
    >>> stats = round_statistics(records)[0]
    >>> round(stats["fresh_difference"], 3), round(stats["run_difference"], 3)
    (0.1, 0.4)
    ```
    """
    skipped = skipped or {}
    by_round: dict[int, list[dict]] = {}
    for record in records:
        if record.get("fresh_mean") is not None:
            by_round.setdefault(record["round"], []).append(record)
    rounds = sorted(set(by_round) | set(skipped))
    return [_one_round(r, by_round.get(r, []), skipped.get(r, 0), draws, seed) for r in rounds]


def _one_round(round_index: int, records: list[dict], skipped: int, draws: int, seed: int) -> dict:
    contexts: dict[int, dict[bool, list[dict]]] = {}
    for record in records:
        contexts.setdefault(record["context"], {True: [], False: []})[record["kept"]].append(record)
    paired = [groups for groups in contexts.values() if groups[True] and groups[False]]

    def gap(key: str) -> list[float]:
        return [_mean(r[key] for r in g[True]) - _mean(r[key] for r in g[False]) for g in paired]

    fresh_gaps, run_gaps = gap("fresh_mean"), gap("run_reward")
    runs, fresh = [r["run_reward"] for r in records], [r["fresh_mean"] for r in records]
    return {
        "round": round_index + 1, "contexts": len(contexts), "paired_contexts": len(paired),
        "self_edits": len(records), "kept": sum(r["kept"] for r in records),
        "discarded": sum(not r["kept"] for r in records), "skipped_invalid": skipped,
        "kept_fresh_mean": _mean(r["fresh_mean"] for r in records if r["kept"]),
        "discarded_fresh_mean": _mean(r["fresh_mean"] for r in records if not r["kept"]),
        "fresh_difference": _mean(fresh_gaps), "fresh_difference_ci": bootstrap_ci(fresh_gaps, draws, seed),
        "run_difference": _mean(run_gaps), "run_difference_ci": bootstrap_ci(run_gaps, draws, seed),
        "spearman": spearman(runs, fresh), "pearson": pearson(runs, fresh),
    }


def _mean(values: Iterable[float]) -> float:
    values = list(values)
    return sum(values) / len(values) if values else NAN


def _points(value: float, ci: tuple[float, float] | None = None, loglik: bool = False) -> str:
    """A reward as the run scored it: accuracy-type rewards in points (x 100), loglik rewards in nats per token."""
    if math.isnan(value):
        return "n/a"
    scale, digits = (1, 2) if loglik else (100, 1)
    text = f"{scale * value:+.{digits}f}"
    if ci is None or math.isnan(ci[0]):
        return text
    return f"{text} [{scale * ci[0]:+.{digits}f}, {scale * ci[1]:+.{digits}f}]"


def reward_unit(loglik: bool) -> str:
    return "nats per token" if loglik else "points"


def markdown_table(stats: Sequence[dict], loglik: bool = False) -> str:
    """One row per round; rewards in points (x 100; `loglik`: nats per token), differences with their 95 % CI over
    contexts."""
    lines = ["| round | contexts (paired) | self-edits (kept / discarded; invalid skipped) | kept, fresh | "
             "discarded, fresh | kept - discarded, fresh | kept - discarded, run | Spearman / Pearson run vs fresh |",
             "|---|---|---|---|---|---|---|---|"]
    for s in stats:
        lines.append(
            f"| {s['round']} | {s['contexts']} ({s['paired_contexts']}) | {s['self_edits']} ({s['kept']} / "
            f"{s['discarded']}; {s['skipped_invalid']}) | {_points(s['kept_fresh_mean'], loglik=loglik)} | "
            f"{_points(s['discarded_fresh_mean'], loglik=loglik)} | "
            f"{_points(s['fresh_difference'], s['fresh_difference_ci'], loglik)} | "
            f"{_points(s['run_difference'], s['run_difference_ci'], loglik)} | "
            f"{s['spearman']:.2f} / {s['pearson']:.2f} |"
        )
    return "\n".join(lines)


def describe_round(s: dict, loglik: bool = False) -> str:
    """One plain sentence on a round: how far kept self-edits scored above discarded ones on fresh seeds."""
    if not s["paired_contexts"]:
        return f"round {s['round']}: no context had both kept and discarded self-edits, so there is no paired gap."
    low, high = s["fresh_difference_ci"]
    verdict = ("kept ones are better" if low > 0 else "kept ones are worse" if high < 0
               else "the CI includes 0: no gap these contexts can tell from none")
    unit = reward_unit(loglik)
    return (f"round {s['round']}: kept self-edits scored "
            f"{_points(s['fresh_difference'], s['fresh_difference_ci'], loglik)} {unit} above discarded ones on fresh "
            f"seeds over {s['paired_contexts']} contexts ({verdict}; the run's own rewards had them "
            f"{_points(s['run_difference'], loglik=loglik)} {unit} apart).")
