"""Paired tests (``benchmark.stats``) and robustness curves (``benchmark.core.curves``) on known values."""
from __future__ import annotations

import math

import numpy as np
import pytest

from benchmark.core.curves import effective_distances, median_distance, robust_accuracy_curve
from benchmark.stats import mcnemar, paired_permutation, significance_mark


def test_mcnemar_is_the_exact_binomial_tail_of_the_discordant_clouds():
    a = np.array([1, 1, 1, 1, 1, 0, 0, 0, 1, 1], dtype=bool)
    b = np.array([0, 0, 0, 0, 1, 0, 0, 1, 1, 1], dtype=bool)
    res = mcnemar(a, b)
    # discordant: a only on 4 clouds, b only on 1: p = 2 * P(X <= 1), X ~ Bin(5, 1/2) = 2 * 6/32
    assert (res.a_only, res.b_only, res.n) == (4, 1, 10)
    assert res.p_value == pytest.approx(0.375) and res.difference == pytest.approx(0.3)
    assert mcnemar(a, a).p_value == 1.0  # no discordant cloud: nothing to tell
    strong = mcnemar(np.ones(30, bool), np.r_[np.ones(10, bool), np.zeros(20, bool)])
    assert strong.p_value == pytest.approx(2 / 2**20) and strong.significant and significance_mark(strong) == "*"
    with pytest.raises(ValueError, match="same length"):
        mcnemar(np.ones(3, bool), np.ones(4, bool))


def test_equal_accuracies_on_disjoint_clouds_are_no_difference():
    # both 50%, every cloud discordant, balanced: the test sees no direction
    a = np.r_[np.ones(20, bool), np.zeros(20, bool)]
    assert mcnemar(a, ~a).p_value == 1.0 and mcnemar(a, ~a).difference == 0.0


def test_paired_permutation_is_deterministic_and_finds_a_shift():
    rng = np.random.default_rng(1)
    x = rng.random(200)
    same = paired_permutation(x, x + rng.normal(0, 0.01, 200) * 0)
    assert same.p_value == 1.0
    shifted = paired_permutation(x + 0.05, x)
    assert shifted.p_value == pytest.approx(1 / 10001) and shifted.difference == pytest.approx(0.05)
    noise = rng.normal(0, 0.3, 200)
    assert paired_permutation(x + noise, x).p_value == paired_permutation(x + noise, x).p_value


def test_effective_distances_and_the_curve():
    clean = np.array([1, 1, 1, 0], dtype=bool)
    adv = np.array([0, 1, 0, 0], dtype=bool)  # cloud 1 resists the example; cloud 3 is wrong clean
    d = np.array([0.5, 0.2, 1.5, 0.1])
    e = effective_distances(clean, adv, d)
    assert e.tolist() == [0.5, math.inf, 1.5, 0.0]
    curve = robust_accuracy_curve(e, [0.0, 0.49, 0.5, 1.0, 2.0])
    assert curve.tolist() == [0.75, 0.75, 0.5, 0.5, 0.25]  # starts at the clean accuracy, never rises
    assert median_distance(e) == 1.0 and median_distance(np.array([math.inf, math.inf, 1.0])) == math.inf
    assert math.isnan(median_distance(np.array([])))
