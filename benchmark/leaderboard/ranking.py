"""The ranking of one section's defenses, with the text of every cell of their rows.

Each defense gets its accuracy per attack (and clean), the average robust accuracy over the
bounded attacks (the MRPD paper's number), the worst-case robust accuracy (the share of
clouds classified correctly clean and under every attack, or every strong attack where the
rows name them: AutoAttack's convention), its paired McNemar test against ``none`` and the
median minimal L2 distance of the minimum-norm attack. Complete rows rank first, then by the
worst case, the mean and the name.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from benchmark.core.curves import median_distance
from benchmark.leaderboard.cells import accuracy_cell, finite, p_text
from benchmark.stats import mcnemar, significance_mark
from benchmark.store import CLEAN, GROUP_COLUMNS, decode_outcomes, min_norm_distances, survival

__all__ = ["UNDEFENDED", "Standing", "attack_roles", "rank_defenses"]

UNDEFENDED = "none"

#: Where ``defense`` sits in a group key of ``survival`` / ``min_norm_distances``.
_DEFENSE_AT = GROUP_COLUMNS.index("defense")


@dataclass
class Standing:
    """One defense's row of a section's ranking (cells as text, values for sorting)."""

    defense: str
    cells: dict[str, str]  # attack (or "clean") -> cell text
    mean: float  # mean accuracy over the finished bounded attacks, nan if none
    complete: bool  # every attack of the section finished for this defense
    worst: str
    worst_value: float
    median: str  # median minimal L2 (min-norm attack), "–" without one
    versus_none: str  # the paired test of the worst case against none


def attack_roles(rows: pd.DataFrame) -> dict[str, str]:
    """attack (labelled) -> role; rows written before roles existed count as ``strong``-less."""
    roles = rows["attack_role"].fillna("").astype(str) if "attack_role" in rows.columns else [""] * len(rows)
    return {str(a): str(r) for a, r in zip(rows["attack"], roles) if a != CLEAN}


def _outcomes(rows: pd.DataFrame, defense: str, attack: str) -> Any:
    match = rows[(rows["defense"] == defense) & (rows["attack"] == attack) & (rows["status"] == "ok")]
    text = match["outcomes"].iloc[-1] if not match.empty else None
    return decode_outcomes(text) if isinstance(text, str) and text else None


def _attack_cells(rows: pd.DataFrame, defense: str, attacks: Sequence[str],
                  bounded: Sequence[str]) -> tuple[dict[str, str], list[float]]:
    """``defense``'s cell per attack (and clean; each marked ``*`` where it differs significantly
    from ``none`` on the same clouds), and the accuracies of its finished bounded attacks."""
    mine = rows[rows["defense"] == defense]
    cells: dict[str, str] = {}
    finished: list[float] = []
    for attack in [CLEAN, *attacks]:
        match = mine[mine["attack"] == attack]
        if match.empty:
            cells[attack] = "–"
            continue
        row = match.iloc[-1]
        if row["status"] != "ok":
            cells[attack] = "failed"
            continue
        cells[attack] = accuracy_cell(row["correct"], row["n"], row["accuracy"])
        if defense != UNDEFENDED and attack != CLEAN:
            ours, theirs = _outcomes(rows, defense, attack), _outcomes(rows, UNDEFENDED, attack)
            if ours is not None and theirs is not None and ours.shape == theirs.shape:
                cells[attack] += significance_mark(mcnemar(ours, theirs))
        if attack in bounded and finite(row["accuracy"]):
            finished.append(float(row["accuracy"]))
    return cells, finished


def _worst_case(defense: str, mine: pd.DataFrame, survived: np.ndarray | None, reference: np.ndarray | None,
                complete: bool, bounded: bool) -> tuple[float, str, str]:
    """(worst-case accuracy, its cell, its test against ``none``'s) of ``defense``, from the clouds
    it classifies correctly under everything (``survived``) and those ``none`` does (``reference``)."""
    n = int(mine["n"].iloc[0]) if finite(mine["n"].iloc[0]) else 0
    if survived is None or not bounded or not n:
        return math.nan, "–" if not (mine["status"] == "failed").all() else "failed", "–"
    text = accuracy_cell(int(survived.sum()), n) + ("" if complete else " †")
    versus = "–"
    if defense != UNDEFENDED and reference is not None and reference.shape == survived.shape:
        test = mcnemar(survived, reference)
        versus = f"{100 * test.difference:+.1f} (p={p_text(test.p_value)}){significance_mark(test)}"
    return float(survived.mean()), text, versus


def _for_defense(groups: Mapping[tuple[Any, ...], Any], defense: str) -> Any:
    """The value of the first group of ``defense`` in ``groups`` (keyed by group columns), else None."""
    return next((v for k, v in groups.items() if k[_DEFENSE_AT] == defense), None)


def rank_defenses(rows: pd.DataFrame, attacks: Sequence[str], roles: Mapping[str, str]) -> list[Standing]:
    """Every defense of one section's ``rows``, ranked; ``attacks`` in column order, ``roles`` by attack.

    Complete rows first, then by worst case (over the strong attacks when there are any),
    mean robust accuracy over the bounded (not minimum-norm) attacks, and name.
    """
    strong = any(roles.get(a) == "strong" for a in attacks)
    alive = survival(rows, strong_only=strong)
    distances = min_norm_distances(rows)
    bounded = [a for a in attacks if roles.get(a) != "min-norm"]
    reference = _for_defense(alive, UNDEFENDED)
    out = []
    for defense in sorted(set(rows["defense"])):
        cells, finished = _attack_cells(rows, defense, attacks, bounded)
        complete = len(finished) == len(bounded) and all(cells[a] != "failed" for a in attacks)
        mean = sum(finished) / len(finished) if finished else math.nan
        worst_value, worst, versus = _worst_case(defense, rows[rows["defense"] == defense],
                                                 _for_defense(alive, defense), reference, complete, bool(bounded))
        distance = _for_defense(distances, defense)
        median = "–" if distance is None else _median_text(median_distance(distance))
        out.append(Standing(defense, cells, mean, complete, worst, worst_value, median, versus))
    # complete rows first, then by worst case over the strong attacks, mean robust accuracy, name
    out.sort(key=lambda s: (not s.complete, -(s.worst_value if finite(s.worst_value) else -1.0),
                            -(s.mean if finite(s.mean) else -1.0), s.defense))
    return out


def _median_text(median: float) -> str:
    return "∞" if math.isinf(median) else f"{median:.3f}"
