"""The computed fields of a results row: the Wilson interval of its accuracy (``ci_low``,
``ci_high``) and the per-sample ``outcomes`` / ``distances``, packed into compact, exact,
CSV-safe text (``"<n>:<hex>"``) so the worst case over attacks and the robustness curves
can be computed from the CSV alone.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = ["decode_distances", "decode_outcomes", "encode_distances", "encode_outcomes", "wilson_interval"]


def wilson_interval(correct: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """The Wilson score interval of a binomial proportion ``correct / n`` (default 95%).

    Returns ``(low, high)`` in ``[0, 1]``; ``(nan, nan)`` when ``n == 0``.
    """
    if n <= 0:
        return math.nan, math.nan
    if not 0 <= correct <= n:
        raise ValueError(f"correct must lie in [0, n] = [0, {n}]; got {correct}")
    p = correct / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def encode_outcomes(correct: Sequence[bool] | np.ndarray) -> str:
    """Per-sample booleans -> ``"<n>:<hex of packed bits>"`` (compact, exact, CSV-safe)."""
    bits = np.asarray(correct, dtype=bool).ravel()
    return f"{bits.size}:{np.packbits(bits).tobytes().hex()}"


def encode_distances(values: Sequence[float] | np.ndarray) -> str:
    """Per-sample distances -> ``"<n>:<hex of float16>"`` (3 significant digits, ``inf`` kept)."""
    arr = np.asarray(values, dtype=np.float64).ravel()
    return f"{arr.size}:{arr.astype('<f2').tobytes().hex()}"


def decode_distances(text: str) -> np.ndarray:
    """Inverse of :func:`encode_distances`: a float64 array."""
    try:
        size, hexbits = str(text).split(":", 1)
        arr = np.frombuffer(bytes.fromhex(hexbits), dtype="<f2").astype(np.float64)
    except (ValueError, TypeError) as err:
        raise ValueError(f"malformed distances field {text!r}; expected '<n>:<hex>'") from err
    if arr.size != int(size):
        raise ValueError(f"malformed distances field: {arr.size} values for n = {size}")
    return arr


def decode_outcomes(text: str) -> np.ndarray:
    """Inverse of :func:`encode_outcomes`: a bool array."""
    try:
        size, hexbits = str(text).split(":", 1)
        raw = np.frombuffer(bytes.fromhex(hexbits), dtype=np.uint8)
        return np.unpackbits(raw)[: int(size)].astype(bool)
    except (ValueError, TypeError) as err:
        raise ValueError(f"malformed outcomes field {text!r}; expected '<n>:<hex>'") from err
