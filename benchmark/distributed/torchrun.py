"""``torchrun --nproc-per-node K -m benchmark run ...``: one shard per rank, merged by rank 0.

Each rank runs shard ``(rank, K)`` into a working folder of its own
(``<out>/.shards/<config hash>-of<K>/rank<r>``, kept until the merge succeeds so a killed
launch resumes), rank 0 gathers every rank's rows (``all_gather_object``), merges them
(``benchmark.distributed.shards``) and writes them into the real results store. Rank 0
trains/prepares the victim, surrogate, defenses and helper models first while the others
wait, so nothing is trained twice. gloo on CPU, NCCL on CUDA (each rank on
``cuda:<LOCAL_RANK>``).
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import os
import shutil
import traceback
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from benchmark.distributed.shards import ShardInfo, merge_shard_rows
from benchmark.store import KEY_COLUMNS, ResultStore

__all__ = ["TIMEOUT_ENV", "DistributedRunner", "launched"]

#: Environment variable: seconds a rank waits for the others (default 6 hours: rank 0 may train).
TIMEOUT_ENV = "PCRB_DIST_TIMEOUT"


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
            outcome = self._run_shard(runner)
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

    def _run_shard(self, runner: Any) -> dict[str, Any]:
        """This rank's shard run, as what it sends rank 0: its rows as records and its run record,
        or the traceback of its error (caught: every rank must reach the gather)."""
        outcome: dict[str, Any] = {"rank": self.rank, "rows": None, "error": None, "meta": None}
        try:
            rows = runner.run()
            outcome["rows"] = rows.astype(object).where(rows.notna(), None).to_dict("records")
            meta_path = runner.store.out_dir / "runs" / f"{runner.run_id}.json"
            outcome["meta"] = json.loads(meta_path.read_text()) if meta_path.exists() else None
        except Exception:  # noqa: BLE001 - every rank must reach the gather
            outcome["error"] = traceback.format_exc()
        return outcome

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
