"""What every figure of ``bench plot`` shares: a matplotlib figure without pyplot state, the
PNG it is saved to (named after its leaderboard section), the defenses' order (``none``
first) and an accuracy with its Wilson interval in percent.
"""
from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from benchmark.leaderboard.sections import Section
from benchmark.store import wilson_interval

__all__ = ["INSTALL_HINT", "MissingExtraError", "ci", "defense_order", "figure", "require_matplotlib", "save",
           "section_slug", "slug"]

INSTALL_HINT = "pip install 'pcrb[plots]'"


class MissingExtraError(ImportError):
    """An optional dependency (matplotlib) is not installed; the message names the install command."""


def figure(**kwargs: Any) -> Any:
    """A matplotlib ``Figure`` (object API, no pyplot state, Agg canvas)."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as err:
        raise MissingExtraError(f"plots need matplotlib, an optional extra: {INSTALL_HINT}") from err
    fig = Figure(**kwargs)
    FigureCanvasAgg(fig)
    return fig


def require_matplotlib() -> None:
    """Raise :class:`MissingExtraError` (naming ``pip install 'pcrb[plots]'``) without matplotlib."""
    figure()


def save(fig: Any, path: Path) -> Path:
    """``fig`` as a PNG at ``path`` (folders created; no software tag, so the bytes are reproducible)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, metadata={"Software": None})
    return path


def slug(text: str) -> str:
    """``text`` as one safe file-name component (runs of other characters become ``_``)."""
    out = re.sub(r"[^A-Za-z0-9._+=-]+", "_", str(text)).strip("_")
    return "_" if out in ("", ".", "..") else out


def section_slug(section: Section) -> str:
    """The file-name part naming a leaderboard section: dataset, protocol, victim, profile, n, seed."""
    parts = [section.dataset, section.protocol] + ([section.surrogate] if section.surrogate else []) + [
        section.victim, section.profile, f"n{section.n}", f"seed{section.seed}"]
    return slug("_".join(parts))


def defense_order(defenses: Sequence[str]) -> list[str]:
    """The distinct ``defenses``, ``none`` first, then by name."""
    names = sorted(set(defenses))
    return (["none"] if "none" in names else []) + [d for d in names if d != "none"]


def ci(row: pd.Series) -> tuple[float, float, float]:
    """(accuracy, low, high) in percent from correct / n (Wilson), else the stored columns."""
    n, k = row.get("n"), row.get("correct")
    if pd.notna(n) and pd.notna(k) and int(n) > 0:
        low, high = wilson_interval(int(k), int(n))
        return 100 * int(k) / int(n), 100 * low, 100 * high
    acc = float(row.get("accuracy", math.nan))
    return 100 * acc, 100 * float(row.get("ci_low", acc)), 100 * float(row.get("ci_high", acc))
