"""ScanObjectNN reader: real scanned objects, 15 classes, from the official ``h5_files`` download.

Layout (``root`` is the folder holding ``main_split/``, or its parent holding ``h5_files/``)::

    main_split/training_objectdataset.h5                          obj_bg
    main_split/test_objectdataset.h5
    main_split_nobg/training_objectdataset.h5                     obj_only
    main_split_nobg/test_objectdataset.h5
    main_split/training_objectdataset_augmentedrot_scale75.h5     pb_t50_rs (the hardest)
    main_split/test_objectdataset_augmentedrot_scale75.h5

Each file holds ``data [n, 2048, 3]`` and ``label [n]`` (and a background ``mask``, unused).
"""
from __future__ import annotations

from pathlib import Path

from benchmark.core.registry import DATASETS, close_matches_hint

from .base import DatasetError, PointCloudDataset, normalize_unit_sphere_np, select_points
from .hdf5 import read_h5_clouds

__all__ = ["SCANOBJECTNN_CLASSES", "VARIANTS", "scanobjectnn"]

#: Label order of the official files (0 = bag ... 14 = toilet).
SCANOBJECTNN_CLASSES: tuple[str, ...] = (
    "bag", "bin", "box", "cabinet", "chair", "desk", "display", "door",
    "shelf", "table", "bed", "pillow", "sink", "sofa", "toilet",
)

#: variant -> (sub-folder, file-name stem after "training_" / "test_").
VARIANTS: dict[str, tuple[str, str]] = {
    "obj_bg": ("main_split", "objectdataset"),
    "obj_only": ("main_split_nobg", "objectdataset"),
    "pb_t50_rs": ("main_split", "objectdataset_augmentedrot_scale75"),
}
_SPLIT_PREFIX = {"train": "training", "test": "test"}


def _variant_file(variant: str, split: str) -> str:
    folder, stem = VARIANTS[variant]
    return f"{folder}/{_SPLIT_PREFIX[split]}_{stem}.h5"


def _expected_layout() -> str:
    return "; ".join(
        f"{v}: {_variant_file(v, 'train')} and {_variant_file(v, 'test')}" for v in VARIANTS
    )


def _locate(root: Path | None, variant: str, split: str) -> Path:
    relative = _variant_file(variant, split)
    if root is None:
        raise DatasetError(
            "dataset 'scanobjectnn' needs --data-root: no data root was given. Point it at the folder "
            f"of the official h5_files download, which holds {_expected_layout()}"
        )
    root = Path(root).expanduser()
    if not root.exists():
        raise DatasetError(
            f"dataset 'scanobjectnn': --data-root {root} does not exist. Point it at the folder holding "
            f"{relative} ({_expected_layout()})"
        )
    candidates = [root / relative, root / "h5_files" / relative]
    if root.name == VARIANTS[variant][0]:  # root is main_split/ itself
        candidates.append(root / Path(relative).name)
    for path in candidates:
        if path.is_file():
            return path
    raise DatasetError(
        f"dataset 'scanobjectnn' (variant {variant}, {split}): missing {candidates[0]}"
        f" (also looked for {candidates[1]}). Point --data-root at the folder holding {relative}; "
        f"expected layout: {_expected_layout()}"
    )


@DATASETS.register("scanobjectnn")
def scanobjectnn(
    split: str,
    *,
    root: Path | None = None,
    num_points: int = 1024,
    sampling: str = "first",
    normalize: bool = True,
    seed: int = 0,
    cache_dir: Path | None = None,
    variant: str = "pb_t50_rs",
) -> PointCloudDataset:
    """ScanObjectNN: real scanned objects in 15 classes (variants obj_bg, obj_only, pb_t50_rs).

    ``variant``: ``obj_bg`` (objects with background), ``obj_only`` (background removed) or
    ``pb_t50_rs`` (perturbed, rotated and scaled boxes: the hardest). ``cache_dir`` is
    unused: the HDF5 files read fast.
    """
    key = str(variant).strip().lower().replace("-", "_")
    if key not in VARIANTS:
        raise DatasetError(
            f"unknown ScanObjectNN variant '{variant}'{close_matches_hint(key, VARIANTS) or '.'} "
            f"Choose one of: {', '.join(VARIANTS)}"
        )
    path = _locate(root, key, split)
    points, labels, _ = read_h5_clouds(
        path,
        num_classes=len(SCANOBJECTNN_CLASSES),
        first=num_points if sampling == "first" else None,
        fix="ScanObjectNN labels are 0..14",
    )
    if points.shape[1] < num_points:
        raise DatasetError(
            f"clouds in {path} have {points.shape[1]} points; cannot select num_points={num_points}. "
            f"Set dataset.num_points <= {points.shape[1]}"
        )
    points, _ = select_points(points, num_points, sampling, seed=seed, source=path)
    if normalize:
        points = normalize_unit_sphere_np(points)
    return PointCloudDataset(
        name="scanobjectnn",
        split=split,
        points=points,
        labels=labels,
        class_names=SCANOBJECTNN_CLASSES,
        extras={"variant": key, "source": str(path)},
    )
