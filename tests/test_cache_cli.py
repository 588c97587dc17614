"""`bench cache ls|clear` and the feature cache's corruption handling."""
from __future__ import annotations

import numpy as np
import pytest

from benchmark.core.cache import cache_entries, cached_features, clear_cache
from benchmark.cli import main


def test_features_are_cached_memory_mapped_and_recomputed_when_corrupt(tmp_path):
    calls = []

    def compute():
        calls.append(1)
        return np.arange(12, dtype=np.float32).reshape(4, 3)

    key = {"teacher": "t", "weights": "abc"}
    first, hit = cached_features(tmp_path, "demo", key, compute)
    again, hit2 = cached_features(tmp_path, "demo", key, compute)
    assert not hit and hit2 and len(calls) == 1
    assert isinstance(again, np.memmap) and np.array_equal(first, again)
    path = next((tmp_path / "features").glob("demo-*.npy"))
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.warns(RuntimeWarning, match="checksum"):
        fixed, hit3 = cached_features(tmp_path, "demo", key, compute)
    assert not hit3 and len(calls) == 2  # recomputed
    assert np.array_equal(fixed, np.arange(12, dtype=np.float32).reshape(4, 3))
    other, _ = cached_features(tmp_path, "demo", {**key, "weights": "def"}, compute)
    assert len(calls) == 3  # new teacher weights: a new entry


def test_bench_cache_ls_and_clear(tmp_path, capsys):
    cached_features(tmp_path, "demo", {"a": 1}, lambda: np.zeros((2, 2), np.float32))
    assert [e["kind"] for e in cache_entries(tmp_path)] == ["features"]
    assert main(["cache", "ls", "--cache-dir", str(tmp_path)]) == 0
    assert "features" in capsys.readouterr().out
    assert main(["cache", "clear", "--kind", "weights", "--cache-dir", str(tmp_path)]) == 0
    assert len(cache_entries(tmp_path)) == 1
    assert main(["cache", "clear", "--cache-dir", str(tmp_path)]) == 0
    assert cache_entries(tmp_path) == [] and clear_cache(tmp_path / "missing") == (0, 0)
