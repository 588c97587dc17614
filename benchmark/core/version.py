"""The one version number of PCRB: ``pyproject.toml``'s ``[project] version``.

Read from the installed distribution's metadata (what ``pip install`` recorded from
``pyproject.toml``); in a source checkout that is not installed, parsed from the
``pyproject.toml`` beside the package. Result rows, run records, cached weights' metadata,
``bench --version`` and ``bench info`` all read it from here (through
``benchmark.core.env.package_versions``), so no second copy of the number exists in code.
"""
from __future__ import annotations

import importlib.metadata
import re
from functools import lru_cache
from pathlib import Path

__all__ = ["DISTRIBUTION", "pcrb_version"]

#: The distribution name in ``pyproject.toml``.
DISTRIBUTION = "pcrb"

_PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"


def _from_pyproject(path: Path) -> str | None:
    """``[project] version`` of ``path``, or None when the file or the key is missing."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return None
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10: the one line we need, by pattern
        section = re.search(r"^\[project\]\s*$(.*?)(?=^\[|\Z)", text, re.MULTILINE | re.DOTALL)
        match = section and re.search(r"^version\s*=\s*[\"']([^\"']+)[\"']", section.group(1), re.MULTILINE)
        return match.group(1) if match else None
    try:
        version = tomllib.loads(text).get("project", {}).get("version")
    except tomllib.TOMLDecodeError:
        return None
    return str(version) if version else None


@lru_cache(maxsize=1)
def pcrb_version() -> str:
    """PCRB's version: installed metadata, else the source checkout's ``pyproject.toml``, else
    ``"unknown"`` (never raises)."""
    try:
        return importlib.metadata.version(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return _from_pyproject(_PYPROJECT) or "unknown"
