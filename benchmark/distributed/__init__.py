"""Sharded runs: ``bench merge`` of ``--shard i/K`` results, and ``torchrun`` launches.

A shard ``i/K`` of a run evaluates whole batches ``i, i+K, i+2K, ...`` (of ``batch_size``
clouds) of the test subset (``Runner(shard=(i, K))``), so randomised defenses draw per
batch exactly what one process draws. Merging the K shard rows of a cell therefore gives
the single-process row: summed ``correct``, recomputed accuracy and Wilson interval,
per-sample ``outcomes`` put back into the subset's order, sample-weighted attack success
and distances.

One concept per module; every name is importable from ``benchmark.distributed`` itself:

- ``shards``: ``merge_shard_rows(rows, shards)``, the pure merge (rows + each row's shard) ->
  rows; ``ShardInfo``, ``shard_positions``, ``MergeError``.
- ``merge``: ``merge_results([dir, ...], out)``, ``bench merge``; a row's shard and batch size
  come from its columns when the store has them, else from its run record (``runs/<run_id>.json``).
- ``torchrun``: ``DistributedRunner(cfg)``, ``torchrun --nproc-per-node K -m benchmark run ...``.
  Each rank runs shard ``(rank, K)`` into a working folder of its own
  (``<out>/.shards/<config hash>-of<K>/rank<r>``, kept until the merge succeeds so a killed
  launch resumes), rank 0 gathers every rank's rows (``all_gather_object``), merges them
  and writes them into the real results store. Rank 0 trains/prepares the victim,
  surrogate, defenses and helper models first while the others wait, so nothing is
  trained twice. gloo on CPU, NCCL on CUDA (each rank on ``cuda:<LOCAL_RANK>``).
"""
from __future__ import annotations

from benchmark.distributed.merge import merge_results
from benchmark.distributed.shards import MergeError, ShardInfo, merge_shard_rows, shard_positions
from benchmark.distributed.torchrun import TIMEOUT_ENV, DistributedRunner, launched

__all__ = [
    "TIMEOUT_ENV",
    "DistributedRunner",
    "MergeError",
    "ShardInfo",
    "launched",
    "merge_results",
    "merge_shard_rows",
    "shard_positions",
]
