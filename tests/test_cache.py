"""Specification of benchmark.core.cache: atomic, checksummed entries that are recomputed when corrupt."""
from __future__ import annotations

import json
import os
import stat
import warnings
from pathlib import Path

import numpy as np
import pytest

from benchmark.core.cache import (
    CorruptCacheError,
    atomic_write,
    cached_arrays,
    default_cache_dir,
    entry_path,
    load_arrays,
    resolve_cache_dir,
    save_arrays,
)


def sample_arrays() -> dict[str, np.ndarray]:
    return {
        "points": np.arange(24, dtype=np.float32).reshape(2, 4, 3),
        "labels": np.array([3, 1], dtype=np.int64),
    }


@pytest.fixture
def entry(tmp_path) -> Path:
    """A finished cache entry holding ``sample_arrays()``."""
    return save_arrays(tmp_path / "datasets" / "demo.npz", sample_arrays(), meta={"seed": 0})


def sidecar_of(path: Path) -> Path:
    return path.with_name(path.name + ".json")


class Counter:
    """A compute function that counts its calls."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self) -> dict[str, np.ndarray]:
        self.calls += 1
        return sample_arrays()


# --------------------------------------------------------------------------- save and load


def test_save_then_load_round_trips_values_and_dtypes(entry):
    loaded = load_arrays(entry)
    assert sorted(loaded) == ["labels", "points"]
    for name, expected in sample_arrays().items():
        assert loaded[name].dtype == expected.dtype
        np.testing.assert_array_equal(loaded[name], expected)


def test_the_sidecar_records_size_checksum_and_meta(entry):
    record = json.loads(sidecar_of(entry).read_text())
    assert record["size"] == entry.stat().st_size
    assert len(record["sha256"]) == 64
    assert record["meta"] == {"seed": 0}


def test_loading_a_missing_entry_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_arrays(tmp_path / "absent.npz")


def test_save_arrays_stores_an_array_under_any_name(tmp_path):
    arrays = {"file": np.zeros(2), "allow_pickle": np.ones(2)}
    loaded = load_arrays(save_arrays(tmp_path / "odd.npz", arrays))
    assert sorted(loaded) == ["allow_pickle", "file"]


# ---------------------------------------------------------------------------- atomic_write


def test_atomic_write_replaces_the_file_on_success(tmp_path):
    target = tmp_path / "f.txt"
    target.write_text("old")
    with atomic_write(target) as tmp:
        tmp.write_text("new")
    assert target.read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["f.txt"]


def test_atomic_write_leaves_the_old_file_intact_when_the_writer_raises(tmp_path):
    target = tmp_path / "f.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError, match="writer died"):
        with atomic_write(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("writer died")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.txt"]  # no temporary file left behind


def test_atomic_write_gives_the_file_the_umask_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        with atomic_write(tmp_path / "f.txt") as tmp:
            tmp.write_text("x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "f.txt").stat().st_mode) == 0o644


def test_atomic_write_creates_missing_parent_folders(tmp_path):
    target = tmp_path / "a" / "b" / "f.txt"
    with atomic_write(target) as tmp:
        tmp.write_text("x")
    assert target.read_text() == "x"


# ------------------------------------------------------------------------------ corruption


def test_a_truncated_payload_is_corrupt(entry):
    data = entry.read_bytes()
    entry.write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptCacheError, match="bytes, expected"):
        load_arrays(entry)


def test_a_flipped_byte_is_corrupt(entry):
    data = bytearray(entry.read_bytes())
    data[len(data) // 2] ^= 0xFF
    entry.write_bytes(bytes(data))
    with pytest.raises(CorruptCacheError, match="sha256"):
        load_arrays(entry)


def test_a_payload_without_its_sidecar_is_corrupt(entry):
    sidecar_of(entry).unlink()
    with pytest.raises(CorruptCacheError, match="no sidecar"):
        load_arrays(entry)


def test_a_sidecar_without_its_payload_is_corrupt(entry):
    entry.unlink()
    with pytest.raises(CorruptCacheError, match="missing its payload"):
        load_arrays(entry)


def test_an_unreadable_sidecar_is_corrupt(entry):
    sidecar_of(entry).write_text("{not json")
    with pytest.raises(CorruptCacheError, match="unreadable"):
        load_arrays(entry)


# ----------------------------------------------------------------------------- cached_arrays


def test_cached_arrays_computes_once_then_hits(tmp_path):
    compute = Counter()
    path = tmp_path / "e.npz"
    first, hit1 = cached_arrays(path, compute)
    second, hit2 = cached_arrays(path, compute)
    assert (hit1, hit2, compute.calls) == (False, True, 1)
    np.testing.assert_array_equal(first["points"], second["points"])


def test_cached_arrays_recomputes_a_corrupt_entry_with_exactly_one_warning(entry):
    entry.write_bytes(entry.read_bytes()[:100])
    compute = Counter()
    with pytest.warns(RuntimeWarning, match="recomputing") as caught:
        arrays, hit = cached_arrays(entry, compute)
    assert len(caught) == 1
    assert (hit, compute.calls) == (False, 1)
    np.testing.assert_array_equal(arrays["labels"], sample_arrays()["labels"])


def test_a_recomputed_entry_is_healthy_again(entry):
    sidecar_of(entry).unlink()
    compute = Counter()
    with pytest.warns(RuntimeWarning):
        cached_arrays(entry, compute)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _, hit = cached_arrays(entry, compute)
    assert (hit, compute.calls) == (True, 1)


# ------------------------------------------------------------------------------ entry_path


def test_entry_path_is_kind_folder_then_key_and_suffix(tmp_path):
    assert entry_path(tmp_path, "datasets", "synthshapes-ab12", ".npz") == tmp_path / "datasets" / "synthshapes-ab12.npz"


@pytest.mark.parametrize(
    ("kind", "key"),
    [("datasets", ".."), ("datasets", "a..b"), ("..", "key"), ("datasets", "a/b"), ("datasets", "/etc"),
     ("datasets", ""), ("", "key"), ("datasets", ".hidden")],
)
def test_entry_path_rejects_names_that_could_leave_the_cache(tmp_path, kind, key):
    with pytest.raises(ValueError, match="unsafe cache name"):
        entry_path(tmp_path, kind, key, ".npz")


# ------------------------------------------------------------------------- cache directory


def test_default_cache_dir_honours_pcrb_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("PCRB_CACHE_DIR", str(tmp_path / "mine"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "mine"


def test_default_cache_dir_falls_back_to_xdg_cache_home(monkeypatch, tmp_path):
    monkeypatch.delenv("PCRB_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "pcrb"


def test_default_cache_dir_falls_back_to_home_dot_cache(monkeypatch, tmp_path):
    monkeypatch.delenv("PCRB_CACHE_DIR", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_cache_dir() == tmp_path / ".cache" / "pcrb"


def test_resolve_cache_dir_creates_the_folder(tmp_path):
    path = resolve_cache_dir(tmp_path / "new" / "cache")
    assert path.is_dir()
