"""MRPD's losses: confidence gate, (gated) symmetric InfoNCE, uncertainty weighting (PROTOCOL.md section 4)."""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["confidence_gate", "gated_infonce", "label_infonce", "uncertainty_weighting"]


def confidence_gate(teacher: Tensor, bank: Tensor, labels: Tensor, k: int = 1, *, bank_kind: str = "class") -> Tensor:
    """Which samples a teacher is trusted on (paper Eq. 5-6).

    Args:
        teacher: ``[B, D]`` teacher embeddings (any scale; compared by dot product of
            normalised vectors).
        bank: ``[C, D]`` class text embeddings (``bank_kind="class"``, the paper) or
            ``[B, D]`` the batch's per-sample label embeddings (``"batch"``, the released code).
        labels: ``[B]`` long.
        k: top-k.
        bank_kind: ``"class"``: pass iff the label is among the top-k classes; ``"batch"``:
            the code's rule — the top-k *batch positions* are compared with the class id.

    Returns:
        ``[B]`` bool, computed without gradient.
    """
    if bank_kind not in ("class", "batch"):
        raise ValueError(f"bank_kind must be 'class' or 'batch'; got {bank_kind!r}")
    with torch.no_grad():
        scores = F.normalize(teacher.detach().float(), dim=-1) @ F.normalize(bank.detach().float(), dim=-1).T
        k = max(1, min(int(k), scores.shape[1]))
        top = scores.topk(k, dim=-1).indices  # [B, k]
        return (top == labels.view(-1, 1)).any(-1)


def _symmetric_ce(logits: Tensor, targets: Tensor) -> Tensor:
    """``0.5 * (CE(S, T) + CE(S^T, T^T))`` with soft targets ``T`` (rows sum to 1)."""
    row = -(targets * logits.log_softmax(-1)).sum(-1).mean()
    t = targets.T / targets.T.sum(-1, keepdim=True).clamp_min(1e-12)
    col = -(t * logits.T.log_softmax(-1)).sum(-1).mean()
    return 0.5 * (row + col)


def gated_infonce(student: Tensor, teacher: Tensor, gate: Tensor, log_tau: Tensor) -> Tensor:
    """Symmetric InfoNCE between the gated students and teachers, ``S = z_s z_r^T / tau``.

    Args:
        student: ``[B, D]`` (normalised here).
        teacher: ``[B, D]`` (normalised here; no gradient needed).
        gate: ``[B]`` bool.
        log_tau: scalar learnable log-temperature.

    Returns:
        Scalar loss; exactly 0 (with a defined, zero gradient) when no sample passes.
    """
    if not bool(gate.any()):
        return (student.sum() + log_tau) * 0.0
    s = F.normalize(student[gate], dim=-1)
    r = F.normalize(teacher[gate].to(s.dtype), dim=-1)
    logits = s @ r.T / log_tau.exp()
    return _symmetric_ce(logits, torch.eye(len(s), device=s.device, dtype=s.dtype))


def label_infonce(student: Tensor, text: Tensor, labels: Tensor, log_tau: Tensor, gate: Tensor | None = None) -> Tensor:
    """Symmetric InfoNCE between each student embedding and its label's text embedding.

    Samples of the same class are one another's positives (the soft target spreads over
    them), so repeated labels in a batch are never false negatives.

    Args:
        student: ``[B, D]``; text: ``[C, D]`` class embeddings; labels: ``[B]``.
        gate: optional ``[B]`` bool selecting the samples that count.
    """
    if gate is not None:
        if not bool(gate.any()):
            return (student.sum() + text.sum() + log_tau) * 0.0
        student, labels = student[gate], labels[gate]
    s = F.normalize(student, dim=-1)
    t = F.normalize(text[labels], dim=-1)
    logits = s @ t.T / log_tau.exp()
    same = (labels.view(-1, 1) == labels.view(1, -1)).to(logits.dtype)
    return _symmetric_ce(logits, same / same.sum(-1, keepdim=True))


def uncertainty_weighting(losses: Sequence[Tensor], log_vars: Tensor, minimum: float = -1.0) -> Tensor:
    """Kendall et al.: ``sum_i exp(-s_i) * L_i + s_i`` with ``s_i = max(log_vars[i], minimum)``."""
    s = log_vars.clamp(min=minimum)
    return sum(torch.exp(-s[i]) * loss + s[i] for i, loss in enumerate(losses))
