"""Adversarial losses to MINIMISE, per sample (PROTOCOL.md section 1, "Adversarial losses").

``targets`` given -> targeted loss (drive the prediction to ``targets``); ``targets=None``
-> untargeted loss (drive the prediction away from ``labels``). Every loss is ``[B]`` so
that callers can sum it for one backward pass and still keep per-sample bookkeeping.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["LOSS_KINDS", "adversarial_loss"]

#: Loss kinds ``adversarial_loss`` knows.
LOSS_KINDS = ("ce", "margin", "dlr")


def _best_other(logits: Tensor, cls: Tensor) -> Tensor:
    """``max_{j != cls} z_j`` per sample: ``[B]``."""
    mask = F.one_hot(cls, logits.shape[1]).bool()
    return logits.masked_fill(mask, float("-inf")).amax(dim=1)


def adversarial_loss(
    logits: Tensor,
    labels: Tensor,
    targets: Tensor | None,
    kind: str = "ce",
    kappa: float = 0.0,
) -> Tensor:
    """Per-sample adversarial loss to minimise.

    Args:
        logits: ``[B, C]`` float, the model's logits ``z``.
        labels: ``[B]`` long, the true classes ``y``.
        targets: ``[B]`` long target classes ``t`` (targeted), or None (untargeted).
        kind: ``"ce"``, ``"margin"`` (C&W logit margin) or ``"dlr"`` (Croce & Hein's
            difference of logits ratio: the margin divided by the spread of the top logits,
            so it does not depend on the logits' scale).
        kappa: confidence margin of ``"margin"`` (logit units); ignored by the others.

    Returns:
        ``[B]``: targeted ``ce`` = ``CE(z, t)``; targeted ``margin`` =
        ``max(max_{j != t} z_j - z_t + kappa, 0)``; untargeted ``ce`` = ``-CE(z, y)``;
        untargeted ``margin`` = ``max(z_y - max_{j != y} z_j + kappa, 0)``; untargeted
        ``dlr`` = ``(z_y - max_{j != y} z_j) / (z_(1) - z_(3) + 1e-12)`` and targeted ``dlr`` =
        ``(max_{j != t} z_j - z_t) / (z_(1) - (z_(3) + z_(4)) / 2 + 1e-12)`` (``z_(k)``: the
        k-th largest logit; with fewer than 3 (4) classes the smallest logit stands in).
    """
    if kind not in LOSS_KINDS:
        raise ValueError(f"unknown adversarial loss kind {kind!r}; expected one of {', '.join(LOSS_KINDS)}")
    if logits.dim() != 2 or logits.shape[1] < 2:
        raise ValueError(f"logits must have shape [B, C >= 2]; got {list(logits.shape)}")
    if kind == "dlr":
        return _dlr(logits, labels, targets)
    if targets is not None:
        if kind == "ce":
            return F.cross_entropy(logits, targets, reduction="none")
        z_t = logits.gather(1, targets[:, None]).squeeze(1)
        return torch.clamp(_best_other(logits, targets) - z_t + kappa, min=0.0)
    if kind == "ce":
        return -F.cross_entropy(logits, labels, reduction="none")
    z_y = logits.gather(1, labels[:, None]).squeeze(1)
    return torch.clamp(z_y - _best_other(logits, labels) + kappa, min=0.0)


def _dlr(logits: Tensor, labels: Tensor, targets: Tensor | None) -> Tensor:
    """The DLR loss to minimise (see :func:`adversarial_loss`)."""
    top = logits.topk(min(4, logits.shape[1]), dim=1).values  # the 4 largest logits, descending
    last = top.shape[1] - 1
    if targets is None:
        z_y = logits.gather(1, labels[:, None]).squeeze(1)
        return (z_y - _best_other(logits, labels)) / (top[:, 0] - top[:, min(2, last)] + 1e-12)
    z_t = logits.gather(1, targets[:, None]).squeeze(1)
    spread = top[:, 0] - 0.5 * (top[:, min(2, last)] + top[:, min(3, last)])
    return (_best_other(logits, targets) - z_t) / (spread + 1e-12)
