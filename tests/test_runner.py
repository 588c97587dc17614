"""End to end: `bench run` in the smoke profile, resume after a kill, the Python API."""
from __future__ import annotations

import doctest
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from benchmark.store import VOLATILE_COLUMNS, ResultStore

SELECTION = ["--profile", "smoke", "--defense", "none,sor,srs", "--attack", "pgd,drop-100",
             "--set", "defenses.srs.num_drop=64", "--no-progress"]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("pcrb-cache")


def bench(args, cache_dir, env=None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PCRB_CACHE_DIR": str(cache_dir), "PCRB_NO_TUNE": "1", "COLUMNS": "200", **(env or {})}
    return subprocess.run([sys.executable, "-m", "benchmark", *args], capture_output=True, text=True, env=env,
                          timeout=600)


def stable(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.drop(columns=list(VOLATILE_COLUMNS)).reset_index(drop=True)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, cache_dir):
    out = tmp_path_factory.mktemp("reference")
    proc = bench(["run", *SELECTION, "--out", str(out)], cache_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, proc


def test_bench_run_writes_rows_and_prints_the_same_table(reference):
    out, proc = reference
    frame = ResultStore(out).read("synthshapes")
    assert len(frame) == 3 * 3  # (clean + 2 attacks) x 3 defenses
    assert set(frame["status"]) == {"ok"}
    assert set(frame["defense"]) == {"none", "sor", "srs"}
    assert (frame["ci_low"] <= frame["accuracy"]).all() and (frame["accuracy"] <= frame["ci_high"]).all()
    assert list((out / "runs").glob("*.json"))
    for _, r in frame.iterrows():  # every accuracy is in the printed table
        assert f"{100 * r['accuracy']:.1f} ±" in proc.stdout
    assert "worst case" in proc.stdout and "mean over attacks" in proc.stdout


def test_kill_and_resume_finishes_without_recomputing(tmp_path, cache_dir, reference):
    out = tmp_path / "resumed"
    plugins = str(Path(__file__).resolve().parent / "plugins")
    killed = bench(["run", *SELECTION, "--out", str(out), "--plugin", "kill_after_cells"], cache_dir,
                   env={"PCRB_TEST_KILL_AFTER_CELLS": "4",
                        "PYTHONPATH": os.pathsep.join(filter(None, [plugins, os.environ.get("PYTHONPATH")]))})
    assert killed.returncode == -9
    partial = ResultStore(out).read("synthshapes")
    assert len(partial) == 4
    finished = dict(zip(partial["defense"] + "/" + partial["attack"], partial["timestamp"]))
    proc = bench(["run", *SELECTION, "--out", str(out)], cache_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    final = ResultStore(out).read("synthshapes")
    assert len(final) == 9 and final["run_id"].nunique() == 2
    for cell, stamp in finished.items():  # finished cells are kept, not recomputed
        assert final.loc[final["defense"] + "/" + final["attack"] == cell, "timestamp"].iloc[0] == stamp
    pd.testing.assert_frame_equal(stable(final), stable(ResultStore(reference[0]).read("synthshapes")))


def test_same_seed_same_rows(tmp_path, cache_dir, reference):
    proc = bench(["run", *SELECTION, "--out", str(tmp_path), "--force"], cache_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    pd.testing.assert_frame_equal(stable(ResultStore(tmp_path).read("synthshapes")),
                                  stable(ResultStore(reference[0]).read("synthshapes")))


def test_unknown_defense_lists_close_matches(tmp_path, cache_dir):
    proc = bench(["run", "--profile", "smoke", "--defense", "sorr", "--out", str(tmp_path)], cache_dir)
    assert proc.returncode == 2
    assert "unknown defense 'sorr'" in proc.stderr and "'sor'" in proc.stderr


def test_failed_cell_is_recorded_and_others_finish(tmp_path, cache_dir, reference):
    # srs dropping 200 of 256 points leaves too few for the student after drop-100: that cell fails
    proc = bench(["run", "--profile", "smoke", "--defense", "none,srs", "--attack", "drop-100", "--set",
                  "defenses.srs.num_drop=200", "--out", str(tmp_path), "--no-progress"], cache_dir)
    assert proc.returncode == 1
    frame = ResultStore(tmp_path).read("synthshapes")
    failed = frame[frame["status"] == "failed"]
    assert len(failed) >= 1 and failed["error"].str.contains("points").all()
    assert (frame[frame["defense"] == "none"]["status"] == "ok").all()


def test_api_docstring_example(tmp_path, cache_dir, monkeypatch, reference):
    import benchmark.api as api

    monkeypatch.setenv("PCRB_CACHE_DIR", str(cache_dir))
    test = doctest.DocTestParser().get_doctest(api.__doc__, {"tmp": str(tmp_path)}, "benchmark.api", "api.py", 0)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    runner.run(test)
    assert runner.failures == 0 and runner.tries >= 3


def test_a_rerun_with_other_parameters_keeps_the_earlier_row_as_a_labelled_variant(tmp_path, cache_dir, reference):
    import shutil

    out = tmp_path / "out"
    shutil.copytree(reference[0], out)
    before = ResultStore(out).read("synthshapes")
    args = ["run", "--profile", "smoke", "--defense", "sor", "--attack", "pgd", "--set", "defenses.sor.k=3",
            "--no-progress", "--out", str(out)]
    proc = bench(args, cache_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "replaced" not in proc.stderr  # only none's rows are the same cells as before: resumed
    after = ResultStore(out).read("synthshapes")
    sor = after[after["defense"] == "sor"]
    assert set(sor["defense_variant"]) == {"", "k=3"} and len(after) == len(before) + 2  # clean + pgd
    kept = after[~((after["defense"] == "sor") & (after["defense_variant"] == "k=3"))].reset_index(drop=True)
    pd.testing.assert_frame_equal(stable(kept), stable(before))
    assert "sor [k=3]" in proc.stdout
    board = tmp_path / "board.md"
    done = bench(["leaderboard", "--results", str(out), "--out", str(board)], cache_dir)
    assert done.returncode == 0, done.stderr
    text = board.read_text()
    assert "**sor [k=3]**" in text and "**sor**" in text
    # the same parameters again, forced: the run says it replaced those rows
    forced = bench([*args, "--force"], cache_dir)
    assert forced.returncode == 0, forced.stderr[-3000:]
    said = " ".join(forced.stderr.split())
    assert "replaced 4 stored row(s) of the same cells" in said and "4 with identical parameters" in said
    assert len(ResultStore(out).read("synthshapes")) == len(after)
