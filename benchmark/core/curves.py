"""Robust accuracy at every budget, from one minimum-norm attack (``fmn``) per cell.

A minimum-norm attack records, per cloud, the smallest L2 perturbation ``d_i`` that fools
its *source* model (``distances`` column; ``inf`` when none was found). For a defended model
classifying those examples, the cloud's **effective distance** is

- ``0`` when the defended model is wrong on the clean cloud,
- ``d_i`` when it is fooled by the minimal example (it cannot resist budget ``d_i``),
- ``inf`` when it classifies the minimal example correctly (no adversarial example of this
  attack reaches it at any budget).

Under ``adaptive`` the source *is* the defended model, so the effective distance is its own
minimal distance; under ``transfer`` it says which budgets the transferred examples need.
Robust accuracy at budget ``r`` is the share of clouds with effective distance ``> r``: a
curve that starts at the clean accuracy and never rises; its median is a budget-free score.

Floor 0: numpy only.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["effective_distances", "median_distance", "robust_accuracy_curve"]


def effective_distances(clean_correct: np.ndarray, adv_correct: np.ndarray, distances: np.ndarray) -> np.ndarray:
    """Per-cloud effective distances (module docstring), ``[n]`` float64.

    Args:
        clean_correct: ``[n]`` bool, the defended model right on the clean clouds.
        adv_correct: ``[n]`` bool, the defended model right on the minimal examples.
        distances: ``[n]`` the source model's minimal distances (``inf``: none found).
    """
    clean_correct = np.asarray(clean_correct, dtype=bool)
    adv_correct = np.asarray(adv_correct, dtype=bool)
    distances = np.asarray(distances, dtype=np.float64)
    if not clean_correct.shape == adv_correct.shape == distances.shape:
        raise ValueError(f"shapes differ: clean {clean_correct.shape}, adversarial {adv_correct.shape}, "
                         f"distances {distances.shape}")
    return np.where(~clean_correct, 0.0, np.where(adv_correct, np.inf, distances))


def robust_accuracy_curve(effective: np.ndarray, budgets: Sequence[float] | np.ndarray) -> np.ndarray:
    """Robust accuracy (fraction) at each budget: the share of clouds with effective distance ``> r``."""
    e = np.asarray(effective, dtype=np.float64)
    b = np.asarray(budgets, dtype=np.float64)
    if e.size == 0:
        return np.full(b.shape, np.nan)
    return (e[None, :] > b[:, None]).mean(axis=1)


def median_distance(effective: np.ndarray) -> float:
    """The median effective distance (``inf`` when more than half the clouds are never fooled;
    ``nan`` for no clouds): the budget at which robust accuracy falls to 50%."""
    e = np.asarray(effective, dtype=np.float64)
    if e.size == 0:
        return float("nan")
    return float(np.median(e))
