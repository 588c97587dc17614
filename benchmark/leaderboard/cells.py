"""The text of one leaderboard cell: an accuracy with its 95% Wilson interval, a p-value,
stored parameters as canonical JSON. Shared by the ranking, the markdown and the README tables.
"""
from __future__ import annotations

import json
import math
from collections.abc import Iterable
from typing import Any

import pandas as pd

from benchmark.store import wilson_interval

__all__ = ["accuracy_cell", "finite", "p_text", "params_text", "pct", "unique"]


def finite(value: Any) -> bool:
    """True when ``value`` is a finite number (not None, NaN, inf or text)."""
    try:
        return value is not None and not pd.isna(value) and math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def pct(value: float) -> str:
    """A share ``0.832`` as percent with one decimal: ``"83.2"``."""
    return f"{100 * value:.1f}"


def accuracy_cell(correct: Any, n: Any, accuracy: Any = None) -> str:
    """``"83.2 [78.1, 87.4]"``: accuracy % with its 95% Wilson interval (from correct / n)."""
    if finite(correct) and finite(n) and int(n) > 0:
        k, total = int(correct), int(n)
        low, high = wilson_interval(k, total)
        return f"{pct(k / total)} [{pct(low)}, {pct(high)}]"
    if finite(accuracy):
        return pct(float(accuracy))
    return "–"


def p_text(p: float) -> str:
    """A p-value with two significant digits, ``"<0.001"`` below 0.001."""
    return f"{p:.2g}" if p >= 0.001 else "<0.001"


def params_text(text: Any) -> str:
    """Canonical (sorted, compact) JSON of a stored parameter field, ``{}`` when empty."""
    if not isinstance(text, str) or not text.strip():
        return "{}"
    try:
        return json.dumps(json.loads(text), sort_keys=True, separators=(", ", ": "))
    except ValueError:
        return text.strip()


def unique(values: Iterable[Any]) -> list[str]:
    """The distinct non-blank strings among ``values``, sorted (other values are left out)."""
    return sorted({str(v) for v in values if isinstance(v, str) and v.strip()})
