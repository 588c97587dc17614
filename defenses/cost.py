"""What a defense costs at inference: seconds per batch of a defended model against the bare
victim, timed alternately (:func:`inference_cost`; also importable from :mod:`defenses.base`).
"""
from __future__ import annotations

import time

import torch
from torch import Tensor, nn

__all__ = ["inference_cost"]


@torch.no_grad()
def inference_cost(
    defended: nn.Module, victim: nn.Module, points: Tensor, *, repeats: int = 3, warmup: int = 1
) -> dict[str, float]:
    """Seconds per batch of ``defended`` and of the bare ``victim`` on ``points``, and their ratio.

    Both are timed alternately in one run (best of ``repeats`` after ``warmup``), so the ratio
    is robust to machine noise.
    """
    def timed(model: nn.Module) -> float:
        start = time.perf_counter()
        model(points)
        if points.is_cuda:
            torch.cuda.synchronize(points.device)
        return time.perf_counter() - start

    for _ in range(warmup):
        timed(victim), timed(defended)
    bare, defended_s = [], []
    for _ in range(repeats):
        bare.append(timed(victim))
        defended_s.append(timed(defended))
    b, d = min(bare), min(defended_s)
    return {"victim_seconds": b, "defended_seconds": d, "ratio": d / b if b > 0 else float("nan")}
