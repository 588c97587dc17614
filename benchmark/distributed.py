"""Sharded runs: ``bench merge`` of ``--shard i/K`` results, and ``torchrun`` launches.

A shard ``i/K`` of a run evaluates whole batches ``i, i+K, i+2K, ...`` (of ``batch_size``
clouds) of the test subset (``Runner(shard=(i, K))``), so randomised defenses draw per
batch exactly what one process draws. Merging the K shard rows of a cell therefore gives
the single-process row: summed ``correct``, recomputed accuracy and Wilson interval,
per-sample ``outcomes`` put back into the subset's order, sample-weighted attack success
and distances.

- ``merge_shard_rows(rows, shards)``: the pure merge (rows + each row's shard) -> rows.
- ``merge_results([dir, ...], out)``: ``bench merge``; a row's shard and batch size come from
  its columns when the store has them, else from its run record (``runs/<run_id>.json``).
- ``DistributedRunner(cfg)``: ``torchrun --nproc-per-node K -m benchmark run ...``. Each rank
  runs shard ``(rank, K)`` into a working folder of its own
  (``<out>/.shards/<config hash>-of<K>/rank<r>``, kept until the merge succeeds so a killed
  launch resumes), rank 0 gathers every rank's rows (``all_gather_object``), merges them
  and writes them into the real results store. Rank 0 trains/prepares the victim,
  surrogate, defenses and helper models first while the others wait, so nothing is
  trained twice. gloo on CPU, NCCL on CUDA (each rank on ``cuda:<LOCAL_RANK>``).
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import math
import os
import shutil
import traceback
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from benchmark.core.config import config_hash
from benchmark.leaderboard import read_runs
from benchmark.store import (
    KEY_COLUMNS,
    ResultStore,
    decode_distances,
    decode_outcomes,
    encode_distances,
    encode_outcomes,
    wilson_interval,
)

__all__ = [
    "DistributedRunner",
    "MergeError",
    "ShardInfo",
    "launched",
    "merge_results",
    "merge_shard_rows",
    "shard_positions",
]

#: Key columns that differ between the shards of one cell.
_SHARD_VARYING = ("n", "shard")

#: Environment variable: seconds a rank waits for the others (default 6 hours: rank 0 may train).
TIMEOUT_ENV = "PCRB_DIST_TIMEOUT"


class MergeError(ValueError):
    """Shard rows that cannot be merged (missing shard, inconsistent sizes, unknown shard)."""


@dataclass(frozen=True)
class ShardInfo:
    """Which part of the test subset a row covers: shard ``index`` of ``count``, batches of ``batch_size``."""

    index: int
    count: int
    batch_size: int


def shard_positions(total: int, batch_size: int, index: int, count: int) -> np.ndarray:
    """Positions (in the subset of ``total`` clouds) that shard ``index/count`` holds, in its order:
    batches ``index, index+count, ...`` of ``batch_size`` consecutive clouds (as ``Runner`` picks them)."""
    starts = list(range(0, total, batch_size))[index::count]
    if not starts:
        return np.zeros(0, dtype=np.int64)
    return np.concatenate([np.arange(s, min(s + batch_size, total)) for s in starts])


def _finite(value: Any) -> bool:
    try:
        return value is not None and not pd.isna(value) and math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def _cell_name(row: Mapping[str, Any]) -> str:
    return "/".join(str(row.get(c, "")) for c in ("dataset", "protocol", "defense", "attack"))


def _weighted_mean(values: Sequence[Any], weights: Sequence[int]) -> float:
    pairs = [(float(v), w) for v, w in zip(values, weights) if _finite(v)]
    total = sum(w for _, w in pairs)
    return sum(v * w for v, w in pairs) / total if total else math.nan


def _merge_cell(parts: list[tuple[Mapping[str, Any], ShardInfo]]) -> dict[str, Any]:
    """One single-process row from the K shard rows of a cell (sorted by shard index)."""
    parts = sorted(parts, key=lambda p: p[1].index)
    count, batch = parts[0][1].count, parts[0][1].batch_size
    sizes = [int(r["n"]) for r, _ in parts]
    total = sum(sizes)
    name = _cell_name(parts[0][0])
    for (_row, info), size in zip(parts, sizes):
        expected = len(shard_positions(total, batch, info.index, count))
        if expected != size:
            raise MergeError(f"cell {name}: shard {info.index}/{count} holds {size} clouds, but {count} shards of "
                             f"batches of {batch} over {total} clouds give it {expected}; were the shards run with "
                             "the same --limit and --batch-size?")
    for column in ("defense_params", "attack_params", "dataset_fingerprint", "victim_hash", "config_hash"):
        values = {str(r.get(column)) for r, _ in parts if r.get(column) is not None and not pd.isna(r.get(column))}
        if len(values) > 1:
            raise MergeError(f"cell {name}: the shards disagree on {column} ({sorted(values)}); they are not "
                             "shards of one run")
    first = parts[0][0]
    out: dict[str, Any] = dict(first)
    out["n"] = total
    if "shard" in out:
        out["shard"] = ""
    failed = [(r, i) for r, i in parts if r.get("status") != "ok"]
    run_ids = [str(r.get("run_id")) for r, _ in parts]
    out["run_id"] = run_ids[0]
    hashes = sorted({str(r.get("cell_hash")) for r, _ in parts})
    out["cell_hash"] = hashes[0] if len(hashes) == 1 else config_hash({"shards": hashes})
    timestamps = sorted(str(r.get("timestamp")) for r, _ in parts if r.get("timestamp"))
    out["timestamp"] = timestamps[-1] if timestamps else out.get("timestamp")
    for column in ("device", "git_commit", "pcrb_version", "torch_version"):
        values = sorted({str(r.get(column)) for r, _ in parts if isinstance(r.get(column), str) and r.get(column)})
        out[column] = ",".join(values) if values else first.get(column)
    seconds = {c: [r.get(c) for r, _ in parts] for c in ("seconds_attack", "seconds_eval", "seconds_defense")}
    out["seconds_attack"] = round(sum(float(v) for v in seconds["seconds_attack"] if _finite(v)), 3) \
        if any(_finite(v) for v in seconds["seconds_attack"]) else math.nan
    out["seconds_eval"] = round(sum(float(v) for v in seconds["seconds_eval"] if _finite(v)), 3)
    out["seconds_defense"] = max((float(v) for v in seconds["seconds_defense"] if _finite(v)), default=math.nan)
    out["cost_ratio"] = _weighted_mean([r.get("cost_ratio") for r, _ in parts], sizes)
    if failed:
        out.update(status="failed", correct=None, accuracy=math.nan, ci_low=math.nan, ci_high=math.nan,
                   outcomes=None, distances=None, attack_success=math.nan, l2=math.nan, chamfer=math.nan,
                   hausdorff=math.nan)
        out["error"] = "; ".join(f"shard {i.index}/{i.count}: {r.get('error') or 'failed'}" for r, i in failed)
        return out
    correct = sum(int(r["correct"]) for r, _ in parts)
    low, high = wilson_interval(correct, total)
    out.update(status="ok", error="", correct=correct, accuracy=correct / total, ci_low=low, ci_high=high)
    if all(isinstance(r.get("outcomes"), str) and r.get("outcomes") for r, _ in parts):
        merged = np.zeros(total, dtype=bool)
        for (row, info), size in zip(parts, sizes):
            bits = decode_outcomes(row["outcomes"])
            if bits.size != size:
                raise MergeError(f"cell {name}: shard {info.index}/{count} has {bits.size} outcomes for n={size}")
            merged[shard_positions(total, batch, info.index, count)] = bits
        out["outcomes"] = encode_outcomes(merged)
    else:
        out["outcomes"] = None
    if all(isinstance(r.get("distances"), str) and r.get("distances") for r, _ in parts):
        distances = np.full(total, np.inf)
        for (row, info), _size in zip(parts, sizes):
            distances[shard_positions(total, batch, info.index, count)] = decode_distances(row["distances"])
        out["distances"] = encode_distances(distances)
    else:
        out["distances"] = None
    rates = [r.get("attack_success") for r, _ in parts]
    if all(_finite(v) for v in rates):
        # a float32 mean of per-sample successes, as the single process computes it
        hits = sum(round(float(v) * s) for v, s in zip(rates, sizes))
        out["attack_success"] = float(np.float32(hits) / np.float32(total))
    else:
        out["attack_success"] = math.nan
    for column in ("l2", "chamfer", "hausdorff"):
        out[column] = _weighted_mean([r.get(column) for r, _ in parts], sizes)
    return out


def merge_shard_rows(rows: Iterable[Mapping[str, Any]], shards: Iterable[ShardInfo]) -> list[dict[str, Any]]:
    """Merge shard rows into single-process rows.

    ``rows[j]`` covers shard ``shards[j]``. Rows of one cell (same key but ``n``/``shard``)
    and the same shard count and batch size are merged when their shards are exactly
    ``0..K-1``; rows with ``count == 1`` pass through. A shard present twice keeps its ``ok``
    row with the latest timestamp. Raises :class:`MergeError` for a missing shard or
    inconsistent sizes. The result is sorted by key.
    """
    groups: dict[tuple[Any, ...], list[tuple[Mapping[str, Any], ShardInfo]]] = {}
    key_columns = [c for c in KEY_COLUMNS if c not in _SHARD_VARYING]
    for row, info in zip(rows, shards):
        key = tuple(str(row.get(c)) for c in key_columns) + (info.count, info.batch_size if info.count > 1 else 0)
        groups.setdefault(key, []).append((row, info))
    merged = []
    for _key, parts in sorted(groups.items(), key=lambda kv: kv[0]):
        count = parts[0][1].count
        if count == 1:
            merged.extend(dict(r) for r, _ in parts)
            continue
        by_index: dict[int, tuple[Mapping[str, Any], ShardInfo]] = {}
        for row, info in parts:
            old = by_index.get(info.index)
            rank = (row.get("status") == "ok", str(row.get("timestamp")))
            if old is None or rank > (old[0].get("status") == "ok", str(old[0].get("timestamp"))):
                by_index[info.index] = (row, info)
        missing = sorted(set(range(count)) - set(by_index))
        if missing:
            raise MergeError(f"cell {_cell_name(parts[0][0])}: shard(s) {', '.join(f'{i}/{count}' for i in missing)} "
                             f"missing; pass every shard's results folder (bench merge --results DIR1 DIR2 ...)")
        merged.append(_merge_cell(list(by_index.values())))
    return merged


# ---------------------------------------------------------------------------------------------
# bench merge
# ---------------------------------------------------------------------------------------------
def _parse_shard_text(text: Any) -> tuple[int, int] | None:
    if isinstance(text, str) and "/" in text:
        i, k = text.split("/", 1)
        return int(i), int(k)
    return None


def _shard_of(row: Mapping[str, Any], runs: Mapping[str, Mapping[str, Any]], where: Path) -> ShardInfo:
    """A row's shard: its ``shard``/``batch_size`` columns when the store has them, else its run record."""
    from_column = _parse_shard_text(row.get("shard"))
    batch = row.get("batch_size")
    meta = runs.get(str(row.get("run_id")))
    if from_column is not None and _finite(batch):
        return ShardInfo(from_column[0], from_column[1], int(batch))
    if "shard" in row and not row.get("shard") and _finite(batch):
        return ShardInfo(0, 1, int(batch))
    if meta is None:
        raise MergeError(f"row {_cell_name(row)} of {where} names run {row.get('run_id')!r}, whose record "
                         f"{where / 'runs' / (str(row.get('run_id')) + '.json')} is missing; it says which shard "
                         "the row holds: copy each shard's runs/ folder along with its CSV")
    index, count = (int(v) for v in meta.get("shard", [0, 1]))
    return ShardInfo(index, count, int(meta["config"]["batch_size"]))


def merge_results(result_dirs: Sequence[str | os.PathLike[str]], out_dir: str | os.PathLike[str]) -> pd.DataFrame:
    """``bench merge``: combine the shard rows of ``result_dirs`` into single-process rows in
    ``out_dir`` (its results store; existing rows with the same key are replaced). The run
    records of every merged row are copied to ``out_dir/runs`` with a ``merge-<hash>.json``
    record naming the sources. Returns the merged rows."""
    rows: list[dict[str, Any]] = []
    shards: list[ShardInfo] = []
    metas: dict[str, Mapping[str, Any]] = {}
    sources: dict[str, list[str]] = {}
    for folder in result_dirs:
        folder = Path(folder)
        if not folder.is_dir():
            raise FileNotFoundError(f"results folder '{folder}' does not exist")
        runs = read_runs(folder)
        frame = ResultStore(folder).read()
        if frame.empty:
            raise MergeError(f"results folder '{folder}' holds no result rows (*.csv)")
        records = frame.astype(object).where(frame.notna(), None).to_dict("records")
        for row in records:
            shards.append(_shard_of(row, runs, folder))
            rows.append(row)
            if str(row.get("run_id")) in runs:
                metas[str(row["run_id"])] = runs[str(row["run_id"])]
        sources[str(folder)] = sorted({str(r.get("run_id")) for r in records})
    merged = merge_shard_rows(rows, shards)
    store = ResultStore(out_dir)
    store.write(merged)
    for run_id in sorted(metas):
        store.write_run(run_id, metas[run_id])
    record = {"merged_from": sources, "rows": len(merged),
              "run_ids": sorted({r for ids in sources.values() for r in ids})}
    store.write_run(f"merge-{config_hash(record['run_ids'])}", {"run_id": f"merge-{config_hash(record['run_ids'])}",
                                                                   **record})
    return pd.DataFrame(merged)


# ---------------------------------------------------------------------------------------------
# torchrun
# ---------------------------------------------------------------------------------------------
def launched() -> bool:
    """True inside a multi-process ``torchrun`` launch (``WORLD_SIZE`` > 1)."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1")) > 1
    except ValueError:
        return False


class DistributedRunner:
    """``Runner`` for a ``torchrun`` launch: same arguments and ``run()``; rank 0's ``run()``
    returns the merged rows (also written to ``cfg.out_dir``), the other ranks' ``None``.

    Attributes after ``run()``: ``rank``, ``world_size``, ``run_id`` (rank 0's), ``store`` (the
    real results store), ``failures`` (failed cells; on rank 0 those of every rank).
    """

    def __init__(self, cfg: Any, *, console: Any = None, progress: bool = True, fail_fast: bool = False,
                 force: bool = False) -> None:
        self.cfg = cfg
        self.console = console
        self.progress = progress
        self.fail_fast = fail_fast
        self.force = force
        self.rank = int(os.environ.get("RANK", "0"))
        self.world_size = int(os.environ.get("WORLD_SIZE", "1"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", str(self.rank)))
        self.store = ResultStore(cfg.out_dir)
        self.work_root = Path(cfg.out_dir) / ".shards" / f"{cfg.hash()}-of{self.world_size}"
        self.run_id = ""
        self.failures: list[tuple[Any, str]] = []
        self.replaced: list[tuple[dict[str, Any], str]] = []  # as Runner.replaced
        self.rows: list[Mapping[str, Any]] = []  # the merged rows this run wrote (rank 0), as Runner.rows

    def _init(self) -> Any:
        import torch
        import torch.distributed as dist

        from benchmark.core.env import resolve_device

        device = resolve_device(self.cfg.device)
        if device.type == "cuda" and device.index is None:
            if self.local_rank >= torch.cuda.device_count():
                raise ValueError(
                    f"torchrun started more processes per node than this node has GPUs ({torch.cuda.device_count()}); "
                    "use --nproc-per-node <= the GPU count, or --device cpu"
                )
            torch.cuda.set_device(self.local_rank)  # "cuda" now means this rank's GPU; the config is unchanged
        backend = "nccl" if device.type == "cuda" else "gloo"
        timeout = _dt.timedelta(seconds=float(os.environ.get(TIMEOUT_ENV, str(6 * 3600))))
        if not dist.is_initialized():
            dist.init_process_group(backend=backend, timeout=timeout)
        return dist

    def _runner(self) -> Any:
        from rich.console import Console

        from benchmark.runner import Runner

        console = self.console if self.rank == 0 else Console(stderr=True, quiet=True)
        cfg = dataclasses.replace(self.cfg, out_dir=str(self.work_root / f"rank{self.rank}"))
        return Runner(cfg, console=console, progress=self.progress and self.rank == 0, fail_fast=self.fail_fast,
                      shard=(self.rank, self.world_size), force=self.force)

    @staticmethod
    def _warm_up(runner: Any) -> None:
        """Train or load everything the grid needs once (rank 0), so other ranks only load caches."""
        runner.prepare_data()
        runner.prepare_models()
        if "blackbox" in runner.cfg.protocol:
            runner.zoo.get(runner.cfg.surrogate)
        for name in runner.attack_names():
            runner.attack_object(name)  # builds helper models (AdvPC's autoencoder)
        for name in runner.defense_names():
            runner.defense(name)

    def _gather(self, dist: Any, payload: Any) -> list[Any]:
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, payload)
        return out

    def run(self) -> pd.DataFrame | None:
        """Run this rank's shard; rank 0 merges and writes every rank's rows (see the class)."""
        dist = self._init()
        try:
            runner = self._runner()
            error = None
            if self.rank == 0:
                try:
                    self._warm_up(runner)
                except Exception:  # noqa: BLE001 - reported by every rank below
                    error = traceback.format_exc()
            errors = [e for e in self._gather(dist, error) if e]
            if errors:
                self._raise_or_fail([(0, errors[0])])
                return None
            outcome: dict[str, Any] = {"rank": self.rank, "rows": None, "error": None, "meta": None}
            try:
                rows = runner.run()
                outcome["rows"] = rows.astype(object).where(rows.notna(), None).to_dict("records")
                meta_path = runner.store.out_dir / "runs" / f"{runner.run_id}.json"
                outcome["meta"] = json.loads(meta_path.read_text()) if meta_path.exists() else None
            except Exception:  # noqa: BLE001 - every rank must reach the gather
                outcome["error"] = traceback.format_exc()
            self.failures = list(runner.failures)
            gathered = self._gather(dist, outcome)
            failed = [(o["rank"], o["error"]) for o in gathered if o["error"]]
            if failed:
                self._raise_or_fail(failed)
                return None
            if self.rank != 0:
                return None
            return self._write(gathered)
        finally:
            dist.destroy_process_group()

    def _raise_or_fail(self, failed: list[tuple[int, str]]) -> None:
        """Rank 0 raises the first rank's error; the other ranks record it (and exit non-zero)."""
        rank, message = failed[0]
        if self.rank == 0:
            raise RuntimeError(f"torchrun rank {rank} of {self.world_size} failed:\n{message}")
        self.failures.append((None, f"rank {rank} failed"))

    def _write(self, gathered: list[dict[str, Any]]) -> pd.DataFrame:
        rows: list[Mapping[str, Any]] = []
        shards: list[ShardInfo] = []
        for outcome in sorted(gathered, key=lambda o: o["rank"]):
            for row in outcome["rows"]:
                rows.append(row)
                shards.append(ShardInfo(outcome["rank"], self.world_size, self.cfg.batch_size))
        merged = merge_shard_rows(rows, shards)
        self.rows = list(merged)
        new_hash = {tuple(str(r.get(c, "")) for c in KEY_COLUMNS): str(r.get("cell_hash", "")) for r in merged}
        self.replaced = [(old, new_hash.get(tuple(str(old.get(c, "")) for c in KEY_COLUMNS), ""))
                         for old in self.store.write(merged)]
        metas = {o["rank"]: o["meta"] for o in gathered if o["meta"]}
        if 0 in metas:
            self.run_id = str(metas[0]["run_id"])
            record = dict(metas[0])
            record.update(shard=[0, 1], n=int(merged[0]["n"]) if merged else 0,
                          distributed={"world_size": self.world_size,
                                       "run_ids": [metas[r]["run_id"] for r in sorted(metas)]})
            record["config"] = {**record["config"], "out_dir": self.cfg.out_dir}
            self.store.write_run(self.run_id, record)
        self.failures = [(None, f"{r['protocol']}/{r['defense']}/{r['attack']}: {r.get('error')}")
                         for r in merged if r.get("status") != "ok"]
        shutil.rmtree(self.work_root, ignore_errors=True)
        if self.work_root.parent.is_dir() and not any(self.work_root.parent.iterdir()):
            self.work_root.parent.rmdir()
        return pd.DataFrame(merged)
