"""Fuzzing (hypothesis): malformed data files and malformed point tensors end in a clear error.

Every case must either succeed with a result that is checked against the input (right shapes,
finite values, the values that were stored) or raise the error type the module promises with a
message naming the problem: ``DatasetError`` for data files, ``ValueError`` for tensors given to
attacks and defenses. Anything else (a ``RuntimeError``/``IndexError`` from deep inside torch or
numpy, a hang, a silent NaN) fails the test.

Example counts are small and the runs derandomised (``database=None``), so the file is fast and
the same on every machine; set ``PCRB_FUZZ_EXAMPLES=500`` to search harder locally (random seeds).
"""
from __future__ import annotations

import math
import os
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import attacks  # noqa: F401 - registers the attack families
from attacks.base import MAX_ABS_COORDINATE, AttackResult
from attacks.cw import CW
from attacks.pgd import FGM, PGD
from benchmark.core.data import DatasetError, load_dataset
from benchmark.core.data.hdf5 import read_h5_clouds
from benchmark.core.registry import ATTACKS
from defenses import build_defense
from defenses.base import DefenseContext, check_points
from tiny_models import C, TinyPointNet, frozen, unit_clouds

_EXTRA = int(os.environ.get("PCRB_FUZZ_EXAMPLES", "0"))


def fuzz(examples: int) -> settings:
    """Hypothesis settings: ``examples`` cases, no deadline, no example database, derandomised."""
    return settings(max_examples=_EXTRA or examples, deadline=None, database=None, derandomize=not _EXTRA,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@pytest.fixture(autouse=True)
def no_hang() -> Iterator[None]:
    """Every test here finishes within 60 s or fails (a hang is a bug)."""
    def expire(signum, frame):
        raise TimeoutError("a fuzz case hung for 60 s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(60 if not _EXTRA else 0)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


# =============================================================================================== HDF5

NUM_CLASSES = 5
SPECIAL = [math.nan, math.inf, -math.inf, 1e30, -1e300, 0.0, 2.0, 4.0, 7.0, -1.0, 0.5]
DTYPES = ["float32", "float64", "float16", "int8", "uint8", "int64", "uint64", "bool", "complex64", "S3"]


@st.composite
def h5_array(draw: st.DrawFn, shape: tuple[int, ...] | None = None, plausible: bool = False,
             integers: bool = False) -> np.ndarray | str:
    """An array of any small shape and dtype (with NaN, inf and out-of-range values), or "group";
    ``plausible`` draws mostly the dtypes and values real files hold."""
    if not plausible and draw(st.integers(0, 19)) == 0:
        return "group"
    if shape is None:
        rank = draw(st.integers(0, 4))
        shape = tuple(draw(st.integers(0, 4)) for _ in range(rank))
    if plausible:
        dtype = draw(st.sampled_from(["uint8", "int64", "float64"] if integers else ["float32", "float32", "float64"]))
        elements = st.integers(0, NUM_CLASSES - 1) if integers else st.floats(-3, 3, width=32)
        if draw(st.integers(0, 3)) == 0:  # a few odd values
            elements = st.one_of(elements, st.sampled_from(SPECIAL))
    else:
        dtype = draw(st.sampled_from(DTYPES))
        elements = st.one_of(st.floats(-3, 3), st.sampled_from(SPECIAL))
    size = int(np.prod(shape)) if shape else 1
    if dtype == "S3":
        return np.array([b"abc"] * size, dtype="S3").reshape(shape)
    values = draw(st.lists(elements, min_size=size, max_size=size))
    with np.errstate(all="ignore"):
        return np.asarray(values, dtype=np.float64).reshape(shape).astype(dtype)


@st.composite
def h5_contents(draw: st.DrawFn) -> dict[str, np.ndarray | str]:
    """Datasets for a ModelNet-style file: often well formed, often not (missing, extra, wrong keys)."""
    plausible = draw(st.integers(0, 3)) > 0
    n, p = draw(st.integers(0 if not plausible else 1, 3)), draw(st.integers(0 if not plausible else 1, 5))
    out: dict[str, np.ndarray | str] = {}
    if draw(st.integers(0, 9)):
        out["data"] = draw(h5_array((n, p, 3), plausible=True) if plausible else h5_array())
    if draw(st.integers(0, 9)):
        label_shape = draw(st.sampled_from([(n,), (n, 1), (n,), (n, 1), (n, 2), ()]))
        out["label"] = draw(h5_array(label_shape, plausible=True, integers=True) if plausible else h5_array())
    if draw(st.booleans()):
        out["normal"] = draw(h5_array((n, p, 3), plausible=True) if plausible else h5_array())
    if draw(st.integers(0, 4)) == 0:
        out["junk"] = draw(h5_array())
    return out


def write_h5(path: Path, contents: dict[str, np.ndarray | str]) -> Path:
    with h5py.File(path, "w") as f:
        for key, value in contents.items():
            if isinstance(value, str):
                f.create_group(key)
            else:
                f.create_dataset(key, data=value)
    return path


@fuzz(50)
@given(contents=h5_contents(), normals=st.booleans(), first=st.sampled_from([None, 1, 2, 100]))
def test_malformed_hdf5_is_read_exactly_or_rejected_naming_the_file(contents, normals, first):
    with tempfile.TemporaryDirectory() as tmp:
        path = write_h5(Path(tmp) / "ply_data_train0.h5", contents)
        try:
            points, labels, normal = read_h5_clouds(path, num_classes=NUM_CLASSES, first=first, normals=normals)
        except DatasetError as err:
            assert str(path) in str(err)
            event("rejected")
            return
    event("accepted")
    # accepted: exactly what the file holds, as float32 clouds and int64 labels in range
    data, label = np.asarray(contents["data"]), np.asarray(contents["label"])
    take = first if first is not None and first <= data.shape[1] else data.shape[1]
    assert points.dtype == np.float32 and points.ndim == 3 and points.shape[2] == 3 and points.shape[0] >= 1
    np.testing.assert_array_equal(points, data[:, :take].astype(np.float32))
    assert np.isfinite(points).all()
    assert labels.dtype == np.int64 and labels.shape == (len(points),)
    np.testing.assert_array_equal(labels, label.reshape(-1))
    assert labels.min() >= 0 and labels.max() < NUM_CLASSES
    if normals:
        np.testing.assert_array_equal(normal, np.asarray(contents["normal"])[:, :take].astype(np.float32))
    else:
        assert normal is None


@pytest.fixture(scope="module")
def valid_h5_bytes(tmp_path_factory) -> bytes:
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("h5") / "valid.h5"
    write_h5(path, {"data": rng.normal(size=(6, 32, 3)).astype(np.float32),
                    "label": rng.integers(0, NUM_CLASSES, size=(6, 1)).astype(np.uint8)})
    return path.read_bytes()


@fuzz(40)
@given(data=st.data())
def test_truncated_or_overwritten_hdf5_is_rejected_or_read_with_valid_shapes(valid_h5_bytes, data):
    raw = bytearray(valid_h5_bytes)
    how = data.draw(st.sampled_from(["truncate", "overwrite", "garbage", "empty"]))
    if how == "truncate":
        raw = raw[: data.draw(st.integers(0, len(raw) - 1))]
    elif how == "overwrite":
        at = data.draw(st.integers(0, len(raw) - 1))
        chunk = data.draw(st.binary(min_size=1, max_size=64))
        raw[at : at + len(chunk)] = chunk
    elif how == "garbage":
        raw = bytearray(data.draw(st.binary(min_size=1, max_size=4096)))
    else:
        raw = bytearray()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ply_data_train0.h5"
        path.write_bytes(bytes(raw))
        try:
            points, labels, _ = read_h5_clouds(path, num_classes=NUM_CLASSES)
        except DatasetError as err:
            assert str(path) in str(err)
            event("rejected")
            return
    event("accepted")
    # HDF5 keeps no checksums: a byte changed inside the data region is undetectable; the reader
    # still hands back well-formed, finite clouds with labels in range
    assert points.shape[0] == labels.shape[0] >= 1 and points.shape[2] == 3 and np.isfinite(points).all()
    assert 0 <= labels.min() and labels.max() < NUM_CLASSES


@fuzz(25)
@given(contents=h5_contents(), name=st.sampled_from(["modelnet40", "modelnet10", "scanobjectnn"]))
def test_the_dataset_entry_points_reject_malformed_hdf5_with_a_dataset_error(contents, name):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        if name == "scanobjectnn":
            folder = root / "main_split"
            folder.mkdir()
            write_h5(folder / "training_objectdataset_augmentedrot_scale75.h5", contents)
        else:
            folder = root / "modelnet40_ply_hdf5_2048"
            folder.mkdir()
            (folder / "shape_names.txt").write_text("\n".join(MODELNET40) + "\n")
            write_h5(folder / "ply_data_train0.h5", contents)
        try:
            ds = load_dataset(name, "train", root=root, num_points=2)
        except DatasetError:
            event("rejected")
            return
        event("accepted")
        assert ds.points.shape[1:] == (2, 3) and np.isfinite(ds.points).all() and len(ds.labels) == len(ds)


MODELNET40 = ("airplane bathtub bed bench bookshelf bottle bowl car chair cone cup curtain desk door dresser "
              "flower_pot glass_box guitar keyboard lamp laptop mantel monitor night_stand person piano plant "
              "radio range_hood sink sofa stairs stool table tent toilet tv_stand vase wardrobe xbox").split()


# ================================================================================ ModelNet text files

TOKENS = ["0", "1.5", "-2", "1e-3", "nan", "inf", "-inf", "1e39", "", " ", "abc", "0x1", "1,5", "ä", "3.0e+2"]


@st.composite
def point_file(draw: st.DrawFn) -> bytes:
    """The bytes of one ``x,y,z,nx,ny,nz`` file: often nearly valid, sometimes garbage."""
    kind = draw(st.sampled_from(["numbers", "numbers", "tokens", "bytes"]))
    if kind == "bytes":
        return draw(st.binary(max_size=512))
    rows, cols = draw(st.integers(0, 40)), draw(st.sampled_from([3, 6, 6, 0, 1, 2, 4, 7]))
    if kind == "numbers":
        values = draw(st.lists(st.floats(-10, 10, width=32), min_size=rows * cols, max_size=rows * cols))
        lines = [",".join(f"{v:.6f}" for v in values[r * cols : (r + 1) * cols]) for r in range(rows)]
    else:
        lines = [",".join(draw(st.lists(st.sampled_from(TOKENS), min_size=cols, max_size=cols))) for _ in range(rows)]
    sep = draw(st.sampled_from(["\n", "\r\n"]))
    return (sep.join(lines) + (sep if draw(st.booleans()) else "")).encode()


def text_layout(root: Path, cup: bytes, names: bytes | None = None, listing: bytes | None = None) -> None:
    folder = root / "modelnet40_normal_resampled"
    for cls in ("cup", "lamp"):
        (folder / cls).mkdir(parents=True)
    (folder / "modelnet40_shape_names.txt").write_bytes(names if names is not None else b"cup\nlamp\n")
    (folder / "modelnet40_train.txt").write_bytes(listing if listing is not None else b"cup_0001\nlamp_0002\n")
    (folder / "cup" / "cup_0001.txt").write_bytes(cup)
    lamp = np.random.default_rng(1).normal(size=(32, 6))
    np.savetxt(folder / "lamp" / "lamp_0002.txt", lamp, fmt="%.6f", delimiter=",")


@fuzz(50)
@given(cup=point_file(), sampling=st.sampled_from(["first", "random", "fps"]), normals=st.booleans())
def test_malformed_point_text_files_are_rejected_naming_the_file(cup, sampling, normals):
    with tempfile.TemporaryDirectory() as tmp:
        text_layout(Path(tmp), cup)
        try:
            ds = load_dataset("modelnet40", "train", root=tmp, num_points=4, sampling=sampling, normalize=False,
                              options={"use_normals": normals})
        except DatasetError as err:
            assert "cup_0001.txt" in str(err)
            event("rejected")
            return
    event("accepted")
    assert ds.points.shape == (2, 4, 3) and np.isfinite(ds.points).all()
    assert ds.labels.tolist() == [0, 1] and ds.class_names == ("cup", "lamp")
    assert (ds.normals is not None) == normals
    if sampling == "first":  # the first rows of the file, exactly
        rows = [line.split(b",") for line in cup.splitlines()[:4]]
        np.testing.assert_allclose(ds.points[0], np.array([[float(v) for v in r[:3]] for r in rows]), rtol=1e-6)


NAMES = [b"cup\nlamp\n", b"cup\r\nlamp\r\n", b"lamp\ncup\n", b"cup\n", b"", b"\n\n", b"\xff\xfe\x00"]
LISTS = [b"cup_0001\nlamp_0002\n", b"cup_0001\n", b"lamp_0002\r\n", b"", b"cup\n", b"../cup/cup_0001\n",
         b"spoon_0003\n", b"cup_0001\ncup_0001\n", b"\xff\xfe\x00"]


@fuzz(30)
@given(names=st.one_of(st.sampled_from(NAMES), st.binary(max_size=64)),
       listing=st.one_of(st.sampled_from(LISTS), st.binary(max_size=64)), fuzz_names=st.booleans())
def test_malformed_names_and_split_lists_are_rejected_naming_the_file(names, listing, fuzz_names):
    valid = np.random.default_rng(2).normal(size=(8, 6))
    names, listing = (names, LISTS[0]) if fuzz_names else (NAMES[0], listing)
    with tempfile.TemporaryDirectory() as tmp:
        text_layout(Path(tmp), "\n".join(",".join(f"{v:.4f}" for v in r) for r in valid).encode(), names, listing)
        try:
            ds = load_dataset("modelnet40", "train", root=tmp, num_points=4)
        except DatasetError as err:
            assert "modelnet40_" in str(err) or ".txt" in str(err)
            event("rejected")
            return
    event("accepted")
    assert len(ds) >= 1 and np.isfinite(ds.points).all() and ds.labels.max() < ds.num_classes


# ============================================================================ tensors given to attacks

GOOD_VALUES = ["normal", "normal", "duplicated", "tiny", "zeros", "large"]
VALUES = GOOD_VALUES + ["nan", "inf", "huge"]


@st.composite
def point_batches(draw: st.DrawFn) -> tuple[object, str]:
    """A batch ``[B, N, 3]`` (half the time well formed; else of another rank, width or dtype, empty, or
    with NaN, inf or huge values); and how its values were made."""
    good = draw(st.booleans())
    if good:
        shape = (draw(st.integers(1, 3)), draw(st.sampled_from([1, 2, 3, 5, 8, 20])), 3)
    elif (rank := draw(st.sampled_from([3, 3, 3, 1, 2, 4]))) == 3:
        shape = (draw(st.integers(0, 3)), draw(st.integers(0, 6)), draw(st.sampled_from([3, 3, 2, 4])))
    else:
        shape = tuple(draw(st.integers(0, 4)) for _ in range(rank))
    values = draw(st.sampled_from(GOOD_VALUES if good else VALUES))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**16)))
    x = torch.randn(shape, generator=g)
    if values == "nan" and x.numel():
        x.view(-1)[draw(st.integers(0, x.numel() - 1))] = math.nan
    elif values == "inf" and x.numel():
        x.view(-1)[draw(st.integers(0, x.numel() - 1))] = draw(st.sampled_from([math.inf, -math.inf]))
    elif values == "huge":
        x = x * draw(st.sampled_from([1e5, 1e20, 1e37]))
    elif values == "large":
        x = x.clamp(-1, 1) * 1e3  # within MAX_ABS_COORDINATE: must work
    elif values == "duplicated" and x.dim() >= 2 and shape[-2] > 0:
        x = x.narrow(-2, 0, 1).expand(*shape).contiguous()
    elif values == "tiny":
        x = x * 1e-30
    elif values == "zeros":
        x = torch.zeros(shape)
    dtypes = [torch.float32, torch.float32, torch.float64, torch.float16]
    dtype = draw(st.sampled_from(dtypes if good else dtypes + [torch.int64, torch.bool]))
    return x.to(dtype), values


def well_formed(x: object) -> bool:
    """What the attack and defense contracts accept."""
    return (isinstance(x, torch.Tensor) and x.dim() == 3 and x.shape[-1] == 3 and x.shape[0] > 0 and x.shape[1] > 0
            and x.is_floating_point() and bool(torch.isfinite(x).all())
            and float(x.abs().amax()) <= MAX_ABS_COORDINATE)


@pytest.fixture(scope="module")
def net() -> TinyPointNet:
    return frozen(TinyPointNet())


@fuzz(50)
@given(batch=point_batches(), which=st.sampled_from(["pgd", "fgm", "cw"]), label_kind=st.sampled_from(
    ["valid"] * 6 + ["out of range", "float", "wrong length"]))
def test_attacks_on_malformed_tensors_succeed_finitely_or_raise_value_error(net, batch, which, label_kind):
    x, _ = batch
    b = x.shape[0] if x.dim() >= 1 else 0
    labels = {"valid": torch.arange(b) % C, "out of range": torch.full((b,), C), "float": torch.zeros(b),
              "wrong length": torch.zeros(b + 1, dtype=torch.long)}[label_kind]
    attack = {"pgd": PGD(steps=2), "fgm": FGM(), "cw": CW(binary_steps=1, num_iter=2)}[which]
    try:
        res = attack(net, x, labels)
    except ValueError as err:
        message = str(err)
        assert "points" in message or "labels" in message, message
        assert not (well_formed(x) and label_kind == "valid"), f"a well-formed batch was refused: {message}"
        event("rejected")
        return
    event("accepted")
    assert well_formed(x) and label_kind == "valid", "a malformed batch was accepted"
    check_result(res, x)


def check_result(res: AttackResult, x: torch.Tensor) -> None:
    """A finite, well-shaped result for the batch ``x``."""
    b = x.shape[0]
    assert res.points.dim() == 3 and res.points.shape[0] == b and res.points.shape[2] == 3
    assert bool(torch.isfinite(res.points).all())
    assert res.success.dtype == torch.bool and res.success.shape == (b,)
    assert res.pred.shape == (b,) and bool(((res.pred >= 0) & (res.pred < C)).all())
    for distance in (res.chamfer, res.hausdorff):
        assert bool(torch.isfinite(distance).all()) and bool((distance >= 0).all())
    if res.points.shape == x.shape:
        assert bool(torch.isfinite(res.l2).all())


#: Tiny settings for every registered attack (a new attack must add its own here).
TINY = {"pgd": {"steps": 2}, "fgm": {}, "ifgm": {"steps": 2}, "cw": {"binary_steps": 1, "num_iter": 2},
        "knn": {"num_iter": 2}, "add-cd": {"binary_steps": 1, "num_iter": 2, "num_add": 4},
        "add-hd": {"binary_steps": 1, "num_iter": 2, "num_add": 4}, "drop-100": {"per_round": 50},
        "drop-200": {"per_round": 50}, "advpc": {"restarts": 1, "num_iter": 2},
        "aof": {"restarts": 1, "num_iter": 2, "num_low": 8, "k": 4},
        "apgd": {"steps": 3}, "fmn": {"steps": 3}}


def special_clouds() -> dict[str, torch.Tensor]:
    x = unit_clouds(2, 64, seed=3)
    return {
        "one point": x[:, :1], "two points": x[:, :2], "five points": x[:, :5],
        "all points identical": x[:, :1].expand(2, 64, 3).contiguous(),
        "every point twice": torch.cat([x[:, :32], x[:, :32]], dim=1),
        "tiny scale": x * 1e-20, "large scale": x * 1e3,
        "a NaN": torch.where(x > 0.95, torch.nan, x), "huge scale": x * 1e20, "near float max": x * 3e38,
    }


@pytest.mark.parametrize("case", list(special_clouds()))
@pytest.mark.parametrize("name", sorted(ATTACKS.names()))
def test_every_attack_on_degenerate_clouds_succeeds_finitely_or_raises_value_error(net, name, case):
    from models.autoencoder import PointCloudAutoencoder

    assert name in TINY, f"add tiny parameters for the new attack '{name}' to TINY in tests/test_fuzz.py"
    x = special_clouds()[case]
    attack = ATTACKS.build(name, **TINY[name])
    if hasattr(attack, "with_autoencoder"):
        attack.with_autoencoder(frozen(PointCloudAutoencoder(num_points=x.shape[1])))
    try:
        res = attack(net, x, torch.tensor([0, 1]))
    except ValueError as err:
        assert "points" in str(err) or "N = " in str(err) or "N=" in str(err), str(err)
        return
    assert well_formed(x), f"{name} accepted {case}"
    check_result(res, x)


# =========================================================================== tensors given to defenses


@pytest.fixture(scope="module")
def ctx(net) -> DefenseContext:
    train = load_dataset("synthshapes", "train", num_points=32, options={"train_size": 4, "classes": ["cup", "lamp"]})
    return DefenseContext(victim=net, train=train, progress=False, log=lambda m: None)


@fuzz(50)
@given(batch=point_batches())
def test_check_points_accepts_exactly_the_well_formed_batches(batch):
    x, _ = batch
    try:
        out = check_points(x, "fuzzed")
    except ValueError as err:
        assert str(err).startswith("fuzzed: ") and not well_formed(x)
        event("rejected")
        return
    event("accepted")
    assert out is x and well_formed(x)


@fuzz(40)
@given(batch=point_batches(), name=st.sampled_from(["sor", "sor-mrpd", "srs"]))
def test_preprocess_defenses_on_malformed_float_tensors_give_finite_logits_or_value_error(ctx, batch, name):
    x, _ = batch
    defended = build_defense(name, **({"num_drop": 2} if name == "srs" else {}))(ctx)
    try:
        logits = defended(x)
        x_grad = x.clone().requires_grad_(True)
        defended.attackable(eot=2)(x_grad).sum().backward()
    except ValueError as err:
        assert str(err).split(":")[0] in (name, name.split("-")[0]), str(err)  # names the defense
        event("rejected")
        return
    event("accepted")
    assert well_formed(x)
    assert logits.shape == (x.shape[0], C) and bool(torch.isfinite(logits).all())
    assert x_grad.grad is not None and bool(torch.isfinite(x_grad.grad).all())


def test_a_model_defense_refuses_a_nan_batch(ctx):
    defended = build_defense("none")(ctx)
    with pytest.raises(ValueError, match="NaN"):
        defended(torch.full((1, 8, 3), math.nan))
