"""Reading point clouds from the HDF5 files that ModelNet40 and ScanObjectNN ship."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .base import DatasetError

__all__ = ["read_h5_clouds"]


def read_h5_clouds(
    path: Path,
    *,
    num_classes: int,
    first: int | None = None,
    normals: bool = False,
    fix: str = "",
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Read ``data [n, P, 3]``, ``label [n] or [n, 1]`` and (if ``normals``) ``normal`` from ``path``.

    ``first``: read only the first that many points of each cloud (when ``P`` allows it).
    Returns ``(points float32 [n, P', 3], labels int64 [n], normals or None)``. Anything
    missing or malformed raises ``DatasetError`` naming ``path``; ``fix`` is appended.
    """
    import h5py

    tail = f". {fix}" if fix else ""
    try:
        handle = h5py.File(path, "r")
    except OSError as err:
        raise DatasetError(f"cannot read {path} as HDF5 ({err}); the file is missing or corrupt{tail}") from err
    with handle:
        missing = [k for k in ("data", "label") if k not in handle]
        if missing:
            raise DatasetError(
                f"{path} has no '{missing[0]}' dataset (it holds: {', '.join(sorted(handle.keys())) or 'nothing'}); "
                f"expected 'data' [n, P, 3] and 'label' [n]{tail}"
            )
        data = handle["data"]
        if data.ndim != 3 or data.shape[-1] != 3 or data.shape[0] == 0:
            raise DatasetError(f"{path}: 'data' has shape {list(data.shape)}, expected [n, P, 3] with n >= 1{tail}")
        take = first if first is not None and first <= data.shape[1] else data.shape[1]
        points = np.asarray(data[:, :take, :], dtype=np.float32)
        raw_labels = np.asarray(handle["label"][()])
        normal_arr = None
        if normals:
            if "normal" not in handle:
                raise DatasetError(
                    f"{path} has no 'normal' dataset, but use_normals=True was asked. Set use_normals=False, "
                    "or use a layout whose files carry normals (e.g. modelnet40_normal_resampled)"
                )
            ds = handle["normal"]
            if tuple(ds.shape) != tuple(data.shape):
                raise DatasetError(f"{path}: 'normal' has shape {list(ds.shape)} but 'data' has {list(data.shape)}")
            normal_arr = np.asarray(ds[:, :take, :], dtype=np.float32)
    if raw_labels.size != len(points) or (raw_labels.ndim == 2 and raw_labels.shape[1] != 1) or raw_labels.ndim > 2:
        raise DatasetError(
            f"{path}: 'label' has shape {list(raw_labels.shape)} for {len(points)} clouds; expected [n] or [n, 1]{tail}"
        )
    labels = raw_labels.reshape(-1)
    if not np.issubdtype(labels.dtype, np.integer):
        if not np.issubdtype(labels.dtype, np.number) or not np.all(np.mod(labels, 1) == 0):
            raise DatasetError(f"{path}: 'label' holds non-integer values ({labels.dtype}); expected class indices")
    labels = labels.astype(np.int64)
    if labels.min() < 0 or labels.max() >= num_classes:
        raise DatasetError(
            f"{path}: labels span [{labels.min()}, {labels.max()}] but the dataset has {num_classes} classes "
            f"(0..{num_classes - 1}); is this the right file?{tail}"
        )
    return points, labels, normal_arr
