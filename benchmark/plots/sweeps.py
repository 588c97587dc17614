"""Sweeps (``bench run --sweep KEY=V1,V2,...``): where their rows go, and their figure.

Each sweep value's rows live in ``<results>/sweeps/<KEY>/<value>/`` (:func:`sweep_out_dir`).
``sweep_<key>_<section>.png`` draws accuracy vs the swept value, one line per defense (for
an ``attacks.<name>.<field>`` sweep, the accuracy under that attack; otherwise the mean over
attacks); the x value is read back from the rows' ``attack_params`` / ``defense_params``
where the key names one of them.
"""
from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from benchmark.leaderboard.sections import Section, sections
from benchmark.plots.figure import ci, defense_order, figure, save, section_slug, slug
from benchmark.store import CLEAN, ResultStore

__all__ = ["SWEEP_DIR", "parse_sweep", "plot_sweeps", "read_sweeps", "sweep_out_dir"]

#: Sub-folder of a results folder that holds the rows of ``--sweep`` runs.
SWEEP_DIR = "sweeps"


# ---------------------------------------------------------------------------------------------
# where their rows go
# ---------------------------------------------------------------------------------------------
def parse_sweep(spec: str) -> tuple[str, list[str]]:
    """``"attacks.pgd.budget=0.02,0.04"`` -> ``("attacks.pgd.budget", ["0.02", "0.04"])``.

    Values are kept as written (each becomes one ``--set KEY=VALUE``). Raises ``ValueError``
    naming the expected form when ``spec`` is malformed.
    """
    key, sep, raw = spec.partition("=")
    key = key.strip()
    values = [v.strip() for v in raw.split(",")]
    if not sep or not key or any(not p for p in key.split(".")) or not raw.strip() or any(not v for v in values):
        raise ValueError(f"--sweep expects dotted.key=V1,V2,... (e.g. attacks.pgd.budget=0.02,0.04); got {spec!r}")
    if len(set(values)) != len(values):
        raise ValueError(f"--sweep {key}: repeated value in {raw!r}")
    return key, values


def sweep_out_dir(out_dir: str | os.PathLike[str], key: str, value: str) -> Path:
    """The results folder of one sweep point: ``<out_dir>/sweeps/<key>/<value>``."""
    return Path(out_dir) / SWEEP_DIR / slug(key) / slug(value)


def _number(value: Any) -> Any:
    from benchmark.core.config import load_yaml

    if isinstance(value, str):
        try:
            value = load_yaml(value)
        except ValueError:
            return value
    return value


def _recorded_value(row: pd.Series, key: str) -> Any:
    """The swept parameter's value as the row records it (attack/defense params), else None."""
    parts = key.split(".")
    if len(parts) == 3 and parts[0] in ("attacks", "defenses"):
        kind = "attack" if parts[0] == "attacks" else "defense"
        if row.get(kind) != parts[1]:
            return None
        try:
            params = json.loads(row.get(f"{kind}_params") or "{}")
        except ValueError:
            return None
        return params.get(parts[2])
    return None


def read_sweeps(results_dir: str | os.PathLike[str]) -> dict[str, pd.DataFrame]:
    """Rows of every sweep under ``<results_dir>/sweeps``, by key, with a ``sweep_value`` column
    (the recorded parameter where the rows hold it, else the folder's value parsed as YAML)."""
    root = Path(results_dir) / SWEEP_DIR
    out: dict[str, pd.DataFrame] = {}
    if not root.is_dir():
        return out
    for key_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        frames = []
        for value_dir in sorted(p for p in key_dir.iterdir() if p.is_dir()):
            frame = ResultStore(value_dir).read()
            if frame.empty:
                continue
            fallback = _number(value_dir.name)
            values = [_recorded_value(r, key_dir.name) for _, r in frame.iterrows()]
            recorded = [v for v in values if v is not None]
            frame["sweep_value"] = recorded[0] if recorded else fallback
            frames.append(frame)
        if frames:
            out[key_dir.name] = pd.concat(frames, ignore_index=True)
    return out


# ---------------------------------------------------------------------------------------------
# their figure
# ---------------------------------------------------------------------------------------------
def plot_sweeps(results_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str]) -> list[Path]:
    """Accuracy vs swept value per defense, one figure per (sweep key, section); files written."""
    written = []
    for key, frame in read_sweeps(results_dir).items():
        parts = key.split(".")
        attack = parts[1] if len(parts) == 3 and parts[0] == "attacks" else None
        for section, rows in sections(frame).items():
            rows = rows[rows["status"] == "ok"]
            rows = rows[rows["attack"] == attack] if attack is not None else rows[rows["attack"] != CLEAN]
            if rows.empty:
                continue
            fig = _sweep_figure(key, section, rows, attack)
            written.append(save(fig, Path(out_dir) / f"sweep_{slug(key)}_{section_slug(section)}.png"))
    return written


def _x_positions(rows: pd.DataFrame) -> tuple[list[Any], dict[Any, float], bool]:
    """The swept values in order, the x of each (the value itself when all are numbers, else its
    rank), and whether they are numbers."""
    values = sorted(set(rows["sweep_value"]), key=lambda v: (not isinstance(v, (int, float)), v if
                                                              isinstance(v, (int, float)) else str(v)))
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
    return values, {v: (float(v) if numeric else float(i)) for i, v in enumerate(values)}, numeric


def _sweep_line(mine: pd.DataFrame, values: Sequence[Any], position: dict[Any, float], dodge: float,
                attack: str | None) -> tuple[list[float], list[float], list[float], list[float]]:
    """One defense's points (x, y, lower and upper error) over the swept ``values``: its accuracy
    under ``attack`` with the Wilson interval, or its mean over the attacks (no interval)."""
    xs, ys, lo, hi = [], [], [], []
    for value in values:
        at = mine[mine["sweep_value"] == value]
        if at.empty:
            continue
        if attack is not None:
            acc, low, high = ci(at.iloc[-1])
        else:
            acc = 100 * float(at["accuracy"].mean())
            low = high = acc
        xs.append(position[value] + dodge)
        ys.append(acc)
        lo.append(acc - low)
        hi.append(high - acc)
    return xs, ys, lo, hi


def _sweep_figure(key: str, section: Section, rows: pd.DataFrame, attack: str | None) -> Any:
    values, position, numeric = _x_positions(rows)
    fig = figure(figsize=(6.0, 4.2))
    ax = fig.add_subplot()
    order = defense_order(rows["defense"])
    span = (max(position.values()) - min(position.values())) or 1.0
    for j, defense in enumerate(order):
        dodge = (j - (len(order) - 1) / 2) * 0.012 * span  # overlapping curves stay visible
        xs, ys, lo, hi = _sweep_line(rows[rows["defense"] == defense], values, position, dodge, attack)
        ax.errorbar(xs, ys, yerr=[lo, hi], marker="o", capsize=3, label=defense)
    if not numeric:
        ax.set_xticks([position[v] for v in values], [str(v) for v in values])
    ax.set_xlabel(key)
    ax.set_ylabel(f"accuracy under {attack} (%) ± 95% Wilson CI" if attack is not None
                  else "mean accuracy over attacks (%)")
    ax.set_ylim(0, 105)
    ax.set_title(section.title(), fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig
