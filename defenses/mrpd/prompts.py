"""What MRPD learns, how it starts, and the classifier it makes (PROTOCOL.md section 4).

Promises:

- :class:`MRPDPrompts` holds every learned parameter and nothing else: ``P`` point-prompt
  tokens (:class:`~defenses.prompting.PointPrompt`, N(0, 1) from ``seed``), ``T`` text-context
  vectors (:class:`~models.clip.PromptedTextEncoder`, N(0, 0.05) from ``seed + 1``), three
  log-temperatures (image, point, text; ``log 0.07``) and three log-variances (0). Its
  ``state_dict`` is the cache entry of a trained MRPD, so its parameter names and shapes are
  part of that entry's key: renaming one orphans every cached training.
- :func:`fit_text_context` (``text_init=fitted``) fits the text context alone, CoOp-style, to
  the frozen student's clean embeddings before the distillation starts.
- :class:`MRPDClassifier` is the defended model: the frozen student with the learned prompts,
  classifying by cosine against fixed (learned-context) class embeddings; no teacher runs.
"""
from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from defenses.adversarial_training import victim_weights_hash
from defenses.base import DefenseContext
from defenses.mrpd.teachers import cached_embeddings
from defenses.prompting import PointPrompt
from models.clip import ClipTeacher, PromptedTextEncoder

__all__ = ["CTX_LR", "CTX_STEPS", "TAU0", "MRPDClassifier", "MRPDPrompts", "fit_text_context"]

#: initial log-temperature of every InfoNCE (CLIP's 0.07)
TAU0 = math.log(0.07)
#: ``text_init=fitted``: full-batch Adam steps (and their learning rate) on the cached student embeddings
CTX_STEPS, CTX_LR = 100, 1e-2


class MRPDPrompts(nn.Module):
    """Everything MRPD learns: point prompts, text context, 3 log-temperatures, 3 log-variances.

    Its ``state_dict`` is exactly the learned parameters (the cache entry of a trained MRPD).
    """

    def __init__(self, width: int, clip: ClipTeacher, class_names: list[str], *, point_prompts: int,
                 text_prompts: int, template: str, seed: int) -> None:
        super().__init__()
        self.point = PointPrompt(point_prompts, width, seed=seed) if point_prompts > 0 else None
        self.text = PromptedTextEncoder(clip, class_names, n_ctx=text_prompts, template=template, seed=seed + 1)
        self.log_tau = nn.Parameter(torch.full((3,), TAU0))  # image, point, text
        self.log_var = nn.Parameter(torch.zeros(3))

    def tokens(self) -> Tensor | None:
        """The point-prompt tokens ``[P, W]`` (a parameter), None without point prompts."""
        return None if self.point is None else self.point.tokens

    def parameters_to_train(self) -> list[nn.Parameter]:
        """Every non-empty parameter (an empty text context, ``text_prompts=0``, is left out)."""
        return [p for p in self.parameters() if p.numel() > 0]


class MRPDClassifier(nn.Module):
    """The defended model: ``logit_scale * cos(student(points, prompts), text_c)``.

    Costs one student forward (the prompts add ``P`` tokens); no teacher runs.
    """

    def __init__(self, student: nn.Module, prompts: Tensor | None, class_embeddings: Tensor, logit_scale: float) -> None:
        super().__init__()
        self.student = student
        self.register_buffer("prompts", None if prompts is None else prompts.detach().clone())
        self.register_buffer("class_embeddings", F.normalize(class_embeddings.detach().float(), dim=-1))
        self.logit_scale = float(logit_scale)
        self.class_names = tuple(getattr(student, "class_names", ()) or ())

    @property
    def num_classes(self) -> int:
        return int(self.class_embeddings.shape[0])

    def train(self, mode: bool = True) -> MRPDClassifier:
        """Set this wrapper's mode; the frozen student always stays in eval mode."""
        super().train(mode)
        self.student.eval()
        return self

    def embed(self, points: Tensor) -> Tensor:
        """The student's raw embedding ``[B, D]`` of ``points`` ``[B, N, 3]`` with the prompts."""
        return self.student.embed(points, self.prompts)

    def forward(self, points: Tensor) -> Tensor:
        """``points`` ``[B, N, 3]`` -> logits ``[B, C]``."""
        z = F.normalize(self.embed(points), dim=-1)
        return self.logit_scale * z @ self.class_embeddings.to(z.dtype).T


def fit_text_context(ctx: DefenseContext, student: nn.Module, learned: MRPDPrompts, train_idx: np.ndarray,
                     val_idx: np.ndarray, *, point_prompts: int, name: str) -> dict[str, Any]:
    """Fit ``learned.text.ctx`` alone, in place (CoOp: cross-entropy of the frozen student's clean
    embeddings, with the initial point prompts, against the prompted class embeddings) for
    ``CTX_STEPS`` full-batch Adam steps, keeping the step most accurate on the validation clouds
    (``val_idx``; the training rows ``train_idx`` when empty). The student's embeddings come from
    the feature cache (keyed by ``point_prompts`` and the seed). Returns what it did, for the run
    record; ``name`` labels the log line."""
    tokens = learned.tokens()
    embed = lambda x: F.normalize(student.embed(x, tokens).float(), dim=-1)  # noqa: E731
    key = {"point_prompts": point_prompts, "seed": ctx.seed}
    z = cached_embeddings(ctx, "student-init", victim_weights_hash(ctx), key, ctx.train.points, embed)
    labels = torch.from_numpy(ctx.train.labels).to(ctx.device)
    rows = torch.from_numpy(train_idx).to(ctx.device)
    check = torch.from_numpy(val_idx).to(ctx.device) if len(val_idx) else rows
    scale = float(student.head.logit_scale)
    param_ = learned.text.ctx
    optimizer = torch.optim.Adam([param_], lr=CTX_LR)

    def accuracy() -> float:
        with torch.no_grad():
            return float(((z[check] @ learned.text(normalize=True).T).argmax(-1) == labels[check]).float().mean())

    started = time.perf_counter()
    initial = best_acc = accuracy()
    best, best_step = param_.detach().clone(), 0
    for i in range(1, CTX_STEPS + 1):
        loss = F.cross_entropy(scale * z[rows] @ learned.text(normalize=True).T, labels[rows])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if i % 10 == 0 and (acc := accuracy()) > best_acc:
            best, best_acc, best_step = param_.detach().clone(), acc, i
    with torch.no_grad():
        param_.copy_(best)
    record = {"steps": CTX_STEPS, "best_step": best_step, "val_clean_before": round(initial, 4),
              "val_clean_after": round(best_acc, 4), "seconds": round(time.perf_counter() - started, 3)}
    ctx.log(f"{name}: text context fitted: validation clean accuracy {initial:.3f} -> {best_acc:.3f}")
    return record
