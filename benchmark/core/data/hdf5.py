"""Reading point clouds from the HDF5 files that ModelNet40 and ScanObjectNN ship."""
from __future__ import annotations

from pathlib import Path
from typing import Any

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
    try:
        with handle:
            points, raw_labels, normal_arr = _read_arrays(handle, path, first, normals, tail)
    except DatasetError:
        raise
    except (OSError, RuntimeError, KeyError, ValueError, TypeError) as err:  # how h5py meets damaged metadata
        raise DatasetError(
            f"cannot read {path} ({type(err).__name__}: {err}); the file is corrupt: re-download or restore it{tail}"
        ) from err
    if not np.isfinite(points).all():
        raise DatasetError(
            f"{path}: 'data' holds NaN, inf or values beyond float32 range; the file is corrupt{tail}"
        )
    if raw_labels.size != len(points) or (raw_labels.ndim == 2 and raw_labels.shape[1] != 1) or raw_labels.ndim > 2:
        raise DatasetError(
            f"{path}: 'label' has shape {list(raw_labels.shape)} for {len(points)} clouds; expected [n] or [n, 1]{tail}"
        )
    labels = raw_labels.reshape(-1)
    if not _is_real(labels.dtype) or not np.all(np.mod(labels, 1) == 0):
        raise DatasetError(f"{path}: 'label' holds non-integer values ({labels.dtype}); expected class indices{tail}")
    if labels.min() < 0 or labels.max() >= num_classes:  # checked before the cast, which could wrap around
        raise DatasetError(
            f"{path}: labels span [{labels.min()}, {labels.max()}] but the dataset has {num_classes} classes "
            f"(0..{num_classes - 1}); is this the right file?{tail}"
        )
    labels = labels.astype(np.int64)
    return points, labels, normal_arr


def _read_arrays(
    handle: Any, path: Path, first: int | None, normals: bool, tail: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """``(points float32, raw labels, normals float32 or None)`` of an open file, checked for the
    layout (keys, shapes, dtypes) before anything large is read."""
    import h5py

    for key in ("data", "label") + (("normal",) if normals else ()):
        if key in handle and not isinstance(handle[key], h5py.Dataset):
            raise DatasetError(f"{path}: '{key}' is an HDF5 group, not a dataset; is this the right file?{tail}")
    missing = [k for k in ("data", "label") if k not in handle]
    if missing:
        raise DatasetError(
            f"{path} has no '{missing[0]}' dataset (it holds: {', '.join(sorted(handle.keys())) or 'nothing'}); "
            f"expected 'data' [n, P, 3] and 'label' [n]{tail}"
        )
    data = handle["data"]
    if data.ndim != 3 or data.shape[-1] != 3 or data.shape[0] == 0 or data.shape[1] == 0:
        raise DatasetError(
            f"{path}: 'data' has shape {list(data.shape)}, expected [n, P, 3] with n >= 1 and P >= 1{tail}"
        )
    if not _is_real(data.dtype):
        raise DatasetError(f"{path}: 'data' holds {data.dtype} values; expected float coordinates{tail}")
    take = first if first is not None and first <= data.shape[1] else data.shape[1]
    normal_arr = None
    if normals:
        if "normal" not in handle:
            raise DatasetError(
                f"{path} has no 'normal' dataset, but use_normals=True was asked. Set use_normals=False, "
                "or use a layout whose files carry normals (e.g. modelnet40_normal_resampled)"
            )
        ds = handle["normal"]
        if tuple(ds.shape) != tuple(data.shape) or not _is_real(ds.dtype):
            raise DatasetError(
                f"{path}: 'normal' is {ds.dtype} {list(ds.shape)} but 'data' is {list(data.shape)}; "
                "expected float vectors of the same shape"
            )
        normal_arr = np.asarray(ds[:, :take, :], dtype=np.float32)
    with np.errstate(over="ignore"):  # values beyond float32 become inf, rejected by the caller
        points = np.asarray(data[:, :take, :], dtype=np.float32)
    return points, np.asarray(handle["label"][()]), normal_arr


def _is_real(dtype: np.dtype) -> bool:
    """Integer or floating point (not bool, complex, strings or compound records)."""
    return bool(np.issubdtype(dtype, np.integer) or np.issubdtype(dtype, np.floating))
