"""Determinism: the same `bench run` with the same seed, on CPU, in two fresh processes with two
empty caches (so everything is recomputed: data, training, attacks, randomised defenses), gives
byte-identical result rows outside the timing/provenance columns and the same leaderboard.

The helpers here (``TINY_RUN``, ``bench``, :func:`reference_run`) are shared with
``test_faults.py``, whose killed-and-resumed runs must end with the same rows.
"""
from __future__ import annotations

import csv
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmark.cli import main as cli_main
from benchmark.store import COLUMNS, VOLATILE_COLUMNS

ROOT = Path(__file__).resolve().parents[1]

#: A tiny grid: every stage runs (SynthShapes generation, training the victim, crafting in three
#: batches, deterministic and randomised defenses) in a few seconds on one CPU core.
TINY_RUN = [
    "--profile", "smoke", "--victim", "pointnet-lite", "--defense", "none,sor,srs", "--attack", "pgd,drop-100",
    "--limit", "12", "--set", "batch_size=4", "--set", "datasets.synthshapes.classes=[chair, airplane, lamp]",
    "--set", "datasets.synthshapes.train_size=96", "--set", "datasets.synthshapes.test_size=12",
    "--set", "training.pointnet-lite.epochs=10", "--set", "dataset.num_points=128",
    "--set", "defenses.srs.num_drop=8", "--seed", "3", "--no-progress",
]
CELLS = 3 * 3  # (clean + 2 attacks) x 3 defenses


def bench(args: list[str], cache: Path, *, cwd: Path, driver: list[str] | None = None,
          timeout: int = 300) -> subprocess.CompletedProcess[str]:
    """``python -m benchmark ARGS`` (or ``python DRIVER... ARGS``) with its own cache, one thread, no re-exec."""
    env = {**os.environ, "PCRB_CACHE_DIR": str(cache), "PCRB_NO_TUNE": "1", "OMP_NUM_THREADS": "1",
           "COLUMNS": "200", "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    command = [sys.executable, *(driver or ["-m", "benchmark"]), *args]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


_REFERENCE: dict[str, Path] = {}


def reference_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """``(out_dir, cache_dir)`` of one uninterrupted ``TINY_RUN`` from an empty cache (once per session)."""
    if not _REFERENCE:
        root = tmp_path_factory.mktemp("reference-run")
        proc = bench(["run", *TINY_RUN, "--out", str(root / "out")], root / "cache", cwd=root)
        assert proc.returncode == 0, proc.stderr[-3000:]
        _REFERENCE.update(out=root / "out", cache=root / "cache")
    return _REFERENCE["out"], _REFERENCE["cache"]


def stable_rows(out: Path, dataset: str = "synthshapes") -> list[str]:
    """The CSV rows of ``out`` with the volatile columns removed, re-serialised byte for byte."""
    text = (out / f"{dataset}.csv").read_text()
    reader = csv.DictReader(io.StringIO(text))
    keep = [c for c in reader.fieldnames or [] if c not in VOLATILE_COLUMNS]
    lines = []
    for row in reader:
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="\n").writerow([row[c] for c in keep])
        lines.append(buffer.getvalue())
    return [",".join(keep) + "\n", *lines]


def test_the_same_run_twice_gives_byte_identical_rows_and_leaderboard(tmp_path, tmp_path_factory):
    first, _ = reference_run(tmp_path_factory)
    second = tmp_path / "out"
    proc = bench(["run", *TINY_RUN, "--out", str(second)], tmp_path / "cache", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]

    rows_a, rows_b = stable_rows(first), stable_rows(second)
    assert len(rows_a) == CELLS + 1 and set(COLUMNS) - set(VOLATILE_COLUMNS) <= set(rows_a[0].strip().split(","))
    assert rows_a == rows_b
    assert "outcomes" in rows_a[0] and any(":" in line for line in rows_a[1:])  # per-sample outcomes compared too

    boards = []
    for out in (first, second):
        assert cli_main(["leaderboard", "--results", str(out), "--out", str(out / "leaderboard.md")]) == 0
        boards.append((out / "leaderboard.md").read_text())
    assert "## synthshapes · transfer" in boards[0]
    assert boards[0] == boards[1]  # byte-identical: no timing enters the leaderboard
