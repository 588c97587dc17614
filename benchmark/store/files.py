"""Writing results files safely: an exclusive lock per file, atomic replacement (a reader
never sees a partial file), clean-up of what a killed writer left, and file names that
cannot become paths.
"""
from __future__ import annotations

import contextlib
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = ["atomic_write_text", "locked", "remove_stale_temps", "safe_name"]


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """An exclusive advisory lock on ``path`` (created); a no-op where ``fcntl`` is missing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: rely on the atomic rename alone
        yield
        return
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def safe_name(value: str, what: str) -> str:
    """``value`` as one plain file-name component (a dataset name or run id must not become a path)."""
    if not _SAFE_NAME.match(value) or ".." in value:
        raise ValueError(f"unsafe {what} {value!r} for a results file name: use letters, digits, '.', '_' and '-' only")
    return value


def remove_stale_temps(path: Path) -> None:
    """Remove the temporary files a killed writer of ``path`` left behind; call under ``path``'s lock
    (every writer of ``path`` holds it while its temporary file exists, so any found now is stale)."""
    for stale in path.parent.glob(f".{path.name}.*.tmp"):
        with contextlib.suppress(FileNotFoundError):
            stale.unlink()


def atomic_write_text(path: Path, text: str) -> None:
    """Replace ``path`` by ``text`` atomically (a temporary file in its folder, fsynced, renamed
    over it; mode 0644); the temporary file is removed when anything fails."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", newline="") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
