"""The results store: one CSV row per evaluated cell, written atomically, idempotent by key.

A *cell* is (dataset, profile, protocol, victim, source, defense, attack, seed, n): the
accuracy of one defended model on one set of clouds (``attack == "clean"`` for the clean
clouds). Rows live in ``<out_dir>/<dataset>.csv``; run metadata in
``<out_dir>/runs/<run-id>.json``.

- **Variants are kept**: the key also holds ``defense_variant`` and ``attack_variant``, the
  settings that differ from the profile's (``benchmark.variants``), so a row computed with
  other parameters never replaces the profile's row; tables label it ``mrpd [epochs=50]``.
- **Idempotent**: writing a row whose key exists replaces it (never duplicates it), and
  :meth:`ResultStore.write` returns the rows it replaced so the caller can say so.
- **Atomic, concurrent-safe**: each write takes an exclusive lock on ``<csv>.lock``, reads
  the current file, merges, writes a temporary file and renames it over the CSV, so a
  reader never sees a partial file and two runs never lose each other's rows.
- **Resumable**: :meth:`ResultStore.finished` says whether a cell with the same key *and
  the same cell hash* (everything that determines its numbers) is already stored.
- **Per-sample outcomes**: each row keeps which clouds were classified correctly (packed
  bits, hex), so the worst-case robust accuracy over attacks (AutoAttack's convention)
  can be computed from the CSV alone.

One concept per module; every name is importable from ``benchmark.store`` itself:

- ``columns``: the row's columns, its key, their types (``CLEAN``, ``KEY_COLUMNS``, ``COLUMNS``, ...);
- ``fields``: the computed fields (``wilson_interval``, ``encode_outcomes`` / ``decode_outcomes``,
  ``encode_distances`` / ``decode_distances``);
- ``files``: locks and atomic writes;
- ``resultstore``: ``ResultStore`` (the CSV files and the run records);
- ``tables``: what is computed from rows (``survival``, ``worst_case``, ``min_norm_distances``,
  ``with_labels``, ``summary_table``).

Floor 0: imports numpy, pandas, the standard library and other floor-0 modules
(``benchmark.core.curves``, ``benchmark.variants``) only.
"""
from __future__ import annotations

from benchmark.store.columns import CLEAN, COLUMNS, GROUP_COLUMNS, KEY_COLUMNS, VOLATILE_COLUMNS
from benchmark.store.fields import (
    decode_distances,
    decode_outcomes,
    encode_distances,
    encode_outcomes,
    wilson_interval,
)
from benchmark.store.resultstore import ResultStore
from benchmark.store.tables import (
    attack_roles,  # noqa: F401  (public before the split, outside __all__)
    min_norm_distances,
    summary_table,
    survival,
    with_labels,
    worst_case,
)

__all__ = [
    "CLEAN",
    "COLUMNS",
    "GROUP_COLUMNS",
    "KEY_COLUMNS",
    "VOLATILE_COLUMNS",
    "ResultStore",
    "decode_distances",
    "decode_outcomes",
    "encode_distances",
    "encode_outcomes",
    "min_norm_distances",
    "summary_table",
    "survival",
    "wilson_interval",
    "with_labels",
    "worst_case",
]
