"""``accuracy_<section>.png``: per leaderboard section, grouped bars of accuracy per attack (and
clean) per defense, with the 95% Wilson interval as error bars; failed cells marked ``×``.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from benchmark.leaderboard.sections import sections
from benchmark.plots.figure import ci, defense_order, figure, save, section_slug
from benchmark.store import CLEAN, with_labels

__all__ = ["plot_accuracy_bars"]


def _bars(rows: pd.DataFrame, defense: str,
          attacks: Sequence[str]) -> tuple[list[float], list[float], list[float], list[int]]:
    """``defense``'s bar per attack: heights, lower and upper error, and the positions of failed cells
    (a missing or failed cell is a zero bar)."""
    heights, lows, highs, failed = [], [], [], []
    for i, attack in enumerate(attacks):
        match = rows[(rows["attack"] == attack) & (rows["defense"] == defense)]
        if match.empty or match.iloc[-1]["status"] != "ok":
            acc = low = high = 0.0
            if not match.empty:
                failed.append(i)
        else:
            acc, low, high = ci(match.iloc[-1])
        heights.append(acc)
        lows.append(max(0.0, acc - low))
        highs.append(max(0.0, high - acc))
    return heights, lows, highs, failed


def plot_accuracy_bars(frame: pd.DataFrame, out_dir: str | os.PathLike[str]) -> list[Path]:
    """One grouped bar chart per leaderboard section of ``frame``; returns the files written."""
    written = []
    for section, rows in sections(with_labels(frame)).items():  # a variant is its own bar, labelled
        attacks = [CLEAN] * bool((rows["attack"] == CLEAN).any()) + sorted({a for a in rows["attack"] if a != CLEAN})
        defenses = defense_order(rows["defense"])
        fig = figure(figsize=(max(6.0, 1.1 * len(attacks) * max(1, len(defenses)) ** 0.5 + 2), 4.2))
        ax = fig.add_subplot()
        width = 0.8 / max(1, len(defenses))
        x = np.arange(len(attacks))
        for j, defense in enumerate(defenses):
            heights, lows, highs, failed = _bars(rows, defense, attacks)
            pos = x - 0.4 + width * (j + 0.5)
            ax.bar(pos, heights, width, yerr=[lows, highs], capsize=2, label=defense, error_kw={"linewidth": 0.8})
            for i in failed:
                ax.text(pos[i], 2, "×", ha="center", va="bottom", color="red", fontsize=9)
        ax.set_xticks(x, attacks, rotation=30 if len(attacks) > 5 else 0, ha="right" if len(attacks) > 5 else "center")
        ax.set_ylabel("accuracy (%) ± 95% Wilson CI")
        ax.set_ylim(0, 105)
        ax.set_title(section.title(), fontsize=9)
        ax.legend(fontsize=8, ncols=min(4, len(defenses)), loc="upper right")
        ax.grid(axis="y", alpha=0.3)
        fig.tight_layout()
        written.append(save(fig, Path(out_dir) / f"accuracy_{section_slug(section)}.png"))
    return written
