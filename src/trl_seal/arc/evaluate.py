"""The paper's few-shot ARC conditions (Table 1), measured the same way for every model.

Conditions, each giving one success (0 or 1) per (task, self-edit) pair:
- `in_context`: the model solves the task from its demonstrations alone, no adaptation (one pair per task);
- `oracle`: test-time training with a fixed configuration (default: every augmentation, loss on the output only);
- any named self-edit source: k self-edits per task written by a model (the base model, a SEAL-trained one), each
  one applied by test-time training and scored like a training reward.
Every condition adapts the same model and predicts with the same augmented inference; only the training data and
hyperparameters differ. Success rate = solved pairs / pairs, with a 95 % Wilson interval, overall and per task;
invalid self-edits count as failures and their reasons are reported.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from ..generation import chat_text, generate_batched
from .data import ARCTask
from .reward import ARCReward
from .self_edit import ORACLE, SelfEditConfig, self_edit_prompt


@dataclass
class ConditionResult:
    """Successes of one condition, one per (task, self-edit) pair, and the reasons self-edits were unusable."""

    name: str
    task_ids: list[str]
    successes: list[float]
    invalid: Counter = field(default_factory=Counter)
    seconds: float = 0.0

    def summary(self) -> dict:
        per_task = {}
        for task_id in dict.fromkeys(self.task_ids):
            values = [s for t, s in zip(self.task_ids, self.successes) if t == task_id]
            per_task[task_id] = _rate(values)
        invalid = sum(self.invalid.values())
        return {"condition": self.name, **_rate(self.successes), "invalid": dict(self.invalid),
                "invalid_rate": invalid / max(1, len(self.successes)), "seconds": round(self.seconds, 1),
                "per_task": per_task}


def _rate(values: Sequence[float]) -> dict:
    solved = int(sum(values))
    return {"pairs": len(values), "solved": solved, "success_rate": solved / len(values) if values else float("nan"),
            "ci95": list(wilson_interval(solved, len(values)))}


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95 % Wilson score interval of a success rate: sensible at 0/n and n/n, unlike the normal approximation.

    Example:
    ```python
    >>> [round(x, 3) for x in wilson_interval(0, 10)]
    [0.0, 0.278]
    ```
    """
    if n == 0:
        return (float("nan"), float("nan"))
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def evaluate_in_context(adapter, tasks: Sequence[ARCTask], reward: ARCReward) -> ConditionResult:
    """The un-adapted model, with the same augmented inference as every other condition."""
    start = time.perf_counter()
    successes = reward.in_context_rewards(adapter, tasks)
    return ConditionResult("in_context", [t.task_id for t in tasks], successes, seconds=time.perf_counter() - start)


def evaluate_self_edits(
    name: str, adapter, tasks: Sequence[ARCTask], self_edits: Sequence[Sequence[str]], reward: ARCReward
) -> ConditionResult:
    """Test-time training with each task's self-edits (texts, parsed strictly); one pair per self-edit."""
    owners = [task for task, edits in zip(tasks, self_edits, strict=True) for _ in edits]
    texts = [text for edits in self_edits for text in edits]
    rows = [task.to_row() for task in owners]
    invalid: Counter = Counter()
    start = time.perf_counter()
    successes = reward(
        prompts=[None] * len(texts), completions=texts, task_id=[r["task_id"] for r in rows],
        train=[r["train"] for r in rows], test=[r["test"] for r in rows], inner_adapter=adapter,
        record_invalid=lambda index, reason: invalid.update([reason]),
    )
    return ConditionResult(name, [t.task_id for t in owners], successes, invalid, time.perf_counter() - start)


def evaluate_oracle(adapter, tasks: Sequence[ARCTask], reward: ARCReward, config: SelfEditConfig = ORACLE,
                    repeats: int = 1) -> ConditionResult:
    """Test-time training with one fixed configuration for every task (`repeats` seeds each)."""
    return evaluate_self_edits("oracle", adapter, tasks, [[config.to_json()] * repeats for _ in tasks], reward)


def sample_self_edits(
    model, tokenizer, tasks: Sequence[ARCTask], k: int, max_new_tokens: int = 128, temperature: float = 1.0,
    top_p: float = 0.95, seed: int = 0,
) -> list[list[str]]:
    """k sampled self-edits per task from `model`, through its chat template (paper: temperature 1.0, top_p 0.95).

    Example:
    ```python
    >>> edits = sample_self_edits(model, tokenizer, tasks, k=5)
    >>> len(edits) == len(tasks) and all(len(e) == 5 for e in edits)
    True
    ```
    """
    import torch

    torch.manual_seed(seed)
    sampling = {"do_sample": True, "temperature": temperature, "top_p": top_p, "top_k": None}
    return [
        generate_batched(model, tokenizer, [chat_text(tokenizer, self_edit_prompt(task))] * k, max_new_tokens,
                         batch_size=k, sampling=sampling)
        for task in tasks
    ]


def run_conditions(
    adapter, tasks: Sequence[ARCTask], reward: ARCReward, conditions: Sequence[str],
    self_edits: dict[str, Sequence[Sequence[str]]] | None = None, oracle: SelfEditConfig = ORACLE,
    oracle_repeats: int = 1,
) -> list[dict]:
    """Evaluate `conditions` (`in_context`, `oracle`, or a key of `self_edits`) and return one summary each."""
    self_edits = dict(self_edits or {})
    summaries = []
    for condition in conditions:
        if condition == "in_context":
            result = evaluate_in_context(adapter, tasks, reward)
        elif condition == "oracle":
            result = evaluate_oracle(adapter, tasks, reward, oracle, oracle_repeats)
        elif condition in self_edits:
            result = evaluate_self_edits(condition, adapter, tasks, self_edits[condition], reward)
        else:
            raise ValueError(f"Unknown condition {condition!r}: use in_context, oracle or one of {list(self_edits)}.")
        summaries.append(result.summary())
    return summaries


def markdown_table(summaries: Sequence[dict]) -> str:
    """Overall success rates with CIs, then one row per task with each condition's solved/pairs."""
    lines = ["| condition | pairs | success rate (%) | 95 % CI (Wilson) | invalid self-edits |",
             "|---|---|---|---|---|"]
    for s in summaries:
        low, high = s["ci95"]
        lines.append(f"| {s['condition']} | {s['pairs']} | {100 * s['success_rate']:.1f} | "
                     f"[{100 * low:.1f}, {100 * high:.1f}] | {_invalid_text(s)} |")
    task_ids = list(dict.fromkeys(t for s in summaries for t in s["per_task"]))
    lines += ["", "| task | " + " | ".join(s["condition"] for s in summaries) + " |",
              "|---|" + "---|" * len(summaries)]
    for task_id in task_ids:
        cells = [_solved_text(s["per_task"].get(task_id)) for s in summaries]
        lines.append(f"| {task_id} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _invalid_text(summary: dict) -> str:
    if not summary["invalid"]:
        return "0"
    reasons = ", ".join(f"{reason} {count}" for reason, count in sorted(summary["invalid"].items()))
    return f"{100 * summary['invalid_rate']:.0f} % ({reasons})"


def _solved_text(rate: dict | None) -> str:
    return "" if rate is None else f"{rate['solved']}/{rate['pairs']}"


def write_results(output_dir: str, summaries: Sequence[dict], **extra) -> str:
    """`results.json` (summaries + `extra`) and `results.md` (the table) in `output_dir`; returns the table."""
    table = markdown_table(summaries)
    os.makedirs(output_dir, exist_ok=True)
    with open(os.path.join(output_dir, "results.json"), "w") as f:
        json.dump({**extra, "summaries": list(summaries)}, f, indent=1, default=str)
    with open(os.path.join(output_dir, "results.md"), "w") as f:
        f.write(table + "\n")
    return table
