"""Known-answer tests of the statistics behind the reward and format studies (trl_seal.knowledge.stats)."""

import math
import random

import pytest

from trl_seal.knowledge.stats import (
    average_ranks,
    bootstrap_statistic,
    mean_selection_gain,
    mean_within_group_spearman,
    pearson,
    spearman,
    spearman_brown,
    variance_components,
    within_group_correlation,
    within_group_slope,
)


def test_pearson_and_spearman_known_values():
    assert pearson([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0)
    assert pearson([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert pearson([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)  # cov 1.0 / var 1.25
    assert math.isnan(pearson([1, 1, 1], [1, 2, 3])) and math.isnan(pearson([1], [2]))
    assert spearman([1, 2, 3, 4], [10, 20, 40, 30]) == pytest.approx(0.8)  # 1 - 6*2/(4*15)
    assert spearman([1, 2, 3], [1, 8, 27]) == pytest.approx(1.0), "monotone, not linear: rho is 1"
    assert average_ranks([3, 1, 3, 2]) == [3.5, 1.0, 3.5, 2.0]
    assert spearman([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(pearson([1, 2.5, 2.5, 4], [1, 2, 3, 4]))


def test_within_group_correlation_removes_group_means():
    # inside each group the scorings agree perfectly; the groups' levels differ wildly and must not matter
    groups = [[(0.0, 10.0), (1.0, 11.0)], [(100.0, -5.0), (102.0, -3.0)]]
    assert within_group_correlation(groups) == pytest.approx(1.0)
    crossed = [[(0.0, 1.0), (1.0, 0.0)], [(5.0, 6.0), (6.0, 5.0)]]
    assert within_group_correlation(crossed) == pytest.approx(-1.0)


def test_within_group_slope_removes_group_means():
    # y = 2x + a group offset: the offsets (passage difficulty) leave the slope at exactly 2.
    groups = [[(x, 2 * x + offset) for x in (0.0, 1.0, 3.0)] for offset in (0.0, 5.0, -7.0)]
    assert within_group_slope(groups) == pytest.approx(2.0)
    # Across groups the offsets would mislead (a pooled slope of these points is negative); within, it is +1.
    assert within_group_slope([[(0, 10.0), (1, 11.0)], [(5, 0.0), (6, 1.0)]]) == pytest.approx(1.0)
    assert math.isnan(within_group_slope([[(1, 2.0)], [(3, 4.0), (3, 5.0)]])), "no group with two distinct x"


def test_variance_components_known_answer():
    # true scores -1, 0, 1 (variance 1 with k-1 in the denominator); each scoring off by +-0.5 (noise variance 0.5)
    passage = [[-0.5, -1.5], [0.5, -0.5], [1.5, 0.5]]
    shifted = [[x + 7 for x in item] for item in passage]  # a passage 7 points easier: same components
    out = variance_components([passage, shifted])
    assert out == pytest.approx({"signal": 0.75, "noise": 0.5, "signal_share": 0.6})
    pure_noise = variance_components([[[0.0, 1.0], [1.0, 0.0]]])
    assert pure_noise["signal"] < 0 and pure_noise["noise"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="same number"):
        variance_components([[[0.0, 1.0], [1.0]]])


def test_variance_components_recover_simulated_share():
    rng = random.Random(0)
    groups = []
    for _ in range(400):
        level = rng.gauss(0, 5)
        items = []
        for _ in range(4):
            true = level + rng.gauss(0, 1.0)  # signal variance 1
            items.append([true + rng.gauss(0, 2.0) for _ in range(2)])  # noise variance 4
        groups.append(items)
    out = variance_components(groups)
    assert out["signal_share"] == pytest.approx(0.2, abs=0.05) and out["noise"] == pytest.approx(4.0, rel=0.1)
    pairs = [[(a, b) for a, b in items] for items in groups]
    assert within_group_correlation(pairs) == pytest.approx(0.2, abs=0.07), "test-retest r estimates the same share"


def test_mean_within_group_spearman_skips_undefined_groups():
    groups = [[(1, 1), (2, 2), (3, 3)], [(1, 3), (2, 2), (3, 1)], [(1, 5), (2, 5), (3, 5)]]
    assert mean_within_group_spearman(groups) == (pytest.approx(0.0), 2)


def test_spearman_brown_known_values():
    assert spearman_brown(0.2, 3) == pytest.approx(0.6 / 1.4)
    assert spearman_brown(0.5, 1) == pytest.approx(0.5) and spearman_brown(1.0, 5) == pytest.approx(1.0)
    assert spearman_brown(-0.1, 3) == 0.0, "a negative estimate is no signal"
    assert math.isnan(spearman_brown(float("nan"), 3))


def test_mean_selection_gain_picks_the_top_scored_item():
    groups = [[(0.9, 1.0), (0.1, 0.0)], [(0.2, 0.0), (0.8, 0.5)]]
    assert mean_selection_gain(groups) == pytest.approx((0.5 + 0.25) / 2)
    assert mean_selection_gain([[(1.0, 1.0), (1.0, 0.0), (0.0, 0.5)]]) == pytest.approx(0.0), "ties share the pick"
    assert math.isnan(mean_selection_gain([[(1.0, 1.0)]])), "a single item selects nothing"
    inverted = [[(0.1, 1.0), (0.9, 0.0)]]
    assert mean_selection_gain(inverted) == pytest.approx(-0.5)


def test_bootstrap_statistic_brackets_the_estimate_and_is_seeded():
    values = [[float(v)] for v in range(20)]
    mean_of = lambda gs: sum(g[0] for g in gs) / len(gs)  # noqa: E731
    low, high = bootstrap_statistic(values, mean_of, draws=1000, seed=3)
    assert low < 9.5 < high and (low, high) == bootstrap_statistic(values, mean_of, draws=1000, seed=3)
    assert high - low == pytest.approx(2 * 1.96 * 5.77 / math.sqrt(20), rel=0.2), "normal-theory width"
    assert bootstrap_statistic([[1.0], [2.0], [3.0]], mean_of) == (1.0, 3.0)
    assert all(math.isnan(v) for v in bootstrap_statistic([], mean_of))
