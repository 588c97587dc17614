"""Paired tests: two defenses evaluated on the same clouds are compared cloud by cloud.

Overlapping confidence intervals say little when two defenses see the same clouds: most of
each interval's width is the clouds' difficulty, which both share. A paired test looks only
at the clouds on which they disagree.

- :func:`mcnemar` — exact McNemar test of two per-cloud correctness vectors (a defense's
  accuracy under one attack, or its worst case over attacks): under the null hypothesis the
  discordant clouds fall on either side with probability 1/2; the two-sided p-value is the
  exact binomial tail.
- :func:`paired_permutation` — for per-cloud scores (e.g. the share of attacks a cloud
  survives, whose mean is the mean robust accuracy over attacks): a sign-flip permutation
  test of the mean difference, with a fixed seed so the same data give the same p-value.

Floor 0: numpy and the standard library only.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["ALPHA", "PairedResult", "mcnemar", "paired_permutation", "significance_mark"]

#: Significance level the tables mark.
ALPHA = 0.05


@dataclass(frozen=True)
class PairedResult:
    """A paired comparison of ``a`` against ``b``.

    Attributes:
        difference: mean of ``a`` minus mean of ``b`` (accuracy: a fraction).
        p_value: two-sided p-value.
        a_only, b_only: discordant clouds (McNemar: ``a`` right and ``b`` wrong, and the
            reverse); for the permutation test, clouds where ``a`` scores higher / lower.
        n: clouds compared.
    """

    difference: float
    p_value: float
    a_only: int
    b_only: int
    n: int

    @property
    def significant(self) -> bool:
        """``p < ALPHA``."""
        return self.p_value < ALPHA


def _binomial_two_sided(k: int, n: int) -> float:
    """``P(X <= k) * 2`` for ``X ~ Binomial(n, 1/2)``, ``k <= n / 2``, capped at 1 (exact)."""
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2.0**n
    return min(1.0, 2.0 * tail)


def _check_pair(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired tests need two 1-d arrays of the same length; got {a.shape} and {b.shape}")
    return a, b


def mcnemar(a: np.ndarray, b: np.ndarray) -> PairedResult:
    """Exact McNemar test of per-cloud correctness ``a`` vs ``b`` (bool ``[n]``, same clouds)."""
    a, b = _check_pair(np.asarray(a, dtype=bool), np.asarray(b, dtype=bool))
    a_only, b_only = int((a & ~b).sum()), int((~a & b).sum())
    p = _binomial_two_sided(min(a_only, b_only), a_only + b_only)
    diff = float(a.mean() - b.mean()) if a.size else math.nan
    return PairedResult(diff, p, a_only, b_only, int(a.size))


def paired_permutation(a: np.ndarray, b: np.ndarray, *, draws: int = 10_000, seed: int = 0) -> PairedResult:
    """Sign-flip permutation test of ``mean(a - b) == 0`` for per-cloud scores (float ``[n]``).

    The p-value counts the random sign flips of the per-cloud differences whose mean is at
    least as far from 0 as the observed one (the observed assignment included), so it is
    never 0; the same data and ``seed`` give the same p-value.
    """
    a, b = _check_pair(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64))
    d = a - b
    if d.size == 0:
        return PairedResult(math.nan, 1.0, 0, 0, 0)
    observed = abs(d.mean())
    signs = np.random.default_rng(seed).choice((-1.0, 1.0), size=(draws, d.size))
    extreme = int((np.abs((signs * d).mean(axis=1)) >= observed - 1e-12).sum())
    return PairedResult(float(d.mean()), (extreme + 1) / (draws + 1), int((d > 0).sum()), int((d < 0).sum()), int(d.size))


def significance_mark(result: PairedResult | None) -> str:
    """``"*"`` when the difference is significant at :data:`ALPHA`, else ``""``."""
    return "*" if result is not None and result.significant else ""
