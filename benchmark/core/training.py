"""Generic training loops: supervised classification and any loss over point-cloud batches.

Ground floor: knows datasets and ``nn.Module``s, not which architectures exist
(``models.zoo`` decides what to train). One loop, ``fit``, does the bookkeeping every
model needs — seeding, AdamW with a per-step cosine schedule, gradient clipping, mixed
precision on CUDA, augmentation, a rich progress bar, per-epoch validation and keeping
the best checkpoint — and calls a ``step`` function for the loss.
"""
from __future__ import annotations

import contextlib
import copy
import math
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from benchmark.core.config import TrainConfig
from benchmark.core.data import PointCloudDataset
from benchmark.core.progress import progress_report

__all__ = [
    "FitResult",
    "augment_points",
    "classification_step",
    "evaluate_accuracy",
    "fit",
    "progress_bar",
    "split_indices",
    "split_validation",
]

StepFn = Callable[[Tensor, Tensor, Tensor], Tensor]  # (points [B,N,3], labels [B], indices [B]) -> loss


@dataclass
class FitResult:
    """What ``fit`` did: per-epoch train loss and validation score, the best score and its epoch."""

    train_loss: list[float] = field(default_factory=list)
    val_score: list[float] = field(default_factory=list)
    best_score: float = float("nan")
    best_epoch: int = -1
    seconds: float = 0.0
    #: per epoch, the mean gradient norm (over ``params``, before clipping) of its steps
    grad_norm: list[float] = field(default_factory=list)
    #: the epoch after which training stopped for lack of improvement (None: ran every epoch)
    stopped_early: int | None = None


@contextlib.contextmanager
def progress_bar(total: int, description: str, enabled: bool = True) -> Iterator[Callable[..., None]]:
    """Progress on stderr (a rich bar on a terminal, a line every 30 s otherwise); yields
    ``advance(n=1, info=None)`` (a no-op when disabled)."""
    with progress_report(total, description, enabled=enabled) as update:
        yield lambda n=1, info=None: update(n, info)


def split_indices(dataset: PointCloudDataset, fraction: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Stratified ``(train_indices, validation_indices)`` of a training set, each sorted.

    About ``fraction`` of every class goes to validation (none when ``fraction`` is 0).
    """
    everything = np.arange(len(dataset))
    if fraction <= 0:
        return everything, everything[:0]
    rng = np.random.default_rng([seed, 101])
    val_idx: list[np.ndarray] = [everything[:0]]
    for c in range(dataset.num_classes):
        members = np.flatnonzero(dataset.labels == c)
        take = int(round(len(members) * fraction))
        if take and take < len(members):
            val_idx.append(rng.choice(members, take, replace=False))
    val = np.sort(np.concatenate(val_idx))
    return np.setdiff1d(everything, val), val


def split_validation(
    dataset: PointCloudDataset, fraction: float, seed: int = 0
) -> tuple[PointCloudDataset, PointCloudDataset | None]:
    """Stratified split of a training set into ``(train, validation)``; validation is None when empty."""
    train, val = split_indices(dataset, fraction, seed)
    if len(val) == 0:
        return dataset, None
    return dataset.subset(train), dataset.subset(val)


def augment_points(points: Tensor, cfg: TrainConfig, generator: torch.Generator) -> Tensor:
    """Training-time augmentation of ``[B, N, 3]``: anisotropic scaling, rotation about y, jitter,
    point dropout (dropped points take the cloud's first point's place) and outliers (uniform in
    ``[-1, 1]^3``); the shape is kept. Draws come from ``generator`` (CPU), so runs repeat exactly."""
    b = points.shape[0]
    out = points
    if cfg.scale_low != 1.0 or cfg.scale_high != 1.0:
        scale = torch.empty(b, 1, 3).uniform_(cfg.scale_low, cfg.scale_high, generator=generator)
        out = out * scale.to(points.device)
    if cfg.rotate:
        angle = torch.rand(b, generator=generator) * (2 * math.pi)
        c, s = torch.cos(angle).to(points.device), torch.sin(angle).to(points.device)
        x, y, z = out.unbind(-1)
        out = torch.stack([c[:, None] * x + s[:, None] * z, y, -s[:, None] * x + c[:, None] * z], -1)
    if cfg.jitter > 0:
        noise = torch.randn(out.shape, generator=generator).to(points.device) * cfg.jitter
        out = out + noise.clamp(-5 * cfg.jitter, 5 * cfg.jitter)
    if cfg.point_dropout > 0:
        dropped = _random_share(out.shape[:2], cfg.point_dropout, generator).to(points.device)
        out = torch.where(dropped[..., None], out[:, :1], out)
    if cfg.outliers > 0:
        moved = _random_share(out.shape[:2], cfg.outliers, generator).to(points.device)
        uniform = (torch.rand(out.shape, generator=generator) * 2 - 1).to(points.device)
        out = torch.where(moved[..., None], uniform, out)
    return out


def _random_share(shape: torch.Size, high: float, generator: torch.Generator) -> Tensor:
    """``[B, N]`` bool: in each row, every entry is picked with one probability drawn from ``U[0, high)``."""
    rate = torch.rand(shape[0], 1, generator=generator) * high
    return torch.rand(shape, generator=generator) < rate


@torch.no_grad()
def evaluate_accuracy(
    model: nn.Module,
    dataset: PointCloudDataset,
    *,
    batch_size: int = 64,
    device: torch.device | str = "cpu",
    predict: Callable[[Tensor], Tensor] | None = None,
) -> float:
    """Top-1 accuracy in [0, 1] of ``model`` (or ``predict(points) -> logits``) on ``dataset``."""
    was_training = model.training
    model.eval()
    correct = 0
    for points, labels in dataset.batches(batch_size, device=device):
        logits = (predict or model)(points)
        correct += int((logits.argmax(-1) == labels).sum())
    model.train(was_training)
    return correct / max(len(dataset), 1)


def classification_step(model: nn.Module, label_smoothing: float = 0.0) -> StepFn:
    """The supervised step: cross-entropy of ``model(points)`` against the labels."""

    def step(points: Tensor, labels: Tensor, indices: Tensor) -> Tensor:
        return nn.functional.cross_entropy(model(points), labels, label_smoothing=label_smoothing)

    return step


def fit(
    model: nn.Module,
    train: PointCloudDataset,
    cfg: TrainConfig,
    step: StepFn,
    *,
    params: Iterable[nn.Parameter] | None = None,
    validate: Callable[[], float] | None = None,
    device: torch.device | str = "cpu",
    seed: int = 0,
    description: str = "training",
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    patience: int | None = None,
    min_epochs: int = 0,
    after_backward: Callable[[], None] | None = None,
) -> FitResult:
    """Train ``model`` for at most ``cfg.epochs`` on ``train`` and keep the best-validating weights.

    ``step(points, labels, indices) -> loss`` computes the loss of one augmented batch
    (``indices`` are the clouds' positions in ``train``, for per-cloud targets such as
    cached teacher features). ``validate() -> score`` (higher is better) runs after each
    epoch; the model ends with the weights of the best epoch (the last one without
    ``validate``). Only ``params`` (default: all requiring grad) are optimised. The
    learning-rate schedule always spans ``cfg.epochs``.

    Args:
        patience: with ``validate``, stop once this many epochs in a row failed to beat the
            best score (None: run every epoch).
        min_epochs: never stop before this many epochs (e.g. a schedule's first phase).
        after_backward: called after each backward pass, before clipping and the optimiser
            step (gradients are in ``.grad``), e.g. to record per-parameter gradient norms.
    """
    if patience is not None and patience < 1:
        raise ValueError(f"{description}: patience must be >= 1 epoch or None; got {patience}")
    device = torch.device(device)
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    params = [p for p in (params if params is not None else model.parameters()) if p.requires_grad]
    if not params:
        raise ValueError(f"{description}: nothing to train (no parameter requires grad)")
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = max(1, len(train) // cfg.batch_size)
    total = max(1, cfg.epochs * steps_per_epoch)

    warmup = int(cfg.warmup * total)

    def lr_at(i: int) -> float:
        if i < warmup:
            return cfg.lr * (i + 1) / warmup
        progress = (i - warmup) / max(1, total - warmup)
        return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * progress))

    use_amp = cfg.amp and device.type == "cuda"
    autocast = (
        (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if use_amp else contextlib.nullcontext
    )
    result = FitResult()
    best_state: dict[str, Any] | None = None
    start = time.perf_counter()
    i = 0
    with progress_bar(total, description, enabled=progress) as advance:
        for epoch in range(cfg.epochs):
            model.train()
            losses, norms = [], []
            order = torch.randperm(len(train), generator=generator).numpy()
            for s in range(steps_per_epoch):
                idx = order[s * cfg.batch_size : (s + 1) * cfg.batch_size]
                points = torch.from_numpy(train.points[idx])
                points = augment_points(points, cfg, generator).to(device)
                labels = torch.from_numpy(train.labels[idx]).to(device)
                for group in optimizer.param_groups:
                    group["lr"] = lr_at(i)
                with autocast():
                    loss = step(points, labels, torch.from_numpy(idx))
                if not torch.isfinite(loss):
                    raise FloatingPointError(
                        f"{description}: loss became {loss.item()} at epoch {epoch + 1}; lower training.lr"
                    )
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if after_backward is not None:
                    after_backward()
                # pre-clipping norm; max_norm=inf when not clipping only measures it
                norms.append(float(nn.utils.clip_grad_norm_(params, cfg.grad_clip or float("inf"))))
                optimizer.step()
                losses.append(float(loss.detach()))
                i += 1
                advance(info=f"epoch {epoch + 1}/{cfg.epochs} loss {np.mean(losses):.3f}")
            result.train_loss.append(float(np.mean(losses)) if losses else float("nan"))
            result.grad_norm.append(float(np.mean(norms)) if norms else float("nan"))
            score = validate() if validate is not None else float("nan")
            result.val_score.append(score)
            if validate is None or not result.val_score[:-1] or score > result.best_score:
                result.best_score, result.best_epoch = score, epoch
                if validate is not None:
                    best_state = copy.deepcopy(model.state_dict())
            if log is not None:
                log(f"{description}: epoch {epoch + 1}/{cfg.epochs} loss {result.train_loss[-1]:.4f}"
                    + (f" val {score:.4f}" if validate is not None else ""))
            if validate is not None and patience is not None and min_epochs <= epoch + 1 < cfg.epochs \
                    and epoch - result.best_epoch >= patience:
                result.stopped_early = epoch
                if log is not None:
                    log(f"{description}: stopped after epoch {epoch + 1}: no better validation score in "
                        f"{patience} epochs (best: epoch {result.best_epoch + 1}, {result.best_score:.4f})")
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    result.seconds = time.perf_counter() - start
    return result
