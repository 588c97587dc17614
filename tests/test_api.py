"""Specification of the library API (``benchmark.api``): each ``bench`` command is one call,
with the same caches and the same result files as the command.

One tiny smoke grid is run once through the command line (a real ``python -m benchmark``
process with its own cache); the calls here then share that cache, so they reuse its
weights and adversarial examples exactly as a second ``bench`` command would.
"""
from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmark import api
from benchmark.core.version import _PYPROJECT, pcrb_version
from benchmark.store import VOLATILE_COLUMNS, ResultStore

ROOT = Path(__file__).resolve().parents[1]

#: The smoke profile cut down to seconds: 3 classes, 8 test clouds of 128 points, 3 epochs.
OVERRIDES = ["batch_size=4", "datasets.synthshapes.classes=[chair, airplane, lamp]",
             "datasets.synthshapes.train_size=48", "datasets.synthshapes.test_size=8",
             "training.pointnet-lite.epochs=3", "dataset.num_points=128", "attacks.pgd.steps=3"]
SELECTION = {"victim": "pointnet-lite", "defense": "none,sor", "attack": "pgd,drop-100", "limit": 8, "seed": 3}
CLI_ARGS = ["--profile", "smoke", "--victim", "pointnet-lite", "--defense", "none,sor", "--attack", "pgd,drop-100",
            "--limit", "8", "--seed", "3", "--no-progress", *(a for o in OVERRIDES for a in ("--set", o))]


def bench(args: list[str], cache: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``python -m benchmark ARGS`` with ``cache`` as its cache, one thread, no allocator re-exec."""
    env = {**os.environ, "PCRB_CACHE_DIR": str(cache), "PCRB_NO_TUNE": "1", "OMP_NUM_THREADS": "1", "COLUMNS": "200",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run([sys.executable, "-m", "benchmark", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          check=False, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def grid(tmp_path_factory) -> dict[str, Path]:
    """``bench run`` of the tiny grid: its results folder and cache."""
    root = tmp_path_factory.mktemp("api")
    bench(["run", *CLI_ARGS, "--out", str(root / "cli")], root / "cache", root)
    return {"root": root, "cli": root / "cli", "cache": root / "cache"}


def config(grid: dict[str, Path], out: str, **fields) -> api.RunConfig:
    return api.configure("smoke", overrides=OVERRIDES, out_dir=str(grid["root"] / out),
                         cache_dir=str(grid["cache"]), **{**SELECTION, **fields})


def stable(out: Path) -> list[dict]:
    frame = ResultStore(out).read("synthshapes").drop(columns=list(VOLATILE_COLUMNS))
    return frame.astype(str).to_dict("records")


# ------------------------------------------------------------------------------------------ configuration
def test_configure_resolves_what_the_command_line_resolves(grid):
    cfg = config(grid, "unused")
    proc = bench(["run", *CLI_ARGS, "--print-config"], grid["cache"], grid["root"])
    assert f"# config hash: {cfg.hash()}" in proc.stdout


def test_with_overrides_changes_only_the_overridden_key():
    cfg = api.configure("smoke", overrides=["limit=null", "attacks.pgd.steps=3"])
    assert api.with_overrides(cfg, []).to_dict() == cfg.to_dict()  # a round trip keeps even explicit nulls
    swept = api.with_overrides(cfg, ["attacks.pgd.budget=0.5"])
    assert swept.attacks["pgd"] == {**cfg.attacks["pgd"], "budget": 0.5} and swept.limit is None


# ------------------------------------------------------------------------------------------ bench run
def test_bench_run_draws_the_figures_beside_the_results(grid):
    pngs = sorted(p.name for p in (grid["cli"] / "plots").glob("*.png"))
    assert any(name.startswith("accuracy_synthshapes_transfer") for name in pngs), pngs
    assert any(name.startswith("examples_synthshapes") for name in pngs), pngs


def test_run_writes_the_rows_the_command_writes(grid):
    outcome = api.run(config(grid, "api"), progress=False)
    assert stable(grid["root"] / "api") == stable(grid["cli"])
    assert len(outcome.rows) == 2 * 3 and set(outcome.rows["status"]) == {"ok"} and not outcome.failures
    assert outcome.results == grid["root"] / "api" / "synthshapes.csv"
    assert sorted(p.name for p in outcome.plots) == sorted(p.name for p in (grid["cli"] / "plots").glob("*.png"))
    assert all(p.is_file() for p in outcome.plots)


def test_run_without_plots_draws_nothing(grid):
    outcome = api.run(config(grid, "no-plots"), progress=False, plots=False)
    assert outcome.plots == [] and not (grid["root"] / "no-plots" / "plots").exists()
    assert len(outcome.stored()) == 2 * 3


def test_the_command_without_plots_draws_nothing(grid):
    bench(["run", *CLI_ARGS, "--no-plots", "--out", str(grid["root"] / "cli-no-plots")], grid["cache"], grid["root"])
    assert not (grid["root"] / "cli-no-plots" / "plots").exists()
    assert stable(grid["root"] / "cli-no-plots") == stable(grid["cli"])


# ------------------------------------------------------------------------------------------ train / attack
def test_train_loads_the_victim_the_run_trained(grid):
    report = api.train("pointnet-lite", config(grid, "unused"), progress=False)
    (row,) = report.rows.to_dict("records")
    assert row["source"] == "cache" and row["model"] == "pointnet-lite"
    assert {row["weights_sha256"]} == set(ResultStore(grid["cli"]).read()["victim_hash"])


def test_attack_reuses_the_examples_the_run_crafted(grid):
    report = api.attack("pgd,drop-100", config(grid, "unused"), progress=False)
    rows = ResultStore(grid["cli"]).read()
    assert report.model == "pointnet-lite" and report.n == 8
    for r in report.rows.to_dict("records"):
        assert r["source"] == "cache", r  # the transfer protocol's entries: same cache keys
        cell = rows[(rows["attack"] == r["attack"]) & (rows["defense"] == "none")].iloc[0]
        assert r["success"] == pytest.approx(cell["attack_success"], abs=1e-6)
        assert r["accuracy"] == pytest.approx(cell["accuracy"], abs=1e-6)


# ------------------------------------------------------------------------------------------ results folders
def test_leaderboard_writes_the_bytes_the_command_writes(grid):
    bench(["leaderboard", "--results", str(grid["cli"]), "--out", str(grid["root"] / "cli.md")], grid["cache"],
          grid["root"])
    path = api.leaderboard(grid["cli"], grid["root"] / "api.md")
    assert path.read_bytes() == (grid["root"] / "cli.md").read_bytes()


def test_plot_draws_into_the_folder_it_is_given(grid, tmp_path):
    paths = api.plot(grid["cli"], tmp_path / "figures", cache_dir=grid["cache"], samples=0)
    assert paths and all(p.parent == tmp_path / "figures" and p.suffix == ".png" for p in paths)


# ------------------------------------------------------------------------------------------ one version number
def test_the_version_is_read_from_the_installed_metadata_and_every_row_records_it(grid):
    assert pcrb_version() == importlib.metadata.version("pcrb")
    assert set(ResultStore(grid["cli"]).read()["pcrb_version"].astype(str)) == {pcrb_version()}
    assert ("pcrb", pcrb_version()) in api.environment()
    proc = bench(["--version"], grid["cache"], grid["root"])
    assert proc.stdout.strip() == f"pcrb {pcrb_version()}"


def test_without_installed_metadata_the_version_comes_from_pyproject(monkeypatch):
    tomllib = pytest.importorskip("tomllib")

    def not_installed(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", not_installed)
    pcrb_version.cache_clear()
    try:
        assert pcrb_version() == tomllib.loads(_PYPROJECT.read_text())["project"]["version"]
    finally:
        pcrb_version.cache_clear()
