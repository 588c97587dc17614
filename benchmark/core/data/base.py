"""The one dataset interface every reader returns, and the point-selection options they share."""
from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

__all__ = [
    "SAMPLINGS",
    "SPLITS",
    "DatasetError",
    "PointCloudDataset",
    "normalize_unit_sphere_np",
    "select_points",
]

Sampling = Literal["first", "random", "fps"]
SAMPLINGS: tuple[str, ...] = ("first", "random", "fps")
SPLITS: tuple[str, ...] = ("train", "test")


class DatasetError(ValueError):
    """A missing, malformed or inconsistent data file; the message names the path and the fix."""


@dataclass(eq=False)
class PointCloudDataset:
    """A labelled set of point clouds held in memory.

    points: ``[N, P, 3] float32`` (unit-sphere scale when normalised), labels: ``[N] int64``
    in ``[0, len(class_names))``, normals: optional ``[N, P, 3] float32`` unit vectors,
    extras: reader-specific data that must survive subsetting (e.g. SynthShapes' parametric
    shapes). ``fingerprint`` is a content hash that names this exact data in caches.
    """

    name: str
    split: str
    points: np.ndarray
    labels: np.ndarray
    class_names: tuple[str, ...]
    normals: np.ndarray | None = None
    extras: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.points = np.ascontiguousarray(self.points, dtype=np.float32)
        self.labels = np.ascontiguousarray(self.labels, dtype=np.int64).reshape(-1)
        self.class_names = tuple(str(c) for c in self.class_names)
        where = f"dataset '{self.name}' ({self.split})"
        if self.points.ndim != 3 or self.points.shape[-1] != 3:
            raise DatasetError(f"{where}: points must be [N, P, 3], got {list(self.points.shape)}")
        if len(self.points) == 0:
            raise DatasetError(f"{where}: no clouds were read; check the data root and split lists")
        if len(self.labels) != len(self.points):
            raise DatasetError(f"{where}: {len(self.points)} clouds but {len(self.labels)} labels")
        if not np.isfinite(self.points).all():
            raise DatasetError(f"{where}: points contain NaN or inf values; the data file is corrupt")
        if len(self.class_names) == 0:
            raise DatasetError(f"{where}: no class names")
        if self.labels.min() < 0 or self.labels.max() >= len(self.class_names):
            raise DatasetError(
                f"{where}: labels span [{self.labels.min()}, {self.labels.max()}] but there are "
                f"{len(self.class_names)} classes; is the shape-names file the right one?"
            )
        if self.normals is not None:
            self.normals = np.ascontiguousarray(self.normals, dtype=np.float32)
            if self.normals.shape != self.points.shape:
                raise DatasetError(
                    f"{where}: normals {list(self.normals.shape)} do not match points {list(self.points.shape)}"
                )

    # -- facts ------------------------------------------------------------------------------
    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def num_points(self) -> int:
        return int(self.points.shape[1])

    @cached_property
    def fingerprint(self) -> str:
        """sha256 (hex, 16 chars) of name, split, class names, points, labels and normals."""
        h = hashlib.sha256()
        h.update(f"{self.name}\0{self.split}\0{'|'.join(self.class_names)}\0".encode())
        h.update(str(self.points.shape).encode())
        h.update(self.points.tobytes())
        h.update(self.labels.tobytes())
        if self.normals is not None:
            h.update(self.normals.tobytes())
        return h.hexdigest()[:16]

    def class_counts(self) -> np.ndarray:
        """``[C] int64``: clouds per class."""
        return np.bincount(self.labels, minlength=self.num_classes)

    # -- access -------------------------------------------------------------------------------
    def __len__(self) -> int:
        return int(self.points.shape[0])

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        """One cloud as ``([P, 3] float32 tensor, label)``."""
        return torch.from_numpy(self.points[index]), int(self.labels[index])

    def tensors(self, device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """All clouds as ``([N, P, 3] float32, [N] int64)`` tensors on ``device``."""
        return (
            torch.from_numpy(self.points).to(device),
            torch.from_numpy(self.labels).to(device),
        )

    def subset(self, indices: Sequence[int] | np.ndarray) -> PointCloudDataset:
        """The clouds at ``indices`` (in that order), extras indexed alike where they are per-cloud."""
        idx = np.asarray(indices, dtype=np.int64)
        extras = {}
        for key, value in self.extras.items():
            if hasattr(value, "subset"):
                extras[key] = value.subset(idx)
            elif isinstance(value, np.ndarray) and value.shape[:1] == (len(self),):
                extras[key] = value[idx]
            else:
                extras[key] = value
        return PointCloudDataset(
            name=self.name,
            split=self.split,
            points=self.points[idx],
            labels=self.labels[idx],
            class_names=self.class_names,
            normals=None if self.normals is None else self.normals[idx],
            extras=extras,
        )

    def batches(
        self,
        batch_size: int,
        *,
        shuffle: bool = False,
        seed: int = 0,
        device: torch.device | str | None = None,
        drop_last: bool = False,
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield ``([B, P, 3] float32, [B] int64)`` batches; a seeded permutation when ``shuffle``."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        order = np.arange(len(self))
        if shuffle:
            order = np.random.default_rng(seed).permutation(len(self))
        stop = len(self) - (len(self) % batch_size if drop_last else 0)
        for start in range(0, stop, batch_size):
            idx = order[start : start + batch_size]
            yield (
                torch.from_numpy(self.points[idx]).to(device),
                torch.from_numpy(self.labels[idx]).to(device),
            )

    def __repr__(self) -> str:
        return (
            f"PointCloudDataset(name={self.name!r}, split={self.split!r}, n={len(self)}, "
            f"points={self.num_points}, classes={self.num_classes}, fingerprint={self.fingerprint})"
        )


def normalize_unit_sphere_np(points: np.ndarray) -> np.ndarray:
    """Centre each cloud on its centroid and scale its farthest point to radius 1: ``[N, P, 3]``."""
    with np.errstate(over="ignore", invalid="ignore"):
        centred = points - points.mean(axis=1, keepdims=True)
        radius = np.linalg.norm(centred, axis=-1).max(axis=1, keepdims=True)[..., None]
        out = (centred / np.maximum(radius, 1e-12)).astype(np.float32)
    wide = ~np.isfinite(radius).reshape(-1)
    if wide.any():  # squares overflow float32 (|x| beyond ~1e19): redo those clouds in float64
        clouds = points[wide].astype(np.float64)
        centred64 = clouds - clouds.mean(axis=1, keepdims=True)
        radius64 = np.linalg.norm(centred64, axis=-1).max(axis=1, keepdims=True)[..., None]
        out[wide] = (centred64 / np.maximum(radius64, 1e-12)).astype(np.float32)
    return out


def select_points(
    points: np.ndarray,
    num_points: int,
    sampling: str = "first",
    *,
    normals: np.ndarray | None = None,
    seed: int = 0,
    source: str | Path = "",
) -> tuple[np.ndarray, np.ndarray | None]:
    """Choose ``num_points`` of the ``M`` points of every cloud in ``[N, M, 3]``.

    ``first`` keeps the first points (the files' own order), ``random`` a seeded random
    subset per cloud, ``fps`` farthest point sampling from each cloud's first point.
    Normals, when given, follow their points. Returns ``([N, num_points, 3], normals)``.
    """
    if sampling not in SAMPLINGS:
        from benchmark.core.registry import close_matches_hint

        raise DatasetError(
            f"unknown point sampling '{sampling}'{close_matches_hint(sampling, SAMPLINGS)} "
            f"Choose one of: {', '.join(SAMPLINGS)}"
        )
    n, m = points.shape[:2]
    if num_points > m:
        where = f" in {source}" if source else ""
        raise DatasetError(
            f"clouds{where} have {m} points; cannot select num_points={num_points}. "
            f"Set dataset.num_points <= {m}"
        )
    if num_points == m and sampling != "random":
        return points, normals
    if sampling == "first":
        idx = np.broadcast_to(np.arange(num_points), (n, num_points))
    elif sampling == "random":
        keys = np.random.default_rng(seed).random((n, m))
        idx = np.sort(np.argpartition(keys, num_points - 1, axis=1)[:, :num_points], axis=1)
    else:
        from benchmark.core.geometry import farthest_point_sample

        chunks = []
        for start in range(0, n, 256):  # bounded memory; loop over chunks of clouds, not points
            chunk = torch.from_numpy(np.ascontiguousarray(points[start : start + 256]))
            chunks.append(farthest_point_sample(chunk, num_points).numpy())
        idx = np.concatenate(chunks, axis=0)
    picked = np.take_along_axis(points, idx[..., None], axis=1)
    picked_normals = None if normals is None else np.take_along_axis(normals, idx[..., None], axis=1)
    return np.ascontiguousarray(picked), picked_normals
