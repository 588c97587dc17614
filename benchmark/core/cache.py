"""The on-disk cache: one directory, content-addressed entries, atomic writes, checksums.

Every entry is a payload file plus a JSON sidecar ``<payload>.json`` holding the payload's
size and sha256. The sidecar is written last, so an entry without a matching sidecar is
partial (a killed write) and is recomputed; a payload whose checksum no longer matches is
corrupt, reported once with a warning, and recomputed. Writes go to a temporary file in
the same directory and are renamed into place, so no reader ever sees half a file.

Cache directory: ``--cache-dir`` / config ``cache_dir``, else ``$PCRB_CACHE_DIR``, else
``$XDG_CACHE_HOME/pcrb`` (``~/.cache/pcrb``).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import tempfile
import time
import warnings
import zipfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "state_dict_sha256",
    "CorruptCacheError",
    "atomic_write",
    "cache_entries",
    "cached_arrays",
    "cached_features",
    "cached_training",
    "clear_cache",
    "default_cache_dir",
    "entry_path",
    "file_sha256",
    "load_arrays",
    "load_weights",
    "read_sidecar",
    "resolve_cache_dir",
    "save_arrays",
    "save_weights",
    "verify_entry",
    "write_entry",
]

_SAFE_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class CorruptCacheError(RuntimeError):
    """A cache entry whose payload is missing, partial or fails its checksum."""


def default_cache_dir() -> Path:
    """``$PCRB_CACHE_DIR``, else ``$XDG_CACHE_HOME/pcrb``, else ``~/.cache/pcrb`` (not created)."""
    env = os.environ.get("PCRB_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "pcrb"


def resolve_cache_dir(value: str | os.PathLike[str] | None = None) -> Path:
    """The cache directory for ``value`` (None = the default), created if missing."""
    path = Path(value).expanduser() if value else default_cache_dir()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OSError(
            f"cannot create the cache directory '{path}': {err.strerror}. "
            "Choose a writable one with --cache-dir or PCRB_CACHE_DIR"
        ) from err
    return path


def entry_path(cache_dir: str | os.PathLike[str], kind: str, key: str, suffix: str) -> Path:
    """``<cache_dir>/<kind>/<key><suffix>``; ``kind`` and ``key`` must be plain names (no paths)."""
    for part in (kind, key):
        if not _SAFE_KEY.match(part) or ".." in part:
            raise ValueError(f"unsafe cache name {part!r}: use letters, digits, '.', '_' and '-' only")
    return Path(cache_dir) / kind / f"{key}{suffix}"


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is fsynced and renamed onto ``path``.

    On any exception the temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; a shared cache needs the umask's
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def file_sha256(path: str | os.PathLike[str], chunk: int = 1 << 22) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def _write_npz(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    """An uncompressed ``.npz`` that ``np.load`` reads; any array name works (unlike ``np.savez``'s
    keyword arguments, where ``file`` or ``allow_pickle`` would collide)."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        for name, value in arrays.items():
            with zf.open(f"{name}.npy", "w", force_zip64=True) as fh:
                np.lib.format.write_array(fh, np.asarray(value), allow_pickle=False)


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".json")


def write_entry(
    path: str | os.PathLike[str], write_payload: Callable[[Path], None], meta: Mapping[str, Any] | None = None
) -> Path:
    """Write a cache entry: ``write_payload(tmp_path)`` writes the payload, then the sidecar.

    The old sidecar is removed first and the new one written last, so a crash at any point
    leaves either the complete new entry or one that ``verify_entry`` rejects.
    """
    path = Path(path)
    sidecar = _sidecar(path)
    if sidecar.exists():
        sidecar.unlink()
    with atomic_write(path) as tmp:
        write_payload(tmp)
    record = {
        "size": path.stat().st_size,
        "sha256": file_sha256(path),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "meta": dict(meta or {}),
    }
    with atomic_write(sidecar) as tmp:
        tmp.write_text(json.dumps(record, indent=1, sort_keys=True, default=str))
    return path


def state_dict_sha256(state: Mapping[str, Any]) -> str:
    """sha256 over a state dict's names and tensor bytes (in name order): a module's identity
    when it has no weights file."""
    digest = hashlib.sha256()
    for name in sorted(state):
        digest.update(name.encode())
        digest.update(state[name].detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def read_sidecar(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The sidecar record of a cache entry; ``CorruptCacheError`` when missing or unreadable."""
    sidecar = _sidecar(Path(path))
    try:
        record = json.loads(sidecar.read_text())
        int(record["size"]), str(record["sha256"])
    except FileNotFoundError as err:
        raise CorruptCacheError(f"cache entry {path} has no sidecar (an interrupted write)") from err
    except (ValueError, KeyError, TypeError) as err:
        raise CorruptCacheError(f"cache sidecar {sidecar} is unreadable: {err}") from err
    return record


def verify_entry(path: str | os.PathLike[str], *, checksum: bool = True) -> dict[str, Any]:
    """Check an entry's payload against its sidecar; returns the sidecar record.

    Raises ``FileNotFoundError`` when there is no entry and ``CorruptCacheError`` when it is
    partial or its size (and, with ``checksum``, sha256) does not match.
    """
    path = Path(path)
    if not path.exists():
        if _sidecar(path).exists():
            raise CorruptCacheError(f"cache entry {path} is missing its payload")
        raise FileNotFoundError(path)
    record = read_sidecar(path)
    size = path.stat().st_size
    if size != int(record["size"]):
        raise CorruptCacheError(f"cache entry {path} has {size} bytes, expected {record['size']}")
    if checksum and file_sha256(path) != record["sha256"]:
        raise CorruptCacheError(f"cache entry {path} fails its sha256 checksum")
    return record


def save_arrays(
    path: str | os.PathLike[str], arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any] | None = None
) -> Path:
    """Write ``arrays`` as an uncompressed ``.npz`` at ``path`` plus its checksummed sidecar."""
    return write_entry(path, lambda tmp: _write_npz(tmp, arrays), meta)


def load_arrays(path: str | os.PathLike[str], *, verify: bool = True) -> dict[str, np.ndarray]:
    """Read an entry written by ``save_arrays``.

    Raises ``FileNotFoundError`` when there is no entry and ``CorruptCacheError`` when it is
    partial or its size/checksum does not match the sidecar.
    """
    path = Path(path)
    verify_entry(path, checksum=verify)
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}
    except Exception as err:  # noqa: BLE001 - any decode failure means a corrupt file
        raise CorruptCacheError(f"cache entry {path} cannot be decoded: {err}") from err


def save_weights(
    path: str | os.PathLike[str], state_dict: Mapping[str, Any], meta: Mapping[str, Any] | None = None
) -> Path:
    """Write a model's tensors as ``.safetensors`` plus a checksummed sidecar holding ``meta``."""
    from safetensors.torch import save_file

    tensors = {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}
    return write_entry(path, lambda tmp: save_file(tensors, str(tmp)), meta)


def load_weights(path: str | os.PathLike[str], *, verify: bool = True) -> tuple[dict[str, Any], dict[str, Any]]:
    """Read ``(state_dict, meta)`` written by ``save_weights``; errors as ``load_arrays``."""
    from safetensors.torch import load_file

    record = verify_entry(path, checksum=verify)
    try:
        return load_file(str(path)), dict(record.get("meta", {}))
    except Exception as err:  # noqa: BLE001
        raise CorruptCacheError(f"weights {path} cannot be decoded: {err}") from err


def cached_training(
    path: str | os.PathLike[str],
    module: Any,
    train: Callable[[], Mapping[str, Any]],
    *,
    force: bool = False,
    what: str = "",
) -> tuple[dict[str, Any], bool, str]:
    """``module``'s trained state from the weights entry at ``path``, or ``train()`` it and store it.

    ``module`` is an ``nn.Module``; ``train()`` trains it in place and returns its metadata
    (scores, epochs; ``seconds`` is added when absent, and ``threads``, the intra-op thread
    count it trained with: the cache key leaves it out, but it changes float rounding, so two
    machines' weights of one key may differ). A corrupt or unloadable entry is
    reported with one warning (naming ``what``) and retrained; ``force`` retrains anyway.
    What the zoo and every defense that trains something use.

    Returns:
        ``(meta, cached, sha256)``: the metadata, whether the state came from the cache, and
        the weights file's sha256 (what result rows trace).
    """
    path = Path(path)
    if not force:
        try:
            state, meta = load_weights(path)
            module.load_state_dict(state)
            return meta, True, str(read_sidecar(path)["sha256"])
        except FileNotFoundError:
            pass
        except (CorruptCacheError, RuntimeError) as err:
            warnings.warn(f"{what or path.name}: cached weights unusable ({err}); retraining", RuntimeWarning,
                          stacklevel=2)
    start = time.perf_counter()
    meta = dict(train())
    meta.setdefault("seconds", round(time.perf_counter() - start, 1))
    import torch  # the caller's module is a torch one; this floor imports torch lazily

    meta.setdefault("threads", torch.get_num_threads())
    save_weights(path, module.state_dict(), meta)
    return meta, False, str(read_sidecar(path)["sha256"])


def cached_arrays(
    path: str | os.PathLike[str],
    compute: Callable[[], Mapping[str, np.ndarray]],
    meta: Mapping[str, Any] | None = None,
) -> tuple[dict[str, np.ndarray], bool]:
    """Load the entry at ``path``, or compute, save and return it.

    Returns ``(arrays, hit)``. A corrupt or partial entry is reported with one warning and
    recomputed; finished entries are never recomputed.
    """
    path = Path(path)
    try:
        return load_arrays(path), True
    except FileNotFoundError:
        pass
    except CorruptCacheError as err:
        warnings.warn(f"{err}; recomputing it", RuntimeWarning, stacklevel=2)
    arrays = {k: np.asarray(v) for k, v in compute().items()}
    save_arrays(path, arrays, meta)
    return arrays, False


# --------------------------------------------------------------------------- teacher features

def cached_features(
    cache_dir: str | os.PathLike[str] | None,
    name: str,
    key: Mapping[str, Any],
    compute: Callable[[], np.ndarray],
) -> tuple[np.ndarray, bool]:
    """A feature matrix (e.g. teacher embeddings of every training cloud), computed once.

    The entry is ``<cache>/features/<name>-<hash(key)>.npy``: ``key`` must name everything
    the features depend on (teacher weights hash, projection parameters, dataset
    fingerprint, split, adversarial-set hash). On a hit the file is checked (size and
    sha256 against its sidecar) and returned **memory-mapped read-only**; a partial or
    corrupt entry is reported once and recomputed. Without a cache directory the features
    are computed in memory.

    Returns:
        ``(features, hit)``.
    """
    from benchmark.core.config import config_hash

    if cache_dir is None:
        return np.asarray(compute()), False
    path = entry_path(cache_dir, "features", f"{name}-{config_hash(dict(key))}", ".npy")
    try:
        verify_entry(path)
        features = np.load(path, mmap_mode="r", allow_pickle=False)
        return features, True
    except FileNotFoundError:
        pass
    except (CorruptCacheError, ValueError, OSError) as err:
        warnings.warn(f"{err}; recomputing it", RuntimeWarning, stacklevel=2)
    features = np.ascontiguousarray(np.asarray(compute()))

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as handle:
            np.save(handle, features, allow_pickle=False)

    write_entry(path, write, {"name": name, "key": dict(key), "shape": list(features.shape)})
    return np.load(path, mmap_mode="r", allow_pickle=False), False


def cache_entries(cache_dir: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Every payload under ``cache_dir``: ``{"kind", "name", "bytes", "path", "created"}``
    (sidecars counted with their payload), sorted by kind then name. A temporary file a killed
    writer left behind (``.<name>.*.tmp``) is listed with ``"partial": True``."""
    root = Path(cache_dir)
    out = []
    if not root.exists():
        return out
    for kind_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        for path in sorted(kind_dir.iterdir()):
            if path.name.endswith(".json") and path.with_name(path.name[:-5]).exists():
                continue
            if not path.is_file():
                continue
            if path.name.startswith(".") and path.name.endswith(".tmp"):
                out.append({"kind": kind_dir.name, "name": path.name, "bytes": path.stat().st_size,
                            "path": str(path), "created": "", "partial": True})
                continue
            sidecar = _sidecar(path)
            size = path.stat().st_size + (sidecar.stat().st_size if sidecar.exists() else 0)
            created = ""
            with contextlib.suppress(Exception):
                created = json.loads(sidecar.read_text()).get("created", "")
            out.append({"kind": kind_dir.name, "name": path.name, "bytes": size, "path": str(path),
                        "created": created})
    return out


def clear_cache(cache_dir: str | os.PathLike[str], kinds: Iterable[str] | None = None) -> tuple[int, int]:
    """Remove the cache entries of ``kinds`` (all when None); returns ``(files, bytes)`` removed."""
    root = Path(cache_dir)
    wanted = None if kinds is None else set(kinds)
    files = size = 0
    if not root.exists():
        return 0, 0
    for kind_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        if wanted is not None and kind_dir.name not in wanted:
            continue
        for path in sorted(kind_dir.rglob("*")):
            if path.is_file():
                size += path.stat().st_size
                files += 1
                path.unlink()
    return files, size
