"""Datasets: the embedded SynthShapes generator and readers for real benchmark files.

Every reader is registered by name and returns a ``PointCloudDataset``. A reader is a
function ``(split, *, root, num_points, sampling, normalize, seed, cache_dir, **options)``;
``options`` are reader-specific (e.g. ScanObjectNN's ``variant``) and carry defaults that
``bench list datasets`` shows.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from benchmark.registry import DATASETS

from .base import SAMPLINGS, SPLITS, DatasetError, PointCloudDataset, normalize_unit_sphere_np, select_points

register_dataset = DATASETS.register

__all__ = [
    "DATASETS",
    "SAMPLINGS",
    "SPLITS",
    "DatasetError",
    "PointCloudDataset",
    "load_dataset",
    "normalize_unit_sphere_np",
    "register_dataset",
    "select_points",
]


def load_dataset(
    name: str,
    split: str,
    *,
    root: str | os.PathLike[str] | None = None,
    num_points: int = 1024,
    sampling: str = "first",
    normalize: bool = True,
    seed: int = 0,
    cache_dir: str | os.PathLike[str] | None = None,
    options: Mapping[str, Any] | None = None,
) -> PointCloudDataset:
    """Read split ``split`` of the registered dataset ``name``.

    Unknown names raise ``UnknownNameError`` (with close matches), unknown ``options`` too;
    missing or malformed files raise ``DatasetError`` naming the path and expected layout.
    """
    if split not in SPLITS:
        raise DatasetError(f"unknown split '{split}': choose one of {', '.join(SPLITS)}")
    if num_points < 1:
        raise DatasetError(f"num_points must be >= 1, got {num_points}")
    entry = DATASETS.get(name)
    params = dict(options or {})
    entry.check_params(params, where=f"dataset.options for '{name}'")
    return entry.obj(
        split,
        root=None if root is None else Path(root).expanduser(),
        num_points=num_points,
        sampling=sampling,
        normalize=normalize,
        seed=seed,
        cache_dir=None if cache_dir is None else Path(cache_dir),
        **params,
    )


# Importing the readers registers them.
from . import modelnet, scanobjectnn, synthshapes  # noqa: E402,F401
