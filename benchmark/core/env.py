"""The process environment: devices, library versions and the CPU allocator setting.

``choose_threads`` is the launcher's intra-op thread count: what the user set (``--threads``,
``OMP_NUM_THREADS``), else the CPUs this process may use minus those other processes keep
busy, so that two jobs on a small machine do not fight over the same cores.

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
import statistics
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "GLIBC_MALLOC_TUNABLES",
    "DeviceError",
    "ThreadChoice",
    "allocator_status",
    "apply_thread_choice",
    "busy_cpus",
    "choose_threads",
    "package_versions",
    "reexec_tuned",
    "resolve_device",
    "thread_choice",
    "tuned_environment",
    "usable_cpus",
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
    from benchmark.core.version import pcrb_version

    out = {"python": platform.python_version(), "pcrb": pcrb_version()}  # the one version number
    for dist in ("torch", "torchvision", "open_clip_torch", "numpy", "scipy", "pandas", "h5py",
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


# ---------------------------------------------------------------------------------------------
# intra-op threads
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ThreadChoice:
    """The intra-op thread count a ``bench`` process runs with, and why (for ``bench info``)."""

    threads: int
    reason: str


_CHOICE: ThreadChoice | None = None


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask, e.g. a Slurm or taskset allotment)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


def busy_cpus(samples: int = 5, interval: float = 0.02, loadavg: str = "/proc/loadavg") -> float:
    """About how many CPUs other processes keep busy right now.

    The median over ``samples`` readings, ``interval`` seconds apart, of the runnable tasks
    the kernel reports (``/proc/loadavg``'s fourth field, this process excluded); where that
    file does not exist, the one-minute load average.
    """
    readings = []
    for i in range(samples):
        try:
            with open(loadavg) as fh:
                running = int(fh.read().split()[3].split("/")[0])
        except (OSError, ValueError, IndexError):
            try:
                return float(os.getloadavg()[0])
            except (AttributeError, OSError):
                return 0.0
        readings.append(max(0, running - 1))
        if i + 1 < samples:
            time.sleep(interval)
    return float(statistics.median(readings))


def choose_threads(requested: int | None = None, environ: Mapping[str, str] | None = None, *,
                   cpus: int | None = None, busy: float | None = None) -> ThreadChoice:
    """How many intra-op threads to use: ``requested`` (``--threads``), else ``OMP_NUM_THREADS``,
    else the usable CPUs minus the busy ones (at least 1). ``cpus`` / ``busy`` default to
    :func:`usable_cpus` / :func:`busy_cpus` (given here in tests)."""
    env = os.environ if environ is None else environ
    if requested is not None:
        if requested < 1:
            raise ValueError(f"--threads must be >= 1, got {requested}")
        return ThreadChoice(int(requested), "--threads")
    given = env.get("OMP_NUM_THREADS", "").strip()
    if given.isdigit() and int(given) >= 1:
        return ThreadChoice(int(given), "OMP_NUM_THREADS")
    cpus = usable_cpus() if cpus is None else cpus
    busy = busy_cpus() if busy is None else busy
    threads = max(1, min(cpus, cpus - round(busy)))
    why = f"{cpus} usable CPU{'s' if cpus != 1 else ''}, ~{busy:g} kept busy by other processes"
    return ThreadChoice(threads, why + ("" if threads == cpus else "; set --threads to override"))


def apply_thread_choice(requested: int | None = None) -> ThreadChoice:
    """Choose (:func:`choose_threads`) and set torch's intra-op thread count for this process."""
    global _CHOICE
    import torch

    choice = choose_threads(requested)
    if choice.threads != torch.get_num_threads():
        torch.set_num_threads(choice.threads)
    _CHOICE = choice
    return choice


def thread_choice() -> ThreadChoice | None:
    """The choice the ``bench`` launcher made for this process (None in library use)."""
    return _CHOICE
