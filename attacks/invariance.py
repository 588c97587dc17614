"""What PCRB guarantees about reproducibility across batches, threads and CPUs, and its checks.

**The guarantee.** An attack's result for one sample is a function of that sample alone:
its cloud, label, position in the test set (``indices``), the attack's hyperparameters and
seed, and the model. Concretely:

1. *Same random streams*: targets, start noise and restarts are drawn from generators
   seeded by ``(stream, seed, sample index)`` (``attacks.base.sample_generator``), never
   from a batch-wide draw;
2. *Same algorithm per sample*: no quantity couples the samples of a batch (losses are
   summed, never averaged, over the batch; gradients are normalised per sample; step sizes,
   binary-search weights and stopping are per sample).

So batch composition, batch order, thread count and CPU kernel (``ATEN_CPU_CAPABILITY``)
change only the floating-point *rounding* (the order of the additions inside a reduction).
They never change which random numbers a sample gets or which formula it follows. What
that means for the numbers:

- in float64, where rounding is ~1e-16, every per-sample result (points, distances,
  prediction, success, first-success iteration) agrees to 1e-9 and every discrete outcome
  is identical: this is what :func:`batch_invariance_report` checks and the test suite
  asserts for every registered attack, under several thread counts and CPU capabilities;
- in float32 (what runs use), an iterative attack can amplify a last-bit difference over
  its iterations, so crafted points may differ by ~1e-4 between two machines or thread
  counts, and a discrete outcome (success, the iteration of the first success) can differ
  for a sample whose decision margin came within rounding of zero at that step. A resumed
  crafting run is bound by the same guarantee (its finished batches may have been crafted
  under another thread count).

Bit-identical results hold only for the same batch, thread count, CPU capability and
library versions (``tests/test_determinism.py``).

A coupling bug (a sample drawing another sample's noise or target, a batch-wide gradient
normalisation or early stop) moves results by far more than 1e-9 in float64, so these
checks fail for it; ``tests/test_invariance.py`` plants such bugs to prove it.
"""
from __future__ import annotations

import copy
import dataclasses
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from attacks.base import Attack, AttackResult

__all__ = ["FLOAT64_TOLERANCE", "InvarianceReport", "batch_invariance_report", "compare_results"]

#: Absolute tolerance on float results of two float64 runs that differ only in rounding.
FLOAT64_TOLERANCE = 1e-9

_DISCRETE = ("success", "pred", "target", "iterations")
_FLOATS = ("points", "l2", "chamfer", "hausdorff")


@dataclasses.dataclass
class InvarianceReport:
    """The outcome of :func:`batch_invariance_report`.

    Attributes:
        differences: one line per per-sample difference (empty: the guarantee holds here).
        full: the float64 result of the whole batch (to check the run was not trivial).
    """

    differences: list[str]
    full: AttackResult

    def __bool__(self) -> bool:
        """True when the per-sample results did not depend on the batch."""
        return not self.differences


def _rows(value: Any, rows: Tensor) -> Any:
    return None if value is None else value[rows]


def compare_results(
    a: Any, b: Any, *, atol: float = FLOAT64_TOLERANCE, fields: Sequence[str] | None = None, label: str = ""
) -> list[str]:
    """Differences between two per-sample results of the same samples (``AttackResult`` or
    ``attacks.crafting.CraftedSet``): discrete fields must be equal, float fields equal within
    ``atol`` (NaN equals NaN). Returns one line per differing field, ``[]`` when they agree."""
    out = []
    names = list(fields) if fields is not None else [*_DISCRETE, *_FLOATS, "indices", "labels"]
    for name in names:
        x, y = getattr(a, name, None), getattr(b, name, None)
        if x is None and y is None:
            continue
        if x is None or y is None or tuple(x.shape) != tuple(y.shape):
            out.append(f"{label}{name}: one side missing or shapes differ "
                       f"({None if x is None else list(x.shape)} vs {None if y is None else list(y.shape)})")
            continue
        x, y = x.detach().cpu(), y.detach().cpu()
        if x.is_floating_point() and name not in _DISCRETE:
            close = torch.isclose(x.double(), y.double(), rtol=0.0, atol=atol, equal_nan=True)
            if not bool(close.all()):
                worst = float((x.double() - y.double()).abs().nan_to_num(0.0).max())
                rows = sorted({int(i) for i in (~close).nonzero()[:, 0].tolist()}) if close.dim() else [0]
                out.append(f"{label}{name}: samples {rows} differ by up to {worst:.3g} (> {atol:g})")
        elif not torch.equal(x, y):
            rows = (x != y).reshape(x.shape[0], -1).any(dim=1).nonzero().flatten().tolist()
            out.append(f"{label}{name}: samples {rows} differ: {x[rows].tolist()} vs {y[rows].tolist()}")
    return out


def _as_float64(model: nn.Module) -> nn.Module:
    return copy.deepcopy(model).double()


def _float64_attack(attack: Attack) -> Attack:
    """A copy of ``attack`` whose helper models (``bind_models``) are float64 copies."""
    clone = copy.copy(attack)
    for name, value in vars(attack).items():
        if isinstance(value, nn.Module):
            setattr(clone, name, _as_float64(value))
    return clone


def batch_invariance_report(
    attack: Attack,
    model: nn.Module,
    points: Tensor,
    labels: Tensor,
    *,
    atol: float = FLOAT64_TOLERANCE,
    other_threads: int | None = None,
) -> InvarianceReport:
    """Check the guarantee of the module docstring for ``attack`` on one batch, in float64.

    The whole batch (sample ``b`` at test-set index ``b``) is compared with: the first sample
    alone, the other samples as one batch, and the whole batch in reverse order. The partial
    runs use ``other_threads`` intra-op threads when given (the thread count is restored).

    Args:
        attack: any ``Attack`` (its helper models, e.g. AdvPC's autoencoder, already bound).
        model: the classifier; a float64 copy is attacked (the original is untouched).
        points: ``[B, N, 3]`` with ``B >= 2``; labels: ``[B]`` long.
        atol: tolerance of the float results (default :data:`FLOAT64_TOLERANCE`).
        other_threads: thread count of the partial runs (None: unchanged).

    Returns:
        An :class:`InvarianceReport`; ``report.differences == []`` when the per-sample results
        do not depend on the batch.
    """
    if points.shape[0] < 2:
        raise ValueError("batch_invariance_report needs a batch of at least 2 samples")
    model64 = _as_float64(model)
    attack64 = _float64_attack(attack)
    x, y = points.double(), labels.long()
    batch = x.shape[0]
    index = torch.arange(batch)
    full = attack64(model64, x, y, indices=index)
    parts = {"the first sample alone": index[:1], "the other samples": index[1:], "the reversed batch": index.flip(0)}
    threads = torch.get_num_threads()
    report: list[str] = []
    try:
        if other_threads is not None:
            torch.set_num_threads(int(other_threads))
        for label, rows in parts.items():
            part = attack64(model64, x[rows], y[rows], indices=rows)
            expected = _subset(full, rows)
            report += compare_results(part, expected, atol=atol, fields=[*_DISCRETE, *_FLOATS], label=f"{label}: ")
    finally:
        torch.set_num_threads(threads)
    return InvarianceReport(report, full)


def _subset(result: AttackResult, rows: Tensor) -> AttackResult:
    values = {f.name: getattr(result, f.name) for f in dataclasses.fields(result)}
    for name in (*_DISCRETE, *_FLOATS):
        values[name] = _rows(values[name], rows)
    return AttackResult(**values)
