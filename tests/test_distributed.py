"""Sharded runs: `bench merge` of `--shard i/K` results and a 2-process torchrun equal one process."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from benchmark.distributed import MergeError, ShardInfo, merge_shard_rows, shard_positions
from benchmark.store import VOLATILE_COLUMNS, ResultStore, decode_outcomes, encode_outcomes

#: smoke profile, a small selection; batches of 4 so that 16 clouds make 4 batches to shard
RUN = ["run", "--profile", "smoke", "--victim", "pointnet-lite", "--defense", "none,sor", "--attack", "pgd",
       "--batch-size", "4", "--no-progress", "--device", "cpu"]

#: Means of per-sample float32 values: summed in another order when merged (relative error ~1e-7).
APPROX_COLUMNS = ("l2", "chamfer", "hausdorff", "ci_low", "ci_high", "accuracy", "attack_success")

# The cell hash covers the shard's own sample indices until the Runner hashes the unsharded subset.
SHARD_DEPENDENT = ("cell_hash",)


# ------------------------------------------------------------------------------------------ the merge itself
def test_shard_positions_are_whole_batches_round_robin():
    assert shard_positions(10, 2, 0, 2).tolist() == [0, 1, 4, 5, 8, 9]
    assert shard_positions(10, 2, 1, 2).tolist() == [2, 3, 6, 7]
    assert shard_positions(3, 4, 1, 2).tolist() == []


def _row(outcomes: np.ndarray, **extra) -> dict:
    k = int(outcomes.sum())
    return {"dataset": "d", "profile": "p", "protocol": "transfer", "victim": "v", "source": "v", "defense": "none",
            "attack": "pgd", "seed": 0, "n": outcomes.size, "status": "ok", "correct": k,
            "accuracy": k / outcomes.size, "outcomes": encode_outcomes(outcomes), "attack_success": 0.5,
            "l2": 1.0, "run_id": "r", "timestamp": "t", **extra}


def test_merge_puts_outcomes_back_in_test_order_and_sums_counts():
    truth = np.array([1, 1, 0, 1, 0, 0, 1, 0, 1, 1], dtype=bool)
    rows = [_row(truth[shard_positions(10, 2, i, 2)], l2=float(i + 1)) for i in range(2)]
    (merged,) = merge_shard_rows(rows, [ShardInfo(0, 2, 2), ShardInfo(1, 2, 2)])
    assert merged["n"] == 10 and merged["correct"] == 6 and merged["accuracy"] == 0.6
    assert decode_outcomes(merged["outcomes"]).tolist() == truth.tolist()
    assert merged["l2"] == pytest.approx((6 * 1.0 + 4 * 2.0) / 10)  # weighted by the shards' sizes
    assert merged["attack_success"] == 0.5


def test_merge_reports_a_missing_shard():
    rows = [_row(np.ones(6, dtype=bool))]
    with pytest.raises(MergeError, match=r"shard\(s\) 1/2 missing"):
        merge_shard_rows(rows, [ShardInfo(0, 2, 2)])


def test_merge_reports_shards_of_different_batch_sizes():
    rows = [_row(np.ones(5, dtype=bool)), _row(np.ones(5, dtype=bool))]  # batches of 4 give 6 + 4
    with pytest.raises(MergeError, match="same --limit and --batch-size"):
        merge_shard_rows(rows, [ShardInfo(0, 2, 4), ShardInfo(1, 2, 4)])


# ------------------------------------------------------------------------------------------ end to end
@pytest.fixture(scope="session")
def bench_cache(tmp_path_factory) -> Path:
    """One cache for the session's `bench` subprocesses, so the smoke models train once."""
    path = tmp_path_factory.getbasetemp() / "pcrb-shared-cache"
    path.mkdir(exist_ok=True)
    return path


def _env(cache: Path) -> dict[str, str]:
    return {**os.environ, "PCRB_CACHE_DIR": str(cache), "PCRB_NO_TUNE": "1", "OMP_NUM_THREADS": "1"}


def bench(args: list[str], cache: Path) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "benchmark", *args], check=False, capture_output=True, text=True,
                          env=_env(cache), timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def single(tmp_path_factory, bench_cache) -> pd.DataFrame:
    """The rows of one process running the whole selection."""
    out = tmp_path_factory.mktemp("single")
    bench([*RUN, "--out", str(out)], bench_cache)
    return ResultStore(out).read()


def assert_same_rows(got: pd.DataFrame, expected: pd.DataFrame) -> None:
    drop = [*VOLATILE_COLUMNS, *SHARD_DEPENDENT]
    got, expected = got.drop(columns=drop), expected.drop(columns=drop)
    assert len(got) == len(expected) == 4
    for column in expected.columns:
        if column in APPROX_COLUMNS:
            np.testing.assert_allclose(got[column].astype(float), expected[column].astype(float), rtol=1e-5,
                                       err_msg=column)
        else:
            assert got[column].astype(str).tolist() == expected[column].astype(str).tolist(), column


def test_bench_merge_of_two_shards_equals_a_single_process_run(tmp_path, bench_cache, single):
    for i in (0, 1):
        bench([*RUN, "--shard", f"{i}/2", "--out", str(tmp_path / f"shard{i}")], bench_cache)
    assert set(ResultStore(tmp_path / "shard0").read()["n"]) == {8}
    proc = bench(["merge", "--results", str(tmp_path / "shard0"), str(tmp_path / "shard1"), "--out",
                  str(tmp_path / "merged")], bench_cache)
    assert "merged 4 rows" in proc.stdout
    assert_same_rows(ResultStore(tmp_path / "merged").read(), single)


def test_bench_merge_without_the_run_records_says_what_to_copy(tmp_path, bench_cache):
    shard = tmp_path / "shard0"
    shard.mkdir()
    rows = [_row(np.ones(6, dtype=bool), run_id="gone")]
    ResultStore(shard).write(rows)
    proc = subprocess.run([sys.executable, "-m", "benchmark", "merge", "--results", str(shard), "--out",
                           str(tmp_path / "merged")], check=False, capture_output=True, text=True, env=_env(bench_cache))
    assert proc.returncode == 2
    assert "copy each shard's runs/ folder" in proc.stderr


@pytest.mark.skipif(shutil.which("torchrun", path=str(Path(sys.executable).parent)) is None,
                    reason="torchrun is not installed beside this Python")
def test_torchrun_two_processes_equal_a_single_process_run(tmp_path, bench_cache, single):
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    out = tmp_path / "dist"
    proc = subprocess.run([torchrun, "--standalone", "--nproc-per-node", "2", "-m", "benchmark", *RUN,
                           "--out", str(out)], check=False, capture_output=True, text=True, env=_env(bench_cache), timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = ResultStore(out).read()
    assert_same_rows(got, single)
    assert "mean over attacks" in proc.stdout  # rank 0 printed the table, once
    assert proc.stdout.count("mean over attacks") == 1
    assert not (out / ".shards").exists()  # the ranks' working folders are removed after the merge
    assert len(list((out / "runs").glob("*.json"))) == 1
