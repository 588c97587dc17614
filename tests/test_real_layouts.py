"""The datasets a paper-scale user downloads, in their exact published layouts (file names, HDF5
keys and dtypes, text formats), read end to end: through the readers, then through a tiny
``bench run``. ``tests/test_data_readers.py`` covers each reader's options and errors on simpler
files; here the files are what the downloads hold:

- ``modelnet40_ply_hdf5_2048/`` (PointNet): ``ply_data_train0..4.h5`` / ``ply_data_test0..1.h5``
  with ``data`` float32 [n, 2048, 3], ``label`` uint8 [n, 1], ``normal`` float32 [n, 2048, 3],
  ``faceId`` int32 [n, 2048], gzip-compressed; ``shape_names.txt``, ``train_files.txt``,
  ``test_files.txt`` and the ``ply_data_*_id2file.json`` lists;
- ``modelnet40_normal_resampled/`` (PointNet++): ``modelnet40_shape_names.txt``,
  ``modelnet40_train.txt`` / ``_test.txt``, ``filelist.txt``, ``<class>/<class>_NNNN.txt`` with
  10,000 lines ``x,y,z,nx,ny,nz`` (six decimals);
- ScanObjectNN ``h5_files/``: ``main_split/`` (OBJ_BG ``*_objectdataset.h5`` and PB_T50_RS
  ``*_objectdataset_augmentedrot_scale75.h5``) and ``main_split_nobg/`` (OBJ_ONLY), each file with
  ``data`` float32 [n, 2048, 3], ``label`` [n] and the background ``mask`` [n, 2048].

The genuine ModelNet40 files in ``../shared/data`` run through ``bench run`` too (skipped where
absent).
"""
from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

from benchmark.core.data import load_dataset
from benchmark.core.data.scanobjectnn import SCANOBJECTNN_CLASSES
from tests.test_data_readers import MODELNET40

POINTS = 2048  # points per cloud in the published HDF5 files
SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def _surface_clouds(n: int, points: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` clouds on spheres of random centre and radius (float32), with their unit normals."""
    rng = np.random.default_rng(seed)
    normals = rng.normal(size=(n, points, 3))
    normals /= np.linalg.norm(normals, axis=-1, keepdims=True)
    centre, radius = rng.uniform(-0.2, 0.2, size=(n, 1, 3)), rng.uniform(0.5, 1.0, size=(n, 1, 1))
    return (centre + radius * normals).astype(np.float32), normals.astype(np.float32)


# --------------------------------------------------------------------------- writers of the published layouts


def write_modelnet40_hdf5(parent: Path, train_files: int = 5, test_files: int = 2, per_file: int = 4) -> Path:
    """``parent/modelnet40_ply_hdf5_2048`` as the PointNet download holds it; labels cycle through
    the classes file after file. Returns the layout folder."""
    folder = parent / "modelnet40_ply_hdf5_2048"
    folder.mkdir(parents=True)
    (folder / "shape_names.txt").write_text("\n".join(MODELNET40) + "\n")
    label = 0
    for split, count in (("train", train_files), ("test", test_files)):
        names = []
        for k in range(count):
            data, normal = _surface_clouds(per_file, POINTS, seed=100 * (split == "test") + k)
            labels = (np.arange(label, label + per_file) % len(MODELNET40)).astype(np.uint8).reshape(-1, 1)
            label += per_file
            with h5py.File(folder / f"ply_data_{split}{k}.h5", "w") as f:
                f.create_dataset("data", data=data, compression="gzip", compression_opts=4)
                f.create_dataset("faceId", data=np.zeros((per_file, POINTS), dtype=np.int32), compression="gzip")
                f.create_dataset("label", data=labels, compression="gzip", compression_opts=1)
                f.create_dataset("normal", data=normal, compression="gzip", compression_opts=4)
            names.append(f"data/modelnet40_ply_hdf5_2048/ply_data_{split}{k}.h5")
            ids = [f"{MODELNET40[int(c)]}/{MODELNET40[int(c)]}_{k + 1:04d}.ply" for c in labels[:, 0]]
            (folder / f"ply_data_{split}_{k}_id2file.json").write_text(json.dumps(ids))
        (folder / f"{split}_files.txt").write_text("\n".join(names) + "\n")
    return folder


def write_modelnet40_text(parent: Path, shapes: dict[str, dict[str, int]], lines: int = 10_000) -> Path:
    """``parent/modelnet40_normal_resampled`` as the PointNet++ download holds it: ``shapes`` maps
    a split to ``{class: number of shapes}``. Returns the layout folder."""
    folder = parent / "modelnet40_normal_resampled"
    folder.mkdir(parents=True)
    (folder / "modelnet40_shape_names.txt").write_text("\n".join(MODELNET40) + "\n")
    listed, number, seed = [], {c: 0 for c in MODELNET40}, 0
    for split, per_class in shapes.items():
        ids = []
        for cls, count in per_class.items():
            (folder / cls).mkdir(exist_ok=True)
            for _ in range(count):
                number[cls] += 1
                shape_id = f"{cls}_{number[cls]:04d}"
                xyz, nrm = _surface_clouds(1, lines, seed)
                seed += 1
                np.savetxt(folder / cls / f"{shape_id}.txt", np.concatenate([xyz[0], nrm[0]], 1), fmt="%.6f",
                           delimiter=",")
                ids.append(shape_id)
                listed.append(f"{cls}/{shape_id}.txt")
        (folder / f"modelnet40_{split}.txt").write_text("\n".join(ids) + "\n")
    (folder / "filelist.txt").write_text("\n".join(sorted(listed)) + "\n")
    return folder


#: variant -> (folder, file stem) as ScanObjectNN's h5_files download names them
SCANOBJECTNN_FILES = {
    "obj_bg": ("main_split", "objectdataset"),
    "obj_only": ("main_split_nobg", "objectdataset"),
    "pb_t50_rs": ("main_split", "objectdataset_augmentedrot_scale75"),
}


def write_scanobjectnn(parent: Path, train: int = 30, test: int = 15) -> Path:
    """``parent/h5_files`` with the six files of the three variants; each variant's labels start at
    another class so a test can tell the files apart. Returns ``parent``."""
    for v, (sub, stem) in enumerate(SCANOBJECTNN_FILES.values()):
        for prefix, n in (("training", train), ("test", test)):
            data, _ = _surface_clouds(n, POINTS, seed=10 * v + (prefix == "test"))
            path = parent / "h5_files" / sub / f"{prefix}_{stem}.h5"
            path.parent.mkdir(parents=True, exist_ok=True)
            with h5py.File(path, "w") as f:
                f.create_dataset("data", data=data)
                f.create_dataset("label", data=(np.arange(n) + v) % len(SCANOBJECTNN_CLASSES))
                f.create_dataset("mask", data=np.ones((n, POINTS), dtype=np.int64))
    return parent


# --------------------------------------------------------------------------- the readers


@pytest.fixture(scope="module")
def hdf5_parent(tmp_path_factory: pytest.TempPathFactory) -> Path:
    parent = tmp_path_factory.mktemp("mn40h5")
    write_modelnet40_hdf5(parent)
    return parent


@pytest.fixture(scope="module")
def text_parent(tmp_path_factory: pytest.TempPathFactory) -> Path:
    parent = tmp_path_factory.mktemp("mn40txt")
    write_modelnet40_text(parent, {"train": {"airplane": 3, "night_stand": 3, "xbox": 2},
                                   "test": {"airplane": 2, "night_stand": 1, "xbox": 1}})
    return parent


@pytest.fixture(scope="module")
def scan_parent(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_scanobjectnn(tmp_path_factory.mktemp("scan"))


@pytest.mark.parametrize("split, files", [("train", 5), ("test", 2)])
def test_the_published_modelnet40_hdf5_download_reads_every_file_in_order(hdf5_parent, split, files):
    folder = hdf5_parent / "modelnet40_ply_hdf5_2048"
    ds = load_dataset("modelnet40", split, root=hdf5_parent, num_points=1024, options={"use_normals": True})
    parts = [h5py.File(folder / f"ply_data_{split}{k}.h5", "r") for k in range(files)]
    raw = np.concatenate([p["data"][:, :1024] for p in parts])
    labels = np.concatenate([p["label"][:, 0] for p in parts]).astype(np.int64)
    normals = np.concatenate([p["normal"][:, :1024] for p in parts])
    for p in parts:
        p.close()
    assert ds.points.shape == (4 * files, 1024, 3) and ds.points.dtype == np.float32
    assert ds.class_names == tuple(MODELNET40) and np.array_equal(ds.labels, labels)
    centred = raw - raw.mean(axis=1, keepdims=True)
    scaled = centred / np.linalg.norm(centred, axis=-1).max(axis=1)[:, None, None]
    assert np.allclose(ds.points, scaled, atol=1e-5)  # the first 1,024 points, unit-sphere normalised
    assert np.array_equal(ds.normals, normals)


def test_the_published_modelnet40_text_download_reads_the_listed_files(text_parent):
    folder = text_parent / "modelnet40_normal_resampled"
    ds = load_dataset("modelnet40", "test", root=folder, num_points=1024, normalize=False,
                      options={"use_normals": True})
    ids = (folder / "modelnet40_test.txt").read_text().split()
    assert list(ds.extras["ids"]) == ids
    assert [ds.class_names[c] for c in ds.labels] == ["airplane", "airplane", "night_stand", "xbox"]
    first = np.loadtxt(folder / "night_stand" / f"{ids[2]}.txt", delimiter=",", max_rows=1024, dtype=np.float32)
    assert np.array_equal(ds.points[2], first[:, :3]) and np.array_equal(ds.normals[2], first[:, 3:])


@pytest.mark.parametrize("variant", list(SCANOBJECTNN_FILES))
@pytest.mark.parametrize("split, n", [("train", 30), ("test", 15)])
def test_each_published_scanobjectnn_variant_reads_its_own_file(scan_parent, variant, split, n):
    ds = load_dataset("scanobjectnn", split, root=scan_parent, num_points=1024, options={"variant": variant})
    sub, stem = SCANOBJECTNN_FILES[variant]
    expected = scan_parent / "h5_files" / sub / f"{'training' if split == 'train' else 'test'}_{stem}.h5"
    assert ds.extras["source"] == str(expected)
    offset = list(SCANOBJECTNN_FILES).index(variant)
    assert ds.points.shape == (n, 1024, 3) and ds.labels.tolist() == [(i + offset) % 15 for i in range(n)]
    assert ds.class_names == SCANOBJECTNN_CLASSES


# --------------------------------------------------------------------------- end to end: bench run


def bench(*args: str, tmp: Path) -> int:
    """``bench ARGS`` in this process, with a private cache and results folder under ``tmp``."""
    from benchmark.cli import main

    return main([*args, "--cache-dir", str(tmp / "cache")])


#: the smoke profile's teachers and student pretrain on other SynthShapes draws (``source``): on a
#: real dataset they train on its own training split
ON_REAL_DATA = [f"--set=training.{m}.source=null"
                for m in ("clip", "point-transformer-teacher", "point-transformer-student")]


def tiny_run(tmp: Path, dataset: str, root: Path, *extra: str) -> pd.DataFrame:
    out = tmp / "results"
    status = bench("run", "--profile", "smoke", "--dataset", dataset, "--data-root", str(root), "--defense",
                   "none,sor", "--attack", "pgd", "--limit", "8", "--batch-size", "8", "--out", str(out),
                   "--no-progress", "--no-plots", *ON_REAL_DATA, *extra, tmp=tmp)
    assert status == 0
    return pd.read_csv(out / f"{dataset}.csv")


def _assert_grid(rows: pd.DataFrame, dataset: str, n: int = 8) -> None:
    """Every cell of the tiny grid ran on ``n`` test clouds of ``dataset``."""
    assert set(rows["status"]) == {"ok"} and set(rows["dataset"]) == {dataset} and set(rows["n"]) == {n}
    assert {(r.defense, r.attack) for r in rows.itertuples()} == {
        (d, a) for d in ("none", "sor") for a in ("clean", "pgd")}
    assert rows["accuracy"].between(0, 1).all()


def test_bench_run_reads_the_published_modelnet40_hdf5_download(hdf5_parent, tmp_path):
    _assert_grid(tiny_run(tmp_path, "modelnet40", hdf5_parent), "modelnet40")


def test_bench_run_reads_the_published_modelnet40_text_download(text_parent, tmp_path):
    rows = tiny_run(tmp_path, "modelnet40", text_parent / "modelnet40_normal_resampled")
    _assert_grid(rows, "modelnet40", n=4)  # the test list names 4 shapes


@pytest.mark.parametrize("variant", list(SCANOBJECTNN_FILES))
def test_bench_run_reads_each_published_scanobjectnn_variant(scan_parent, tmp_path, variant):
    _assert_grid(tiny_run(tmp_path, "scanobjectnn", scan_parent / "h5_files", f"--set=datasets.scanobjectnn.variant="
                          f"{variant}"), "scanobjectnn")


@pytest.mark.skipif(not (SHARED / "modelnet40_normal_resampled").is_dir(), reason=f"shared files absent ({SHARED})")
def test_bench_run_reads_the_genuine_modelnet40_files(tmp_path):
    _assert_grid(tiny_run(tmp_path, "modelnet40", SHARED), "modelnet40", n=3)  # the 3 test shapes of the 39
