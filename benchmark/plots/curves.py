"""``curves_<section>.png``: robust accuracy at every L2 budget per defense, from one
minimum-norm attack (``fmn``) per cell (``benchmark.core.curves``), with each defense's
median minimal distance in the legend.
"""
from __future__ import annotations

import math
import os
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd

from benchmark.core.curves import median_distance, robust_accuracy_curve
from benchmark.leaderboard.sections import sections
from benchmark.plots.figure import defense_order, figure, save, section_slug
from benchmark.store import GROUP_COLUMNS, min_norm_distances, with_labels

__all__ = ["plot_robustness_curves"]


def plot_robustness_curves(frame: pd.DataFrame, out_dir: str | os.PathLike[str], points: int = 200) -> list[Path]:
    """Robust accuracy vs L2 budget per defense, from the minimum-norm attack's rows
    (``benchmark.core.curves``): one figure per leaderboard section that has them."""
    written = []
    at = GROUP_COLUMNS.index("defense")
    for section, rows in sections(with_labels(frame)).items():
        curves = {k[at]: v for k, v in min_norm_distances(rows).items()}
        if not curves:
            continue
        finite = np.concatenate([v[np.isfinite(v)] for v in curves.values()])
        top = float(np.quantile(finite, 0.98)) * 1.1 if finite.size else 1.0
        budgets = np.linspace(0.0, max(top, 1e-6), points)
        fig = figure(figsize=(6.0, 4.2))
        ax = fig.add_subplot()
        for defense in defense_order(list(curves)):
            effective = curves[defense]
            median = median_distance(effective)
            label = f"{defense} (median {'∞' if math.isinf(median) else f'{median:.3f}'})"
            ax.plot(budgets, 100 * robust_accuracy_curve(effective, budgets), label=label, drawstyle="steps-post")
        ax.axhline(50, color="grey", linewidth=0.6, linestyle=":")
        ax.set_xlabel("L2 budget over all coordinates (cloud units)")
        ax.set_ylabel("robust accuracy (%)")
        ax.set_ylim(0, 105)
        ax.set_xlim(0, budgets[-1])
        title = "\n".join(textwrap.wrap(section.title(), 72))
        ax.set_title(title + "\nfrom the minimum-norm attack (one run)", fontsize=9)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        written.append(save(fig, Path(out_dir) / f"curves_{section_slug(section)}.png"))
    return written
