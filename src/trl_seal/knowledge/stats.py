"""Statistics for reward and evaluation studies where passages are the unit: correlations within passage, variance
components, rank agreement and bootstrap CIs that resample passages.

Every function takes plain Python lists; a "group" is one passage's values (e.g. its self-edits' scores), so the
passage-to-passage difficulty never counts as signal.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence

from .evaluate import bootstrap_ci  # noqa: F401 (the CI of a mean, re-exported with the others)

NAN = float("nan")


def pearson(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Pearson correlation; NaN when either side is constant or there are fewer than 2 pairs.

    Example:
    ```python
    >>> pearson([1, 2, 3], [2, 4, 7])
    0.9933992677987828
    ```
    """
    n = len(xs)
    if n < 2 or len(ys) != n:
        return NAN
    mx, my = sum(xs) / n, sum(ys) / n
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True))
    sxx, syy = sum((x - mx) ** 2 for x in xs), sum((y - my) ** 2 for y in ys)
    return sxy / math.sqrt(sxx * syy) if sxx > 0 and syy > 0 else NAN


def average_ranks(values: Sequence[float]) -> list[float]:
    """Ranks 1..n, ties sharing their average rank (as Spearman's rho needs)."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and values[order[end + 1]] == values[order[start]]:
            end += 1
        for position in range(start, end + 1):
            ranks[order[position]] = (start + end) / 2 + 1
        start = end + 1
    return ranks


def spearman(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Spearman's rank correlation (Pearson on average ranks); NaN when either side is constant.

    Example:
    ```python
    >>> spearman([1, 2, 3, 4], [10, 20, 40, 30])
    0.8
    ```
    """
    return pearson(average_ranks(xs), average_ranks(ys))


def within_group_correlation(groups: Sequence[Sequence[tuple[float, float]]]) -> float:
    """Pearson correlation of paired scorings `(x, y)` after subtracting each group's means (pooled over groups):
    the test-retest correlation of two scorings of the same items, passage difficulty removed."""
    xs, ys = [], []
    for pairs in groups:
        if len(pairs) < 2:
            continue
        mx, my = sum(p[0] for p in pairs) / len(pairs), sum(p[1] for p in pairs) / len(pairs)
        xs += [x - mx for x, _ in pairs]
        ys += [y - my for _, y in pairs]
    return pearson(xs, ys)


def within_group_slope(groups: Sequence[Sequence[tuple[float, float]]]) -> float:
    """Least-squares slope of `y` on `x` after subtracting each group's means (pooled over groups): how `y` moves with
    `x` within a passage, passage difficulty removed. NaN where no group has two distinct `x`.

    Example:
    ```python
    >>> within_group_slope([[(0, 1.0), (1, 3.0)], [(0, 10.0), (2, 14.0)]])
    2.0
    ```
    """
    num = den = 0.0
    for pairs in groups:
        if len(pairs) < 2:
            continue
        mx, my = sum(p[0] for p in pairs) / len(pairs), sum(p[1] for p in pairs) / len(pairs)
        num += sum((x - mx) * (y - my) for x, y in pairs)
        den += sum((x - mx) ** 2 for x, _ in pairs)
    return num / den if den else NAN


def variance_components(groups: Sequence[Sequence[Sequence[float]]]) -> dict[str, float]:
    """Nested one-way random-effects ANOVA: items within groups, each item scored `r >= 2` times.

    `groups[p][i]` holds the `r` scorings of item `i` of group `p` (every item the same `r`). Returns `noise` (the
    variance between scorings of one item), `signal` (the variance of the items' true scores within a group, which
    can come out negative by chance: then the data show no signal) and `signal_share` = signal / (signal + noise),
    the share of a single scoring's within-group variance that is signal (its expected test-retest correlation).

    Example:
    ```python
    >>> variance_components([[[-0.5, -1.5], [0.5, -0.5], [1.5, 0.5]]])  # true -1, 0, 1; noise +-0.5
    {'signal': 0.75, 'noise': 0.5, 'signal_share': 0.6}
    ```
    """
    replicates = {len(item) for items in groups for item in items}
    if not replicates:
        return {"signal": NAN, "noise": NAN, "signal_share": NAN}
    if len(replicates) != 1 or min(replicates) < 2:
        raise ValueError(f"Every item needs the same number (>= 2) of scorings, got {sorted(replicates)}.")
    r = replicates.pop()
    within_ss = between_ss = 0.0
    within_df = between_df = 0
    for items in groups:
        if len(items) < 2:
            continue
        means = [sum(item) / r for item in items]
        grand = sum(means) / len(means)
        within_ss += sum((x - m) ** 2 for item, m in zip(items, means, strict=True) for x in item)
        between_ss += r * sum((m - grand) ** 2 for m in means)
        within_df += len(items) * (r - 1)
        between_df += len(items) - 1
    if not within_df or not between_df:
        return {"signal": NAN, "noise": NAN, "signal_share": NAN}
    noise = within_ss / within_df
    signal = (between_ss / between_df - noise) / r
    total = signal + noise
    return {"signal": signal, "noise": noise, "signal_share": signal / total if total > 0 else NAN}


def mean_within_group_spearman(groups: Sequence[Sequence[tuple[float, float]]]) -> tuple[float, int]:
    """Mean over groups of Spearman's rho between the pairs' two values, and how many groups had a defined rho
    (a group where either side is constant has none)."""
    values = [spearman([x for x, _ in pairs], [y for _, y in pairs]) for pairs in groups]
    defined = [v for v in values if not math.isnan(v)]
    return (sum(defined) / len(defined) if defined else NAN), len(defined)


def spearman_brown(reliability: float, m: int) -> float:
    """The reliability of the mean of `m` parallel measurements, each of reliability `reliability` (the
    Spearman-Brown prophecy formula: noise averages away, signal does not). A negative estimate (sampling noise
    around no signal) counts as 0.

    Example:
    ```python
    >>> round(spearman_brown(0.2, 3), 3)
    0.429
    ```
    """
    if math.isnan(reliability):
        return NAN
    reliability = max(0.0, reliability)
    return m * reliability / (1 + (m - 1) * reliability)


def mean_selection_gain(groups: Sequence[Sequence[tuple[float, float]]]) -> float:
    """Mean over groups of (the reference value of the item ranked first by the score) minus (the group's mean
    reference): what keeping each group's best-scored item buys, measured on independent data. Items tied for first
    share the pick; groups of one item are skipped.

    Example:
    ```python
    >>> mean_selection_gain([[(0.9, 1.0), (0.1, 0.0)], [(0.2, 0.0), (0.8, 0.5)]])  # picks 1.0 and 0.5
    0.375
    ```
    """
    gains = []
    for pairs in groups:
        if len(pairs) < 2:
            continue
        best = max(score for score, _ in pairs)
        picked = [reference for score, reference in pairs if score == best]
        gains.append(sum(picked) / len(picked) - sum(reference for _, reference in pairs) / len(pairs))
    return sum(gains) / len(gains) if gains else NAN


def bootstrap_statistic(
    groups: Sequence, statistic: Callable[[Sequence], float], draws: int = 2000, seed: int = 0
) -> tuple[float, float]:
    """Percentile 95 % CI of `statistic(groups)`, resampling whole groups (passages) with replacement; draws where
    the statistic is undefined (NaN) are dropped.

    Example:
    ```python
    >>> bootstrap_statistic([[1.0], [2.0], [3.0]], lambda gs: sum(g[0] for g in gs) / len(gs))
    (1.0, 3.0)
    ```
    """
    if not groups:
        return (NAN, NAN)
    rng = random.Random(seed)
    values = []
    for _ in range(draws):
        value = statistic([groups[rng.randrange(len(groups))] for _ in groups])
        if not math.isnan(value):
            values.append(value)
    if not values:
        return (NAN, NAN)
    values.sort()
    return values[int(0.025 * len(values))], values[max(0, int(0.975 * len(values)) - 1)]
