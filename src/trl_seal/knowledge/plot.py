"""The main job's figure: held-out accuracy per condition with 95 % CIs, and the reward of the sampled self-edits per
ReST-EM round.

Plain data in (the summaries of `run_conditions`, the rows of the trainer's `self_edits.jsonl`), a PNG out.
matplotlib is imported only when a figure is drawn, so importing `trl_seal` stays light.
"""

from __future__ import annotations

import math
import os
import random
import textwrap
from collections.abc import Sequence

from ..ledger import read_complete_lines
from .evaluate import bootstrap_ci
from .reward import mean


def read_self_edit_rows(output_dir: str) -> list[dict]:
    """The trainer's `self_edits.jsonl` rows (one per sampled self-edit: round, context, reward, kept); [] when the
    run wrote none. A last line cut short by a kill is skipped, as the ledger skips it."""
    path = os.path.join(output_dir, "self_edits.jsonl")
    return read_complete_lines(path) if os.path.exists(path) else []


def round_rewards(rows: Sequence[dict], draws: int = 2000, seed: int = 0) -> list[dict]:
    """Per ReST-EM round: the mean reward of its sampled self-edits and a 95 % CI that resamples contexts (the
    self-edits of one context share its difficulty, so contexts are the unit), plus every reward for the spread.

    Self-edits without a reward (invalid ones) are left out. Returns `[{"round", "contexts", "mean", "ci95",
    "rewards"}]` in round order; rounds are numbered from 1.

    Example:

    ```python
    >>> rows = [{"round": 0, "context": c, "reward": r} for c, r in [(0, 0.2), (0, 0.0), (1, 0.4), (1, None)]]
    >>> [(r["round"], r["contexts"], round(r["mean"], 3)) for r in round_rewards(rows)]
    [(1, 2, 0.2)]
    ```
    """
    by_round: dict[int, dict[int, list[float]]] = {}
    for row in rows:
        if row.get("reward") is None:
            continue
        by_round.setdefault(int(row["round"]), {}).setdefault(int(row["context"]), []).append(float(row["reward"]))
    out = []
    for number in sorted(by_round):
        contexts = by_round[number]
        rewards = [reward for values in contexts.values() for reward in values]
        per_context = [mean(values) for values in contexts.values()]
        out.append({"round": number + 1, "contexts": len(contexts), "mean": mean(rewards),
                    "ci95": list(bootstrap_ci(per_context, draws, seed)), "rewards": rewards})
    return out


def plot_results(path: str, summaries: Sequence[dict], rounds: Sequence[dict], reward_label: str = "reward",
                 title: str | None = None) -> str:
    """Write a PNG: left, accuracy (%) per condition with its 95 % CI; right, the mean reward of the sampled
    self-edits per round with its 95 % CI and every self-edit's reward as a dot. Returns `path`.

    Args:
        path (`str`): where the PNG goes (its folder must exist).
        summaries (`Sequence[dict]`): `run_conditions` summaries (`condition`, `accuracy`, `ci95`).
        rounds (`Sequence[dict]`): `round_rewards` records; none gives an empty panel that says so.
        reward_label (`str`): the reward's name for the y axis, e.g. "accuracy gain over the base model".
        title (`str`, *optional*): the figure's title.

    Example:

    ```python
    >>> summaries = [{"condition": "passage", "accuracy": 0.1, "ci95": [0.05, 0.15]}]
    >>> rounds = [{"round": 1, "mean": 0.05, "ci95": [0.0, 0.1], "rewards": [0.0, 0.1]}]
    >>> plot_results("results.png", summaries, rounds)  # doctest: +SKIP
    'results.png'
    ```
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as error:  # a core dependency, but a trimmed environment may lack it
        raise ImportError("Plotting the results needs matplotlib: pip install matplotlib") from error

    # A Figure with its own Agg canvas: no pyplot, so no global backend or figure state is touched.
    figure = Figure(figsize=(11, 4.2), layout="constrained")
    FigureCanvasAgg(figure)
    accuracy_axes, reward_axes = figure.subplots(1, 2, width_ratios=[3, 2])
    _accuracy_panel(accuracy_axes, summaries)
    _reward_panel(reward_axes, rounds, reward_label)
    if title:
        figure.suptitle(title)
    figure.savefig(path, dpi=110)
    return path


def _accuracy_panel(axes, summaries: Sequence[dict]) -> None:
    names = [_tick_label(s["condition"]) for s in summaries]
    values = [100 * s["accuracy"] for s in summaries]
    lows = [max(0.0, v - 100 * s["ci95"][0]) for v, s in zip(values, summaries, strict=True)]
    highs = [max(0.0, 100 * s["ci95"][1] - v) for v, s in zip(values, summaries, strict=True)]
    positions = range(len(names))
    axes.bar(positions, values, color="#8fb3d9", edgecolor="#2d5d8a")
    axes.errorbar(positions, values, yerr=[lows, highs], fmt="none", ecolor="black", capsize=6)
    for position, value in zip(positions, values, strict=True):
        axes.annotate(f"{value:.1f}", (position, value), xytext=(4, 3), textcoords="offset points", fontsize="small")
    axes.set_xticks(list(positions), names)
    passages = {s.get("passages") for s in summaries}
    count = f" on {passages.pop()} held-out passages" if len(passages) == 1 and None not in passages else ""
    axes.set_ylabel("accuracy (%)")
    axes.set_title(f"closed-book accuracy{count}\n(95 % bootstrap CI over passages)", fontsize="medium")
    axes.set_ylim(bottom=0)


def _reward_panel(axes, rounds: Sequence[dict], reward_label: str) -> None:
    axes.set_title("reward of the sampled self-edits per ReST-EM round\n(mean, 95 % CI over contexts; dots: "
                   "self-edits)", fontsize="medium")
    axes.set_xlabel("round")
    axes.set_ylabel(textwrap.fill(reward_label, 40))
    if not rounds:
        axes.text(0.5, 0.5, "no round logged", ha="center", va="center", transform=axes.transAxes)
        return
    jitter = random.Random(0)
    for record in rounds:
        dots = [r for r in record.get("rewards", []) if not math.isnan(r)]
        xs = [record["round"] + jitter.uniform(-0.12, 0.12) for _ in dots]
        axes.scatter(xs, dots, s=12, color="grey", alpha=0.5, zorder=1)
    numbers = [r["round"] for r in rounds]
    means = [r["mean"] for r in rounds]
    below = [max(0.0, m - r["ci95"][0]) for m, r in zip(means, rounds, strict=True)]
    above = [max(0.0, r["ci95"][1] - m) for m, r in zip(means, rounds, strict=True)]
    axes.errorbar(numbers, means, yerr=[below, above], fmt="o-", color="#c0392b", capsize=6, zorder=2)
    axes.set_xticks(numbers)
    axes.set_xlim(min(numbers) - 0.5, max(numbers) + 0.5)
    axes.axhline(0.0, color="black", linewidth=0.6)


def _tick_label(name: str, width: int = 16) -> str:
    """A condition name on lines of about `width` characters, paths broken after a slash, so that long names such as
    `self_edits (outputs/run/checkpoint-8)` do not run into their neighbours."""
    lines = textwrap.wrap(name.replace("/", "/ "), width, break_long_words=True)
    return "\n".join(line.replace("/ ", "/") for line in lines)
