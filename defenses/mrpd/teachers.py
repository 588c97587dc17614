"""MRPD's frozen teachers and their cached embeddings of the training clouds (PROTOCOL.md section 4).

Promises:

- :func:`load_teachers`: the CLIP teacher from the zoo and the depth projection its image tower
  looks at (the run's projection at the CLIP's image size, with ``views`` views).
- :func:`cached_embeddings`: any frozen encoder's normalised embeddings of a set of clouds,
  computed once (in batches of 64, without gradient) and kept in the feature cache
  (``benchmark.core.cache.cached_features``, entries ``mrpd-<name>``) under a key naming the
  encoder, its weights, the training split and the caller's extras. The key's fields are what
  make a warm cache hit: change one and every cached teacher embedding is recomputed.
- :func:`teacher_features`: per training cloud, the image teacher's (mean over views) and the
  point teacher's embeddings, on clean clouds and, as the switches need them, adversarial ones.
- :func:`teacher_diagnostics`: how often each teacher is right through the student's class
  bank, and how often it is right where the undefended student is wrong (its rescue rate).

The text teacher (the CLIP text tower with learnable context) trains with the prompts, so it
lives in :mod:`defenses.mrpd.prompts`; here only its CLIP is loaded.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from benchmark.core.cache import cached_features
from benchmark.core.config import to_jsonable
from benchmark.core.projection import DepthProjector
from defenses.adversarial_training import victim_weights_hash
from defenses.base import DefenseContext
from models.clip import ClipTeacher

__all__ = ["TEACHERS", "cached_embeddings", "load_teachers", "teacher_diagnostics", "teacher_features"]

#: MRPD's teachers, in the order of its temperatures and log-variances (slots 0, 1, 2)
TEACHERS = ("image", "point", "text")


def load_teachers(ctx: DefenseContext, views: int) -> tuple[ClipTeacher, Any, DepthProjector]:
    """``(clip, projection, projector)``: the zoo's CLIP teacher, the run's depth projection at
    its image size with ``views`` views, and the projector rendering it.

    Raises:
        ValueError: the context has no model zoo.
    """
    if ctx.zoo is None:
        raise ValueError("mrpd needs the model zoo for its teachers (DefenseContext.zoo); run it through "
                         "`bench run` or benchmark.api.evaluate")
    clip = ctx.zoo.get("clip")
    projection = dataclasses.replace(ctx.zoo.ctx.projection, image_size=clip.model.image_size, views=views)
    return clip, projection, DepthProjector(projection)


def cached_embeddings(ctx: DefenseContext, name: str, source_hash: str, extra: dict[str, Any],
                      clouds: np.ndarray | Tensor, encode: Callable[[Tensor], Tensor]) -> Tensor:
    """``encode`` of every cloud ``[N, D]`` float32 on ``ctx.device``, from the feature cache when present.

    Args:
        name: the encoder (``image``, ``point``, ``student``, ...): the cache entry ``mrpd-<name>``.
        source_hash: the encoder's weights hash.
        extra: more key fields (the projection, the adversarial set's hash, ...).
        clouds: ``[N, P, 3]``, aligned with ``ctx.train`` (its fingerprint and split are in the key).
        encode: ``[b, P, 3]`` on ``ctx.device`` -> ``[b, D]``, called under ``no_grad``.
    """
    key = {"teacher": name, "weights": source_hash, "dataset": ctx.train.fingerprint, "split": ctx.train.split,
           "n": len(clouds), **extra}

    @torch.no_grad()
    def compute() -> np.ndarray:
        out = []
        data = torch.as_tensor(np.asarray(clouds))
        for start in range(0, len(data), 64):
            out.append(encode(data[start : start + 64].to(ctx.device)).float().cpu())
        return torch.cat(out).numpy()

    features, hit = cached_features(ctx.cache_dir, f"mrpd-{name}", key, compute)
    ctx.log(f"mrpd: {name} features {'loaded from the cache' if hit else 'computed'} {features.shape}")
    return torch.from_numpy(np.array(features)).to(ctx.device)  # mmap -> memory


def teacher_features(ctx: DefenseContext, teachers: Sequence[str], clip: ClipTeacher, projection: Any,
                     projector: DepthProjector, adv_points: Tensor | None, adv_hash: str | None, *,
                     point_teacher: str, point_teacher_input: str) -> dict[str, Tensor]:
    """Per training cloud, the frozen teachers' normalised embeddings (cached): ``image/clean``,
    ``image/adv``, ``point/clean``, ``point/adv`` as ``teachers`` and the switches need them
    (``point/adv`` only when the point teacher sees the student's input)."""
    clip_model = clip.model.eval().requires_grad_(False)

    def image_embed(x: Tensor) -> Tensor:
        v = projection.views
        z = F.normalize(clip_model.encode_image(projector(x)).float(), dim=-1)
        return F.normalize(z.view(x.shape[0], v, -1).mean(1), dim=-1)

    proj_key = {"projection": to_jsonable(dataclasses.asdict(projection))}
    feats: dict[str, Tensor] = {}
    if "image" in teachers:
        feats["image/clean"] = cached_embeddings(ctx, "image", clip.weights_hash, proj_key, ctx.train.points,
                                                 image_embed)
        if adv_points is not None:
            feats["image/adv"] = cached_embeddings(ctx, "image", clip.weights_hash, {**proj_key, "adv": adv_hash},
                                                   adv_points, image_embed)
    if "point" in teachers:
        teacher = ctx.zoo.get(point_teacher)
        teacher_model = teacher.model.eval().requires_grad_(False)
        point_embed = lambda x: F.normalize(teacher_model.embed(x).float(), dim=-1)  # noqa: E731
        feats["point/clean"] = cached_embeddings(ctx, "point", teacher.weights_hash, {}, ctx.train.points, point_embed)
        if adv_points is not None and point_teacher_input == "student":
            feats["point/adv"] = cached_embeddings(ctx, "point", teacher.weights_hash, {"adv": adv_hash}, adv_points,
                                                   point_embed)
    return feats


def teacher_diagnostics(ctx: DefenseContext, student: nn.Module, features: dict[str, Tensor],
                        adv_points: Tensor | None, adv_hash: str | None) -> dict[str, Any]:
    """On the training clouds: each teacher's accuracy through the student's class bank
    (``teacher_accuracy``) and, on the adversarial training clouds, the undefended student's
    accuracy (``student_adv_accuracy``) and each teacher's rescue rate (``rescue_rate``: right
    where the student is wrong; None when the student is never wrong); 4 decimals."""
    bank = F.normalize(student.head.class_embeddings.detach().float(), dim=-1).to(ctx.device)
    labels = torch.from_numpy(ctx.train.labels).to(ctx.device)
    right = {k: (v @ bank.T).argmax(-1) == labels for k, v in features.items()}
    out: dict[str, Any] = {"teacher_accuracy": {k: round(float(v.float().mean()), 4) for k, v in right.items()}}
    if adv_points is not None:
        embed = lambda x: F.normalize(student.embed(x).float(), dim=-1)  # noqa: E731
        z = cached_embeddings(ctx, "student", victim_weights_hash(ctx), {"adv": adv_hash}, adv_points, embed)
        wrong = (z @ bank.T).argmax(-1) != labels
        out["student_adv_accuracy"] = round(1.0 - float(wrong.float().mean()), 4)
        out["rescue_rate"] = {k: (round(float(v[wrong].float().mean()), 4) if bool(wrong.any()) else None)
                              for k, v in right.items()}
    return out
