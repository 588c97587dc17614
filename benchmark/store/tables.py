"""Tables computed from stored rows: which clouds survive every attack (the worst case,
AutoAttack's convention), the minimum-norm attack's per-cloud distances, variant labels, and
the clean / attacks / mean / worst-case summary per defense that ``bench run`` prints.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from benchmark.store.columns import CLEAN, GROUP_COLUMNS, with_key_columns
from benchmark.store.fields import decode_distances, decode_outcomes

__all__ = ["attack_roles", "min_norm_distances", "summary_table", "survival", "with_labels", "worst_case"]


def attack_roles(part: pd.DataFrame) -> pd.Series:
    """Each row's ``attack_role`` (``""`` where the rows predate roles), aligned with ``part``."""
    return part["attack_role"].fillna("").astype(str) if "attack_role" in part.columns else pd.Series("", index=part.index)


def survival(frame: pd.DataFrame, *, strong_only: bool = False) -> dict[tuple[Any, ...], np.ndarray]:
    """Per group of :data:`GROUP_COLUMNS` (one defended model's cells), which clouds are
    classified correctly clean *and* under every attack of the group: bool ``[n]``.

    Minimum-norm attacks (``attack_role == "min-norm"``, unbounded) never count. With
    ``strong_only`` only the strong attacks count (``attack_role == "strong"``; AutoAttack's
    convention over the attacks meant to break an undefended model). Failed cells are ignored;
    a group whose cells disagree on ``n`` is left out.
    """
    ok = with_key_columns(frame[frame["status"] == "ok"])
    out: dict[tuple[Any, ...], np.ndarray] = {}
    for key, part in ok.groupby(list(GROUP_COLUMNS), sort=True, dropna=False):
        roles = attack_roles(part)
        keep = (part["attack"] == CLEAN) | ((roles == "strong") if strong_only else (roles != "min-norm"))
        outcomes = [decode_outcomes(o) for o in part.loc[keep, "outcomes"] if isinstance(o, str) and o]
        if not outcomes or len({o.size for o in outcomes}) != 1:
            continue
        out[key] = np.logical_and.reduce(outcomes)
    return out


def worst_case(frame: pd.DataFrame, *, strong_only: bool = False) -> pd.Series:
    """Worst-case robust accuracy per group of :data:`GROUP_COLUMNS`: the share of clouds that
    :func:`survival` keeps (clean and every attack, or every strong attack)."""
    return pd.Series({k: float(v.mean()) for k, v in survival(frame, strong_only=strong_only).items()}, dtype=float)


def min_norm_distances(frame: pd.DataFrame) -> dict[tuple[Any, ...], np.ndarray]:
    """Per group of :data:`GROUP_COLUMNS` with a minimum-norm attack row (and its clean row):
    each cloud's effective minimal distance (``benchmark.core.curves.effective_distances``)."""
    from benchmark.core.curves import effective_distances

    ok = with_key_columns(frame[frame["status"] == "ok"])
    out: dict[tuple[Any, ...], np.ndarray] = {}
    for key, part in ok.groupby(list(GROUP_COLUMNS), sort=True, dropna=False):
        clean = part[part["attack"] == CLEAN]
        norm = part[attack_roles(part) == "min-norm"]
        if clean.empty or norm.empty or not isinstance(clean["outcomes"].iloc[-1], str):
            continue
        row = norm.iloc[-1]
        if not (isinstance(row.get("distances"), str) and isinstance(row.get("outcomes"), str)):
            continue
        out[key] = effective_distances(decode_outcomes(clean["outcomes"].iloc[-1]), decode_outcomes(row["outcomes"]),
                                       decode_distances(row["distances"]))
    return out


def with_labels(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy in which ``defense`` and ``attack`` carry their variant (``"mrpd [epochs=50]"``,
    ``benchmark.variants.label``); the bare names move to ``defense_name`` / ``attack_name``."""
    from benchmark.variants import label

    out = with_key_columns(frame).copy()
    if out.empty:
        out["defense_name"], out["attack_name"] = out.get("defense"), out.get("attack")
        return out
    for what in ("defense", "attack"):
        variant = out[f"{what}_variant"] if f"{what}_variant" in out.columns else pd.Series("", index=out.index)
        out[f"{what}_name"] = out[what]
        out[what] = [label(str(n), v) for n, v in zip(out[what], variant)]
    return out


def summary_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows = ``clean`` + attacks + ``mean over attacks`` + ``worst case`` (+ ``worst case
    (strong)`` and ``median min L2`` when the rows hold strong / minimum-norm attacks),
    columns = defenses (``none`` first), cells = accuracy in percent (the median minimal L2
    distance in cloud units), for the rows of one (dataset, protocol). A variant
    (``benchmark.variants``) is its own row or column, labelled. The mean and worst cases
    leave minimum-norm attacks out (they have no budget)."""
    from benchmark.core.curves import median_distance

    ok = with_labels(frame[frame["status"] == "ok"])
    if ok.empty:
        return pd.DataFrame()
    table = ok.pivot_table(index="attack", columns="defense", values="accuracy", aggfunc="last") * 100
    attacks = [a for a in dict.fromkeys(ok["attack"]) if a != CLEAN]
    roles = dict(zip(ok["attack"], attack_roles(ok)))
    bounded = [a for a in attacks if roles.get(a) != "min-norm"]
    order = ([CLEAN] if CLEAN in table.index else []) + attacks
    table = table.reindex(order)
    defenses = list(dict.fromkeys(ok["defense"]))
    defenses = (["none"] if "none" in defenses else []) + [d for d in defenses if d != "none"]
    table = table[defenses]
    at = GROUP_COLUMNS.index("defense")

    def per_defense(values: Mapping[tuple[Any, ...], float], scale: float = 100.0) -> list[float]:
        return [scale * min(v for k, v in values.items() if k[at] == d) if any(k[at] == d for k in values) else np.nan
                for d in defenses]

    if bounded:
        table.loc["mean over attacks"] = table.loc[bounded].mean(axis=0)
        table.loc["worst case"] = per_defense(worst_case(ok).to_dict())
        if any(roles.get(a) == "strong" for a in bounded):
            table.loc["worst case (strong)"] = per_defense(worst_case(ok, strong_only=True).to_dict())
    distances = {k: median_distance(v) for k, v in min_norm_distances(ok).items()}
    if distances:
        table.loc["median min L2"] = per_defense(distances, scale=1.0)
    return table
