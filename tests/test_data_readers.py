"""ModelNet40/10 and ScanObjectNN readers, on tiny files written in the real formats."""
from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from benchmark.core.data import DATASETS, DatasetError, load_dataset
from benchmark.core.geometry import farthest_point_sample

MODELNET40 = (
    "airplane bathtub bed bench bookshelf bottle bowl car chair cone cup curtain desk door dresser "
    "flower_pot glass_box guitar keyboard lamp laptop mantel monitor night_stand person piano plant "
    "radio range_hood sink sofa stairs stool table tent toilet tv_stand vase wardrobe xbox"
).split()
MODELNET10 = ["bathtub", "bed", "chair", "desk", "dresser", "monitor", "night_stand", "sofa", "table", "toilet"]
POINTS = 64  # points per cloud in the files written here


def _clouds(n: int, points: int = POINTS, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` random clouds ``[n, points, 3]`` off-centre and unit normals alike."""
    rng = np.random.default_rng(seed)
    xyz = (rng.normal(size=(n, points, 3)) * 3.0 + 5.0).astype(np.float32)
    nrm = rng.normal(size=(n, points, 3)).astype(np.float32)
    return xyz, nrm / np.linalg.norm(nrm, axis=-1, keepdims=True)


# -- writers of the real formats ----------------------------------------------------------------
def write_h5(path: Path, data: np.ndarray, label: np.ndarray, normal: np.ndarray | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        f.create_dataset("data", data=data)
        f.create_dataset("label", data=label)
        if normal is not None:
            f.create_dataset("normal", data=normal)
    return path


def make_hdf5_layout(parent: Path, labels_per_file: dict[str, list[list[int]]], normals: bool = True) -> Path:
    """``parent/modelnet40_ply_hdf5_2048`` with ``ply_data_<split><k>.h5`` holding the given labels."""
    folder = parent / "modelnet40_ply_hdf5_2048"
    folder.mkdir(parents=True)
    (folder / "shape_names.txt").write_text("\n".join(MODELNET40) + "\n")
    seed = 0
    for split, files in labels_per_file.items():
        for k, labels in enumerate(files):
            xyz, nrm = _clouds(len(labels), seed=seed)
            seed += 1
            label = np.asarray(labels, dtype=np.uint8).reshape(-1, 1)
            write_h5(folder / f"ply_data_{split}{k}.h5", xyz, label, nrm if normals else None)
    return folder


def make_text_layout(parent: Path, ids: dict[str, list[str]], points: int = POINTS, columns: int = 6) -> Path:
    """``parent/modelnet40_normal_resampled`` with one ``x,y,z,nx,ny,nz`` file per listed id."""
    folder = parent / "modelnet40_normal_resampled"
    folder.mkdir(parents=True)
    (folder / "modelnet40_shape_names.txt").write_text("\n".join(MODELNET40) + "\n")
    seed = 100
    for split, names in ids.items():
        (folder / f"modelnet40_{split}.txt").write_text("\n".join(names) + "\n")
        for shape_id in names:
            xyz, nrm = _clouds(1, points, seed=seed)
            seed += 1
            cls = shape_id.rsplit("_", 1)[0]
            (folder / cls).mkdir(exist_ok=True)
            rows = np.concatenate([xyz[0], nrm[0]], axis=1)[:, :columns]
            np.savetxt(folder / cls / f"{shape_id}.txt", rows, fmt="%.6f", delimiter=",")
    return folder


def text_file(folder: Path, shape_id: str) -> np.ndarray:
    return np.loadtxt(folder / shape_id.rsplit("_", 1)[0] / f"{shape_id}.txt", delimiter=",", dtype=np.float32)


TEXT_IDS = {
    "train": ["airplane_0001", "chair_0002", "night_stand_0003", "xbox_0004", "toilet_0005"],
    "test": ["bed_0101", "glass_box_0102"],
}


@pytest.fixture
def hdf5_root(tmp_path: Path) -> Path:
    # train0: airplane, chair, car; train1: toilet, bed; test0: night_stand, xbox
    return make_hdf5_layout(tmp_path, {"train": [[0, 8, 7], [35, 2]], "test": [[23, 39]]})


@pytest.fixture
def text_root(tmp_path: Path) -> Path:
    return make_text_layout(tmp_path, TEXT_IDS)


def make_scanobjectnn(root: Path, variant_files: dict[str, int]) -> Path:
    """Files named like the official h5_files download; file ``rel`` holds ``n`` clouds of label ``n % 15``."""
    for rel, n in variant_files.items():
        xyz, _ = _clouds(n, seed=n)
        write_h5(root / rel, xyz, np.full(n, n % 15, dtype=np.int64))
    return root


SCAN_FILES = {
    "main_split/training_objectdataset.h5": 2,
    "main_split/test_objectdataset.h5": 3,
    "main_split_nobg/training_objectdataset.h5": 4,
    "main_split_nobg/test_objectdataset.h5": 5,
    "main_split/training_objectdataset_augmentedrot_scale75.h5": 6,
    "main_split/test_objectdataset_augmentedrot_scale75.h5": 7,
}


# -- registry -----------------------------------------------------------------------------------
def test_readers_are_registered_with_a_description() -> None:
    for name in ("modelnet40", "modelnet10", "scanobjectnn"):
        assert DATASETS.get(name).description


# -- HDF5 layout --------------------------------------------------------------------------------
def test_hdf5_modelnet40_reads_points_labels_and_class_names(hdf5_root: Path) -> None:
    ds = load_dataset("modelnet40", "train", root=hdf5_root, num_points=32)
    assert ds.points.shape == (5, 32, 3) and ds.points.dtype == np.float32
    assert ds.labels.dtype == np.int64
    assert ds.labels.tolist() == [0, 8, 7, 35, 2]
    assert ds.class_names == tuple(MODELNET40)
    assert ds.normals is None
    assert ds.extras["layout"] == "hdf5"


def test_hdf5_files_are_read_in_numeric_order(tmp_path: Path) -> None:
    root = make_hdf5_layout(tmp_path, {"train": [[k] for k in range(12)], "test": [[0]]})
    ds = load_dataset("modelnet40", "train", root=root, num_points=8)
    assert ds.labels.tolist() == list(range(12))  # train10 after train9, not after train1


def test_hdf5_test_split_reads_the_test_files(hdf5_root: Path) -> None:
    ds = load_dataset("modelnet40", "test", root=hdf5_root, num_points=32)
    assert ds.labels.tolist() == [23, 39]


def test_hdf5_modelnet10_keeps_its_ten_classes_relabelled(hdf5_root: Path) -> None:
    ds = load_dataset("modelnet10", "train", root=hdf5_root, num_points=32)
    assert ds.class_names == tuple(MODELNET10)
    assert [ds.class_names[i] for i in ds.labels] == ["chair", "toilet", "bed"]


def test_hdf5_root_may_be_the_parent_folder(hdf5_root: Path) -> None:
    direct = load_dataset("modelnet40", "train", root=hdf5_root, num_points=32)
    parent = load_dataset("modelnet40", "train", root=hdf5_root.parent, num_points=32)
    assert direct.fingerprint == parent.fingerprint


def test_hdf5_normals_are_kept_when_asked(hdf5_root: Path) -> None:
    ds = load_dataset("modelnet40", "train", root=hdf5_root, num_points=32, options={"use_normals": True})
    with h5py.File(hdf5_root / "ply_data_train0.h5") as f:
        expected = f["normal"][:, :32]
    assert ds.normals is not None and ds.normals.shape == (5, 32, 3)
    np.testing.assert_array_equal(ds.normals[:3], expected)


def test_hdf5_use_normals_without_normal_dataset_names_the_file(tmp_path: Path) -> None:
    root = make_hdf5_layout(tmp_path, {"train": [[1]], "test": [[1]]}, normals=False)
    with pytest.raises(DatasetError, match=r"ply_data_train0\.h5.*use_normals"):
        load_dataset("modelnet40", "train", root=root, num_points=8, options={"use_normals": True})


def test_first_sampling_keeps_the_first_points(hdf5_root: Path) -> None:
    ds = load_dataset("modelnet40", "train", root=hdf5_root, num_points=16, normalize=False)
    with h5py.File(hdf5_root / "ply_data_train0.h5") as f:
        np.testing.assert_array_equal(ds.points[:3], f["data"][:, :16])


def test_random_sampling_is_reproducible_by_seed(hdf5_root: Path) -> None:
    def load(seed: int) -> np.ndarray:
        return load_dataset(
            "modelnet40", "train", root=hdf5_root, num_points=16, sampling="random", normalize=False, seed=seed
        ).points

    a, b, c = load(1), load(1), load(2)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    with h5py.File(hdf5_root / "ply_data_train0.h5") as f:
        source = f["data"][0]
    assert all(any(np.array_equal(p, q) for q in source) for p in a[0])  # picked from the cloud


def test_random_sampling_moves_normals_with_their_points(hdf5_root: Path) -> None:
    ds = load_dataset(
        "modelnet40", "train", root=hdf5_root, num_points=16, sampling="random", normalize=False,
        options={"use_normals": True},
    )
    with h5py.File(hdf5_root / "ply_data_train0.h5") as f:
        data, normal = f["data"][0], f["normal"][0]
    rows = [int(np.flatnonzero((data == p).all(axis=1))[0]) for p in ds.points[0]]
    np.testing.assert_array_equal(ds.normals[0], normal[rows])


def _fps_reference(cloud: np.ndarray, m: int) -> list[int]:
    """Plain farthest point sampling from index 0 (first index on ties), in float64."""
    chosen = [0]
    nearest = ((cloud - cloud[0]) ** 2).sum(-1)
    for _ in range(m - 1):
        nearest[chosen] = -1.0
        chosen.append(int(nearest.argmax()))
        nearest = np.minimum(nearest, ((cloud - cloud[chosen[-1]]) ** 2).sum(-1))
    return chosen


def test_fps_sampling_selects_points_of_each_cloud(hdf5_root: Path) -> None:
    ds = load_dataset("modelnet40", "train", root=hdf5_root, num_points=16, sampling="fps", normalize=False)
    sources = []
    for name in ("ply_data_train0.h5", "ply_data_train1.h5"):
        with h5py.File(hdf5_root / name) as f:
            sources.extend(f["data"][:])
    assert ds.points.shape == (5, 16, 3) and len(sources) == 5
    for picked, source in zip(ds.points, sources):
        rows = [int(np.flatnonzero((source == p).all(axis=1))[0]) for p in picked]  # every point from its cloud
        assert rows[0] == 0  # FPS starts from the first point
        assert len(set(rows)) == 16  # distinct points
        # farthest-point property: each new point is the farthest from those chosen before it
        chosen = source[rows].astype(np.float64)
        cloud = source.astype(np.float64)
        for i in range(1, 16):
            gap = ((cloud[:, None] - chosen[None, :i]) ** 2).sum(-1).min(axis=1)  # to the nearest chosen
            assert gap[rows[i]] >= gap.max() - 1e-6 * gap.max(), f"point {i} is not the farthest"
        second = ((cloud - cloud[0]) ** 2).sum(-1).argmax()
        assert rows[1] == second  # the point farthest from the first
        assert rows == _fps_reference(cloud, 16)
        # and the shared implementation picks the same indices
        assert farthest_point_sample(torch.from_numpy(source[None]), 16)[0].tolist() == rows


def test_normalize_puts_each_cloud_in_the_unit_sphere(hdf5_root: Path) -> None:
    ds = load_dataset("modelnet40", "train", root=hdf5_root, num_points=32)
    radius = np.linalg.norm(ds.points, axis=-1).max(axis=1)
    np.testing.assert_allclose(radius, 1.0, atol=1e-5)
    np.testing.assert_allclose(ds.points.mean(axis=1), 0.0, atol=1e-5)


def test_asking_more_points_than_the_files_hold_names_the_file(hdf5_root: Path) -> None:
    with pytest.raises(DatasetError, match=rf"ply_data_train0\.h5.*{POINTS} points.*num_points"):
        load_dataset("modelnet40", "train", root=hdf5_root, num_points=POINTS + 1)


# -- text layout --------------------------------------------------------------------------------
def test_text_modelnet40_reads_points_labels_and_class_names(text_root: Path) -> None:
    ds = load_dataset("modelnet40", "train", root=text_root, num_points=32, normalize=False)
    assert ds.points.shape == (5, 32, 3) and ds.points.dtype == np.float32
    assert ds.class_names == tuple(MODELNET40)
    assert [ds.class_names[i] for i in ds.labels] == ["airplane", "chair", "night_stand", "xbox", "toilet"]
    np.testing.assert_array_equal(ds.points[2], text_file(text_root, "night_stand_0003")[:32, :3])
    assert ds.extras["ids"].tolist() == TEXT_IDS["train"]


def test_text_test_split_reads_the_test_list(text_root: Path) -> None:
    ds = load_dataset("modelnet40", "test", root=text_root, num_points=32)
    assert [ds.class_names[i] for i in ds.labels] == ["bed", "glass_box"]


def test_text_root_may_be_the_parent_folder(text_root: Path) -> None:
    ds = load_dataset("modelnet40", "train", root=text_root.parent, num_points=32)
    assert ds.extras["layout"] == "text" and len(ds) == 5


def test_text_modelnet10_filters_the_modelnet40_lists(text_root: Path) -> None:
    ds = load_dataset("modelnet10", "train", root=text_root, num_points=32)
    assert ds.class_names == tuple(MODELNET10)
    assert [ds.class_names[i] for i in ds.labels] == ["chair", "night_stand", "toilet"]


def test_text_modelnet10_uses_its_own_lists_when_present(text_root: Path) -> None:
    (text_root / "modelnet10_shape_names.txt").write_text("\n".join(MODELNET10) + "\n")
    (text_root / "modelnet10_train.txt").write_text("toilet_0005\n")
    ds = load_dataset("modelnet10", "train", root=text_root, num_points=32)
    assert ds.labels.tolist() == [MODELNET10.index("toilet")]


def test_text_normals_are_kept_when_asked(text_root: Path) -> None:
    ds = load_dataset("modelnet40", "train", root=text_root, num_points=32, options={"use_normals": True})
    assert ds.normals is not None and ds.normals.shape == (5, 32, 3)
    np.testing.assert_array_equal(ds.normals[0], text_file(text_root, "airplane_0001")[:32, 3:])


def test_text_random_sampling_is_reproducible_and_keeps_normals_with_points(text_root: Path) -> None:
    def load(seed: int):
        return load_dataset(
            "modelnet40", "train", root=text_root, num_points=16, sampling="random", normalize=False, seed=seed,
            options={"use_normals": True},
        )

    a, b, c = load(3), load(3), load(4)
    np.testing.assert_array_equal(a.points, b.points)
    assert not np.array_equal(a.points, c.points)
    rows = text_file(text_root, "chair_0002")
    picked = [int(np.flatnonzero((rows[:, :3] == p).all(axis=1))[0]) for p in a.points[1]]
    np.testing.assert_array_equal(a.normals[1], rows[picked, 3:])


def test_text_files_of_different_lengths_are_sampled_together(tmp_path: Path) -> None:
    root = make_text_layout(tmp_path, {"train": ["cup_0001"], "test": ["cup_0002"]})
    longer = make_text_layout(tmp_path / "more", {"train": ["bowl_0003"], "test": []}, points=2 * POINTS)
    (longer / "bowl").rename(root / "bowl")
    (root / "modelnet40_train.txt").write_text("cup_0001\nbowl_0003\n")
    ds = load_dataset("modelnet40", "train", root=root, num_points=POINTS, sampling="random")
    assert ds.points.shape == (2, POINTS, 3)
    assert [ds.class_names[i] for i in ds.labels] == ["cup", "bowl"]


# -- text cache ---------------------------------------------------------------------------------
def test_text_cache_is_hit_after_the_source_files_are_gone(text_root: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    first = load_dataset("modelnet40", "train", root=text_root, num_points=32, cache_dir=cache)
    entries = list((cache / "datasets").glob("*.npz"))
    assert len(entries) == 1
    for path in text_root.glob("*/*.txt"):
        path.unlink()
    again = load_dataset("modelnet40", "train", root=text_root, num_points=32, cache_dir=cache)
    assert again.fingerprint == first.fingerprint
    assert again.extras["ids"].tolist() == TEXT_IDS["train"]


def test_text_cache_gets_a_new_entry_when_the_list_file_changes(text_root: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    load_dataset("modelnet40", "train", root=text_root, num_points=32, cache_dir=cache)
    (text_root / "modelnet40_train.txt").write_text("chair_0002\n")
    ds = load_dataset("modelnet40", "train", root=text_root, num_points=32, cache_dir=cache)
    assert len(ds) == 1
    assert len(list((cache / "datasets").glob("*.npz"))) == 2


def test_text_cache_gets_a_new_entry_when_the_selection_changes(text_root: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    load_dataset("modelnet40", "train", root=text_root, num_points=32, cache_dir=cache)
    ds = load_dataset("modelnet40", "train", root=text_root, num_points=16, cache_dir=cache)
    assert ds.num_points == 16
    assert len(list((cache / "datasets").glob("*.npz"))) == 2


# -- errors: where the data is ------------------------------------------------------------------
@pytest.mark.parametrize("name", ["modelnet40", "modelnet10", "scanobjectnn"])
def test_no_root_asks_for_data_root_and_describes_the_layout(name: str) -> None:
    with pytest.raises(DatasetError, match=r"needs --data-root.*\.h5"):
        load_dataset(name, "train")


@pytest.mark.parametrize("name", ["modelnet40", "scanobjectnn"])
def test_missing_root_names_the_path_tried(name: str, tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(DatasetError, match=rf"{missing}.*does not exist"):
        load_dataset(name, "train", root=missing)


def test_root_without_modelnet_files_describes_the_expected_layout(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"no ModelNet files.*ply_data_train0\.h5.*modelnet40_train\.txt"):
        load_dataset("modelnet40", "train", root=tmp_path)


def test_hdf5_folder_without_split_files_names_the_expected_files(tmp_path: Path) -> None:
    root = make_hdf5_layout(tmp_path, {"train": [[1]]})
    with pytest.raises(DatasetError, match=r"no test files.*ply_data_test0\.h5"):
        load_dataset("modelnet40", "test", root=root, num_points=8)


# -- errors: malformed HDF5 ---------------------------------------------------------------------
def test_h5_without_label_dataset_names_the_file(hdf5_root: Path) -> None:
    with h5py.File(hdf5_root / "ply_data_train1.h5", "a") as f:
        del f["label"]
    with pytest.raises(DatasetError, match=r"ply_data_train1\.h5 has no 'label'"):
        load_dataset("modelnet40", "train", root=hdf5_root, num_points=8)


def test_h5_without_data_dataset_names_the_file(hdf5_root: Path) -> None:
    with h5py.File(hdf5_root / "ply_data_test0.h5", "a") as f:
        del f["data"]
    with pytest.raises(DatasetError, match=r"ply_data_test0\.h5 has no 'data'"):
        load_dataset("modelnet40", "test", root=hdf5_root, num_points=8)


def test_h5_with_wrong_data_shape_names_the_file(hdf5_root: Path) -> None:
    write_h5(hdf5_root / "ply_data_train1.h5", np.zeros((2, 64, 6), np.float32), np.zeros((2, 1), np.uint8))
    with pytest.raises(DatasetError, match=r"ply_data_train1\.h5.*\[2, 64, 6\].*\[n, P, 3\]"):
        load_dataset("modelnet40", "train", root=hdf5_root, num_points=8)


def test_h5_label_out_of_range_names_the_file(hdf5_root: Path) -> None:
    xyz, _ = _clouds(2)
    write_h5(hdf5_root / "ply_data_train1.h5", xyz, np.array([[3], [40]], np.uint8))
    with pytest.raises(DatasetError, match=r"ply_data_train1\.h5.*\[3, 40\].*40 classes"):
        load_dataset("modelnet40", "train", root=hdf5_root, num_points=8)


def test_h5_that_is_not_hdf5_names_the_file(hdf5_root: Path) -> None:
    (hdf5_root / "ply_data_train1.h5").write_text("not hdf5")
    with pytest.raises(DatasetError, match=r"cannot read .*ply_data_train1\.h5 as HDF5"):
        load_dataset("modelnet40", "train", root=hdf5_root, num_points=8)


# -- errors: malformed text ---------------------------------------------------------------------
def test_empty_list_file_names_it(text_root: Path) -> None:
    (text_root / "modelnet40_train.txt").write_text("\n")
    with pytest.raises(DatasetError, match=r"modelnet40_train\.txt is empty"):
        load_dataset("modelnet40", "train", root=text_root, num_points=8)


def test_listed_text_file_missing_names_it(text_root: Path) -> None:
    (text_root / "xbox" / "xbox_0004.txt").unlink()
    with pytest.raises(DatasetError, match=r"missing point file .*xbox_0004\.txt.*modelnet40_train\.txt"):
        load_dataset("modelnet40", "train", root=text_root, num_points=8)


def test_list_entry_of_an_unknown_class_names_the_list(text_root: Path) -> None:
    (text_root / "modelnet40_train.txt").write_text("spaceship_0001\n")
    with pytest.raises(DatasetError, match=r"modelnet40_train\.txt.*'spaceship'"):
        load_dataset("modelnet40", "train", root=text_root, num_points=8)


@pytest.mark.parametrize("sampling", ["first", "random"])
def test_text_file_with_a_short_line_names_it(text_root: Path, sampling: str) -> None:
    path = text_root / "chair" / "chair_0002.txt"
    lines = path.read_text().splitlines()
    lines[3] = "0.1,0.2,0.3"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetError, match=r"chair_0002\.txt"):
        load_dataset("modelnet40", "train", root=text_root, num_points=8, sampling=sampling)


@pytest.mark.parametrize("sampling", ["first", "random"])
def test_text_file_with_a_long_line_names_it(text_root: Path, sampling: str) -> None:
    path = text_root / "chair" / "chair_0002.txt"
    lines = path.read_text().splitlines()
    lines[3] += ",0.5"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetError, match=r"chair_0002\.txt"):
        load_dataset("modelnet40", "train", root=text_root, num_points=8, sampling=sampling)


@pytest.mark.parametrize("sampling", ["first", "random"])
def test_text_file_with_non_numeric_content_names_it(text_root: Path, sampling: str) -> None:
    path = text_root / "toilet" / "toilet_0005.txt"
    lines = path.read_text().splitlines()
    lines[0] = "a,b,c,d,e,f"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetError, match=r"toilet_0005\.txt.*x,y,z,nx,ny,nz"):
        load_dataset("modelnet40", "train", root=text_root, num_points=8, sampling=sampling)


def test_text_file_with_wrong_column_count_names_it(tmp_path: Path) -> None:
    root = make_text_layout(tmp_path, {"train": ["cup_0001"], "test": []}, columns=4)
    with pytest.raises(DatasetError, match=r"cup_0001\.txt has 4 columns"):
        load_dataset("modelnet40", "train", root=root, num_points=8)


def test_text_use_normals_without_normal_columns_names_the_file(tmp_path: Path) -> None:
    root = make_text_layout(tmp_path, {"train": ["cup_0001"], "test": []}, columns=3)
    assert load_dataset("modelnet40", "train", root=root, num_points=8).normals is None
    with pytest.raises(DatasetError, match=r"cup_0001\.txt has only x,y,z.*use_normals"):
        load_dataset("modelnet40", "train", root=root, num_points=8, options={"use_normals": True})


def test_text_file_shorter_than_num_points_names_it(text_root: Path) -> None:
    with pytest.raises(DatasetError, match=rf"airplane_0001\.txt has {POINTS} points.*num_points"):
        load_dataset("modelnet40", "train", root=text_root, num_points=POINTS + 1)


# -- ScanObjectNN -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("variant", "split", "n"),
    [("obj_bg", "train", 2), ("obj_bg", "test", 3), ("obj_only", "train", 4), ("obj_only", "test", 5),
     ("pb_t50_rs", "train", 6), ("pb_t50_rs", "test", 7)],
)
def test_scanobjectnn_variant_reads_its_own_file(tmp_path: Path, variant: str, split: str, n: int) -> None:
    root = make_scanobjectnn(tmp_path, SCAN_FILES)
    ds = load_dataset("scanobjectnn", split, root=root, num_points=32, options={"variant": variant})
    assert ds.points.shape == (n, 32, 3) and ds.points.dtype == np.float32
    assert ds.labels.tolist() == [n % 15] * n
    assert ds.class_names[0] == "bag" and ds.class_names[14] == "toilet" and ds.num_classes == 15
    assert ds.extras["variant"] == variant


def test_scanobjectnn_default_variant_is_pb_t50_rs(tmp_path: Path) -> None:
    root = make_scanobjectnn(tmp_path, SCAN_FILES)
    assert len(load_dataset("scanobjectnn", "test", root=root, num_points=32)) == 7


def test_scanobjectnn_accepts_the_h5_files_folder_as_parent(tmp_path: Path) -> None:
    make_scanobjectnn(tmp_path / "h5_files", SCAN_FILES)
    assert len(load_dataset("scanobjectnn", "train", root=tmp_path, num_points=32)) == 6


def test_scanobjectnn_accepts_the_variant_spelled_as_in_the_paper(tmp_path: Path) -> None:
    root = make_scanobjectnn(tmp_path, SCAN_FILES)
    ds = load_dataset("scanobjectnn", "train", root=root, num_points=32, options={"variant": "PB_T50_RS"})
    assert len(ds) == 6


def test_scanobjectnn_unknown_variant_lists_the_choices(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"'pb_t50'.*did you mean 'pb_t50_rs'.*obj_bg, obj_only, pb_t50_rs"):
        load_dataset("scanobjectnn", "train", root=tmp_path, options={"variant": "pb_t50"})


def test_scanobjectnn_missing_file_names_the_path_and_the_layout(tmp_path: Path) -> None:
    make_scanobjectnn(tmp_path, {"main_split/training_objectdataset.h5": 2})
    with pytest.raises(
        DatasetError, match=r"missing .*main_split_nobg/test_objectdataset\.h5.*augmentedrot_scale75"
    ):
        load_dataset("scanobjectnn", "test", root=tmp_path, options={"variant": "obj_only"})


def test_scanobjectnn_label_out_of_range_names_the_file(tmp_path: Path) -> None:
    xyz, _ = _clouds(2)
    write_h5(tmp_path / "main_split/test_objectdataset.h5", xyz, np.array([0, 15]))
    with pytest.raises(DatasetError, match=r"test_objectdataset\.h5.*\[0, 15\].*15 classes"):
        load_dataset("scanobjectnn", "test", root=tmp_path, num_points=8, options={"variant": "obj_bg"})


def test_scanobjectnn_random_sampling_and_normalisation(tmp_path: Path) -> None:
    root = make_scanobjectnn(tmp_path, SCAN_FILES)
    a = load_dataset("scanobjectnn", "train", root=root, num_points=16, sampling="random", seed=5)
    b = load_dataset("scanobjectnn", "train", root=root, num_points=16, sampling="random", seed=5)
    np.testing.assert_array_equal(a.points, b.points)
    np.testing.assert_allclose(np.linalg.norm(a.points, axis=-1).max(axis=1), 1.0, atol=1e-5)
