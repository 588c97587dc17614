"""The modelnet40 reader on genuine ModelNet40 files (../shared/data), skipped where they are absent."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from benchmark.core.data import load_dataset

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
TEXT = SHARED / "modelnet40_normal_resampled"

MODELNET40 = (
    "airplane bathtub bed bench bookshelf bottle bowl car chair cone cup curtain desk door dresser "
    "flower_pot glass_box guitar keyboard lamp laptop mantel monitor night_stand person piano plant "
    "radio range_hood sink sofa stairs stool table tent toilet tv_stand vase wardrobe xbox"
).split()

pytestmark = pytest.mark.skipif(not TEXT.is_dir(), reason=f"shared ModelNet40 files absent ({TEXT})")


@pytest.fixture(scope="module", params=["train", "test"])
def split_and_dataset(request: pytest.FixtureRequest):
    ds = load_dataset("modelnet40", request.param, root=SHARED, num_points=1024, options={"use_normals": True})
    return request.param, ds


def test_real_files_give_the_official_split_sizes(split_and_dataset) -> None:
    split, ds = split_and_dataset
    assert len(ds) == {"train": 36, "test": 3}[split]
    assert ds.points.shape[1:] == (1024, 3) and ds.normals.shape == ds.points.shape


def test_real_files_carry_the_standard_40_class_names(split_and_dataset) -> None:
    _, ds = split_and_dataset
    assert ds.class_names == tuple(MODELNET40)


def test_real_labels_match_the_folders_the_files_live_in(split_and_dataset) -> None:
    _, ds = split_and_dataset
    folders = [shape_id.rsplit("_", 1)[0] for shape_id in ds.extras["ids"]]
    assert [ds.class_names[i] for i in ds.labels] == folders
    assert all((TEXT / f / f"{i}.txt").is_file() for f, i in zip(folders, ds.extras["ids"]))


def test_real_clouds_are_unit_sphere_with_unit_normals(split_and_dataset) -> None:
    _, ds = split_and_dataset
    np.testing.assert_allclose(np.linalg.norm(ds.points, axis=-1).max(axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(ds.normals, axis=-1), 1.0, atol=1e-3)


def test_real_points_are_the_first_lines_of_each_file(split_and_dataset) -> None:
    split, _ = split_and_dataset
    raw = load_dataset("modelnet40", split, root=TEXT, num_points=1024, normalize=False)
    first = TEXT / raw.class_names[raw.labels[0]] / f"{raw.extras['ids'][0]}.txt"
    expected = np.loadtxt(first, delimiter=",", max_rows=1024, dtype=np.float32)[:, :3]
    np.testing.assert_array_equal(raw.points[0], expected)
