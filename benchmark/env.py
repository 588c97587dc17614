"""The process environment: devices, library versions and the CPU allocator setting.

``tuned_environment`` is what the ``bench`` launcher applies before torch is imported:
glibc's malloc, left at its defaults, hands every large tensor's pages back to the
kernel and faults them in again on the next allocation (measured here: 1.3-1.8x slower
model steps on CPU, ../shared/NOTES-env.md). Its tunables must be set before the process
starts, so the launcher re-executes itself once with them. ``PCRB_NO_TUNE=1`` opts out.
"""
from __future__ import annotations

import importlib.metadata
import os
import platform
import sys
from collections.abc import Mapping
from typing import Any

__all__ = [
    "GLIBC_MALLOC_TUNABLES",
    "DeviceError",
    "allocator_status",
    "package_versions",
    "reexec_tuned",
    "resolve_device",
    "tuned_environment",
]

#: glibc malloc settings that keep freed pages mapped (no mmap for big blocks, no trimming).
GLIBC_MALLOC_TUNABLES = {
    "glibc.malloc.mmap_max": "0",
    "glibc.malloc.trim_threshold": "100000000000",
    "glibc.malloc.top_pad": "1073741824",
}
TUNED_FLAG = "PCRB_ALLOCATOR_TUNED"
OPT_OUT = "PCRB_NO_TUNE"


class DeviceError(RuntimeError):
    """A device the user asked for that this machine or torch build does not have."""


def _flag(env: Mapping[str, str], name: str) -> bool:
    """An environment switch: unset, empty, "0", "false" and "no" mean off."""
    return env.get(name, "").strip().lower() not in ("", "0", "false", "no")


def _is_glibc_linux() -> bool:
    return sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"


def _jemalloc_preloaded(environ: Mapping[str, str]) -> bool:
    return "jemalloc" in environ.get("LD_PRELOAD", "")


def tuned_environment(environ: Mapping[str, str] | None = None) -> dict[str, str] | None:
    """The environment to re-execute with, or None when no re-exec is needed or wanted.

    None when: already tuned (``PCRB_ALLOCATOR_TUNED`` set), opted out (``PCRB_NO_TUNE=1``),
    not glibc Linux, or jemalloc is preloaded. Tunables the user already set are kept.
    """
    env = dict(os.environ if environ is None else environ)
    if _flag(env, TUNED_FLAG) or _flag(env, OPT_OUT) or _jemalloc_preloaded(env):
        return None
    if not _is_glibc_linux():
        return None
    existing = [item for item in env.get("GLIBC_TUNABLES", "").split(":") if item]
    present = {item.split("=", 1)[0] for item in existing}
    added = [f"{k}={v}" for k, v in GLIBC_MALLOC_TUNABLES.items() if k not in present]
    env["GLIBC_TUNABLES"] = ":".join(existing + added)
    env[TUNED_FLAG] = "1"
    return env


def reexec_tuned(argv: list[str]) -> None:
    """Re-execute this process as ``argv`` (a full command line, ``sys.executable`` first) with the
    allocator tunables, unless they are set already, opted out (``PCRB_NO_TUNE=1``) or not
    applicable; returns only when it did not re-execute (an ``OSError`` runs on untuned)."""
    env = tuned_environment()
    if env is None:
        return
    try:
        os.execve(argv[0], argv, env)
    except OSError:
        pass


def allocator_status(environ: Mapping[str, str] | None = None) -> str:
    """One line saying which CPU allocator setting this process runs under."""
    env = os.environ if environ is None else environ
    if _jemalloc_preloaded(env):
        conf = env.get("MALLOC_CONF", "default decay")
        return f"jemalloc (LD_PRELOAD; MALLOC_CONF={conf})"
    tunables = env.get("GLIBC_TUNABLES", "")
    if all(f"{k}={v}" in tunables for k, v in GLIBC_MALLOC_TUNABLES.items()):
        how = "set by bench" if _flag(env, TUNED_FLAG) else "set by the user"
        return f"glibc malloc, tuned ({how}: mmap_max=0, trim_threshold=1e11, top_pad=1 GiB)"
    if _flag(env, OPT_OUT):
        return "default allocator (PCRB_NO_TUNE=1)"
    if not _is_glibc_linux():
        return f"default allocator ({platform.system()} / {platform.libc_ver()[0] or 'non-glibc'})"
    return "glibc malloc, untuned (start through `bench` / `python -m benchmark` to tune it)"


def package_versions() -> dict[str, str]:
    """Versions of Python, the project and its main dependencies, without importing them."""
    out = {"python": platform.python_version()}
    for dist in ("pcrb", "torch", "torchvision", "open_clip_torch", "numpy", "scipy", "pandas", "h5py",
                 "safetensors", "rich", "pyyaml"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = "not installed"
    return out


def resolve_device(spec: str = "auto") -> Any:
    """``auto`` -> CUDA when available else CPU; ``cpu``, ``cuda``, ``cuda:<i>`` validated.

    Returns a ``torch.device``; an unknown or unavailable device raises ``DeviceError`` naming the fix.
    """
    import torch

    spec = (spec or "auto").strip().lower()
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except RuntimeError as err:
        raise DeviceError(f"unknown device '{spec}': use auto, cpu, cuda or cuda:<index>") from err
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(
                f"device '{spec}' requested but this torch build sees no CUDA GPU "
                f"(torch {torch.__version__}); use --device cpu or --device auto"
            )
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise DeviceError(f"device '{spec}' does not exist: {count} CUDA device(s) visible (0..{count - 1})")
    elif device.type != "cpu":
        raise DeviceError(f"unsupported device '{spec}': use auto, cpu, cuda or cuda:<index>")
    return device
