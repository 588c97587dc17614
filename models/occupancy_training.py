"""Occupancy supervision for SynthShapes solids: training batches (:func:`occupancy_batch`),
the IoU of a trained network (:func:`occupancy_iou`) and the training run (:func:`train_occupancy`).

They need solids with exact inside tests: SynthShapes' ``ShapeBank`` (``extras["shapes"]``).
The network is any module with ``encode`` / ``decode`` / ``config["padding"]`` (in practice
:class:`models.occnet.ConvOccupancyNetwork`, whose module re-exports these functions).

Floor 1: imports numpy, torch and (inside :func:`train_occupancy`) ``benchmark.core.training``.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

__all__ = ["occupancy_batch", "occupancy_iou", "train_occupancy"]


def occupancy_batch(
    clouds: np.ndarray,
    shapes: Any,
    rng: np.random.Generator,
    *,
    input_points: int = 600,
    input_noise: float = 0.005,
    queries: int = 2048,
    near_surface: float = 0.5,
    near_sigma: float = 0.02,
    padding_scale: float = 0.9,
    cube_padding: float = 0.1,
) -> tuple[Tensor, Tensor, Tensor]:
    """Occupancy training (or evaluation) data for SynthShapes clouds, in the padded cube.

    Args:
        clouds: ``[M, N, 3]`` clouds (unit-sphere frame) of the objects in ``shapes``.
        shapes: their ``ShapeBank`` (``contains`` answers inside tests in the clouds' frame).
        rng: numpy generator of every draw.
        input_points: points of each cloud the network encodes (fewer if N is smaller).
        input_noise: std of the Gaussian noise on them (cube units).
        queries: query points per cloud; ``round(queries * near_surface)`` are random cloud
            points plus N(0, ``near_sigma``) noise, the others uniform in the cube
            ``+-(0.5 + cube_padding / 2)``.
        padding_scale: side of the cube the cloud is fitted into (centred on its mean, the
            largest side of its bounding box scaled to it: IF-Defense's test-time fit).

    Returns:
        ``(inputs [M, T, 3], query [M, Q, 3], occupancy [M, Q])`` float32 tensors, occupancy 1
        inside the object.
    """
    clouds = np.asarray(clouds, dtype=np.float64)
    m, n, _ = clouds.shape
    centre = clouds.mean(1, keepdims=True)
    extent = (clouds.max(1) - clouds.min(1)).max(-1).reshape(m, 1, 1)
    factor = padding_scale / np.maximum(extent, 1e-9)
    cube = (clouds - centre) * factor
    t = min(input_points, n)
    pick = np.argpartition(rng.random((m, n)), t - 1, axis=1)[:, :t]
    inputs = np.take_along_axis(cube, pick[..., None], 1) + rng.normal(0.0, input_noise, (m, t, 3))
    near = int(round(queries * near_surface))  # noqa: RUF046  (numpy scalars may round to floats)
    half = 0.5 + cube_padding / 2
    anchors = np.take_along_axis(cube, rng.integers(0, n, (m, near))[..., None], 1)
    query = np.concatenate([anchors + rng.normal(0.0, near_sigma, anchors.shape),
                            rng.uniform(-half, half, (m, queries - near, 3))], 1)
    inside = shapes.contains(query / factor + centre)  # back to the clouds' frame
    return _f32(inputs), _f32(query), _f32(inside)


def _f32(array: np.ndarray) -> Tensor:
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))


@torch.no_grad()
def occupancy_iou(
    network: nn.Module,
    clouds: np.ndarray,
    shapes: Any,
    *,
    seed: int = 0,
    queries: int = 8192,
    threshold: float = 0.2,
    batch_size: int = 16,
    **batch_options: Any,
) -> tuple[np.ndarray, np.ndarray]:
    """IoU of the predicted and true occupancy on uniform queries in the padded cube.

    Args:
        network: a ``ConvOccupancyNetwork`` (``encode`` / ``decode``).
        clouds, shapes: SynthShapes clouds ``[M, N, 3]`` and their ``ShapeBank``.
        queries: uniform query points per cloud.
        threshold: occupied = sigmoid(logit) >= threshold (ConvONet evaluates at 0.2).
        batch_options: :func:`occupancy_batch` options (input size and noise, padding).

    Returns:
        ``(iou [M], inside_fraction [M])``: the network's IoU and the occupied fraction of
        the cube, which is also the IoU of the constant "all inside" prediction.
    """
    rng = np.random.default_rng(seed)
    device = next(network.parameters()).device
    cut = math.log(threshold / (1 - threshold))
    ious, fractions = [], []
    for start in range(0, len(clouds), batch_size):
        rows = np.arange(start, min(start + batch_size, len(clouds)))
        inputs, query, occ = occupancy_batch(clouds[rows], shapes.subset(rows), rng, queries=queries,
                                             near_surface=0.0, **batch_options)
        pred = network.decode(query.to(device), network.encode(inputs.to(device))).cpu() >= cut
        truth = occ > 0.5
        union = (pred | truth).sum(1).clamp_min(1)
        ious.append(((pred & truth).sum(1) / union).numpy())
        fractions.append(truth.float().mean(1).numpy())
    return np.concatenate(ious), np.concatenate(fractions)



def train_occupancy(
    model: nn.Module,
    data: Any,
    cfg: Any,
    *,
    seed: int = 0,
    device: torch.device | str = "cpu",
    progress: bool = True,
    log: Callable[[str], None] = print,
    input_points: int = 600,
    input_noise: float = 0.005,
    padding_scale: float = 0.9,
    queries: int = 4096,
    near_surface: float = 0.5,
    near_sigma: float = 0.02,
    train_clouds: int | None = None,
    iou_clouds: int = 32,
    iou_queries: int = 8192,
    threshold: float = 0.2,
) -> dict[str, Any]:
    """Train ``model`` (a ``ConvOccupancyNetwork``) in place on occupancy BCE over the solids of ``data`` (a SynthShapes split,
    whose ``extras["shapes"]`` answers "is this point inside?"); returns the metadata.

    ``iou_clouds`` clouds are held out and the network's IoU is measured on them
    (:func:`occupancy_iou`); ``train_clouds`` caps the rest. ``cfg`` is the
    ``benchmark.core.config.TrainConfig`` (``training.if-defense``); point augmentations are off (the
    labels come from the unaugmented solids). The other arguments are :func:`occupancy_batch`'s.
    """
    import dataclasses

    from benchmark.core.training import fit

    inside = data.extras["shapes"].contains(data.points[:8], margin=-0.02, indices=np.arange(min(8, len(data))))
    if float(inside.mean()) < 0.9:  # the clouds must lie on the surfaces of their solids
        raise ValueError(
            f"if-defense: the training set's shapes do not describe its clouds (only {inside.mean():.0%} of the "
            f"points lie within 0.02 of their solids); pass ConvONet weights with "
            f"--set defenses.if-defense.pretrained=/path/to/convonet.pth"
        )
    order = np.random.default_rng(seed).permutation(len(data))
    held = min(iou_clouds, max(0, len(data) - 1))
    rest = order[held:]
    if train_clouds is not None:
        rest = rest[: max(1, train_clouds)]
    train, probe = data.subset(np.sort(rest)), data.subset(np.sort(order[:held]))
    cfg = dataclasses.replace(cfg, scale_low=1.0, scale_high=1.0, jitter=0.0, rotate=False, point_dropout=0.0,
                              outliers=0.0, batch_size=max(1, min(cfg.batch_size, len(train))))
    rng = np.random.default_rng([seed, 7])
    options = {"input_points": input_points, "input_noise": input_noise, "padding_scale": padding_scale,
               "cube_padding": model.config["padding"]}
    shapes = train.extras["shapes"]
    model.to(device)

    def step(points: Tensor, labels: Tensor, indices: Tensor) -> Tensor:
        idx = indices.numpy()
        inputs, query, occ = occupancy_batch(train.points[idx], shapes.subset(idx), rng, queries=queries,
                                             near_surface=near_surface, near_sigma=near_sigma, **options)
        logits = model(inputs.to(device), query.to(device))
        return F.binary_cross_entropy_with_logits(logits, occ.to(device))

    result = fit(model, train, cfg, step, device=device, seed=seed, description="if-defense occupancy network",
                 progress=progress, log=log)
    meta: dict[str, Any] = {"clouds": len(train), "epochs": cfg.epochs, "batch_size": cfg.batch_size,
                            "train_loss": result.train_loss, "seconds": round(result.seconds, 1), "iou_clouds": held}
    if held:
        model.eval()
        iou, fraction = occupancy_iou(model, probe.points, probe.extras["shapes"], seed=seed + 1,
                                      queries=iou_queries, threshold=threshold, **options)
        meta.update(iou=float(iou.mean()), iou_min=float(iou.min()), iou_all_inside=float(fraction.mean()))
    return meta

