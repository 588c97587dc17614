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
from typing import TYPE_CHECKING, Any

from benchmark.core.registry import DATASETS

from .base import SAMPLINGS, SPLITS, DatasetError, PointCloudDataset, normalize_unit_sphere_np, select_points

if TYPE_CHECKING:
    from benchmark.core.config import RunConfig

register_dataset = DATASETS.register

__all__ = [
    "DATASETS",
    "SAMPLINGS",
    "SPLITS",
    "DatasetError",
    "PointCloudDataset",
    "load_dataset",
    "load_run_split",
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


#: ``load_dataset`` arguments a ``load_run_split`` override may set; every other key is a reader option.
_LOAD_ARGUMENTS = ("root", "num_points", "sampling", "normalize", "seed")


def load_run_split(
    cfg: RunConfig,
    split: str,
    cache_dir: str | os.PathLike[str] | None,
    overrides: Mapping[str, Any] | None = None,
) -> PointCloudDataset:
    """Split ``split`` of the run's dataset (``cfg.dataset``, ``datasets.<name>`` options, the run seed).

    ``overrides`` changes any of ``root``, ``num_points``, ``sampling``, ``normalize``, ``seed`` or a
    reader option (e.g. SynthShapes' ``train_size``, ``jitter``): how the zoo reads a model's
    *source* distribution (``training.<model>.source``) beside the run's own.
    """
    given = dict(overrides or {})
    args: dict[str, Any] = {"root": cfg.dataset.root, "num_points": cfg.dataset.num_points,
                            "sampling": cfg.dataset.sampling, "normalize": cfg.dataset.normalize, "seed": cfg.seed}
    args.update({k: given.pop(k) for k in _LOAD_ARGUMENTS if k in given})
    return load_dataset(cfg.dataset.name, split, cache_dir=cache_dir, options={**cfg.dataset_options(), **given},
                        **args)


# Importing the readers registers them.
from . import modelnet, scanobjectnn, synthshapes  # noqa: E402,F401
