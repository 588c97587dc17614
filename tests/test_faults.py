"""Kill -9 during every cache and results write, and corrupt every cache file kind: the next run
detects the damage, recomputes, and ends with the same results as an uninterrupted run.

Every writer writes a temporary file beside its target and renames it into place (cache entries:
payload first, then the JSON sidecar holding size and sha256; results: the merged CSV under a
lock). :func:`install_kill_hook` wraps ``os.replace`` in a doomed process and SIGKILLs it, with no
cleanup, at one of three points of the n-th write of one kind of file:

- ``payload-partial``: the payload's temporary file is cut to half its bytes, before its rename
  (the state a kill in the middle of writing the payload leaves);
- ``payload-renamed``: just after the payload's rename, before its sidecar exists;
- ``sidecar-partial``: the sidecar's temporary file is cut in half, before its rename.

Unit tests fork the test process to do one real write through the real entry point (zoo,
teacher-feature cache, crafting, results store) and die; end-to-end tests kill a real
``bench run`` the same way and run it again. Kinds are the cache's folder names
(``weights``, ``defenses``, ``features``, ``adversarial``, ``adversarial-parts``, ``datasets``)
plus ``results`` for the CSV.
"""
from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import os
import shutil
import signal
import subprocess
import time
import traceback
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from attacks.crafting import PARTS_KIND, craft, crafting_key
from attacks.invariance import compare_results
from attacks.pgd import PGD
from benchmark.core.cache import cached_features, load_arrays
from benchmark.core.config import TrainConfig
from benchmark.core.data import load_dataset
from benchmark.store import ResultStore
from defenses.base import DefenseContext
from models.zoo import Zoo, ZooContext
from test_determinism import TINY_RUN, bench, reference_run, stable_rows
from tiny_models import TinyPointNet, frozen, unit_clouds

POINTS = ("payload-partial", "payload-renamed", "sidecar-partial")
_REAL_REPLACE = os.replace


# ============================================================================== the fault injection


def install_kill_hook(point: str, kind: str, nth: int = 1) -> None:
    """In this process, SIGKILL at ``point`` of the ``nth`` write of a ``kind`` file (see the module doc)."""
    if point not in POINTS:
        raise ValueError(f"unknown kill point {point!r}; one of {POINTS}")
    real_replace = os.replace
    seen = [0]

    def replace(src: Any, dst: Any, *args: Any, **kwargs: Any) -> None:
        target = Path(os.fsdecode(dst))
        target_kind = "results" if target.suffix == ".csv" else target.parent.name
        is_sidecar = target.name.endswith(".json")
        if target_kind == kind and is_sidecar == (point == "sidecar-partial"):
            seen[0] += 1
            if seen[0] == int(nth):
                if point.endswith("-partial"):
                    os.truncate(src, os.path.getsize(src) // 2)
                else:
                    real_replace(src, dst, *args, **kwargs)
                os.kill(os.getpid(), signal.SIGKILL)
        real_replace(src, dst, *args, **kwargs)

    os.replace = replace


def die_during(work: Callable[[], Any], point: str, kind: str, nth: int = 1, timeout: float = 120.0) -> None:
    """Run ``work`` in a forked child that is SIGKILLed by the hook; fail if it is not."""
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 3
        try:
            torch.set_num_threads(1)
            install_kill_hook(point, kind, nth)
            work()
        except BaseException:  # noqa: BLE001 - reported through the exit code
            traceback.print_exc()
            code = 4
        finally:
            os._exit(code)
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            pytest.fail(f"the doomed writer hung for {timeout:.0f} s")
        time.sleep(0.01)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, (
        f"the child exited with {os.waitstatus_to_exitcode(status)} instead of being killed at {point} of {kind} "
        f"write {nth}: that write never happened (3) or the work raised (4)")


def temporaries(folder: Path) -> list[Path]:
    """Temporary files a killed writer left in ``folder`` (``.<name>.<random>.tmp``)."""
    return sorted(p for p in folder.glob(".*.tmp")) if folder.is_dir() else []


def payloads(folder: Path, pattern: str) -> list[Path]:
    return sorted(p for p in folder.glob(pattern) if not p.name.startswith("."))


def sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".json")


def assert_killed_state(folder: Path, pattern: str, point: str) -> None:
    """What each kill point leaves: never a payload with a valid sidecar; the partial bytes only in temps."""
    found = payloads(folder, pattern)
    temps = temporaries(folder)
    if point == "payload-partial":
        assert found == [] and len(temps) == 1, (found, temps)
    else:
        assert len(found) == 1 and not sidecar(found[0]).exists(), found
        assert len(temps) == (1 if point == "sidecar-partial" else 0), temps


def expected_warnings(point: str) -> int:
    """A payload-partial kill leaves no entry at all (silently recomputed); the others leave a payload
    without its sidecar, which is reported once."""
    return 0 if point == "payload-partial" else 1


def runtime_warnings(caught: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]


@contextlib.contextmanager
def recorded() -> Iterator[list[str]]:
    """``with recorded() as caught:`` collects the RuntimeWarnings raised inside (every one, every time)."""
    messages: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield messages
    messages.extend(runtime_warnings(caught))


# ========================================================================== the writers under test

FEATURES = np.random.default_rng(0).normal(size=(48, 16)).astype(np.float32)
FEATURE_KEY = {"teacher": "clip", "weights": "abc", "projection": {"size": 64}}


@pytest.fixture(scope="module")
def data() -> dict[str, Any]:
    opts = {"train_size": 24, "test_size": 6, "classes": ["chair", "lamp", "cup"]}
    return {split: load_dataset("synthshapes", split, num_points=64, options=opts) for split in ("train", "test")}


def zoo(data: dict[str, Any], cache: Path) -> Zoo:
    return Zoo(ZooContext(train=data["train"], test=data["test"], cache_dir=cache, seed=0, progress=False,
                          train_config=lambda name: TrainConfig(epochs=1, batch_size=8, val_fraction=0.0),
                          log=lambda message: None))


def state_bytes(module: nn.Module) -> bytes:
    return b"".join(v.detach().numpy().tobytes() for _, v in sorted(module.state_dict().items()))


@pytest.fixture(scope="module")
def trained_reference(data, tmp_path_factory) -> bytes:
    """The weights of an uninterrupted training (the zoo trains deterministically on CPU)."""
    return state_bytes(zoo(data, tmp_path_factory.mktemp("zoo-reference")).get("pointnet-lite").model)


def fit_linear(module: nn.Linear) -> dict[str, Any]:
    """A deterministic stand-in for a defense's training: sets every parameter."""
    with torch.no_grad():
        module.weight.copy_(torch.arange(9.0).view(3, 3))
        module.bias.fill_(0.5)
    return {"epochs": 1}


N_CLOUDS, BATCH = 12, 5  # three crafting batches: parts b0-5, b5-10, b10-12


@pytest.fixture(scope="module")
def net() -> nn.Module:
    """float64: the killed child crafts on one thread, the parent on its own count, and the resumed
    set must equal the uninterrupted one under the guarantee of ``attacks.invariance`` (to 1e-9,
    discrete outcomes identical), which float64 makes checkable."""
    return frozen(TinyPointNet().double())


@pytest.fixture(scope="module")
def clouds(net) -> tuple[torch.Tensor, torch.Tensor]:
    x = unit_clouds(N_CLOUDS, 64, seed=5).double()
    with torch.no_grad():
        return x, net(x).argmax(1)


class Counting(nn.Module):
    """The same model, counting the clouds of every forward (to see which batches were re-attacked)."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.batches: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.batches.append(int(x.shape[0]))
        return self.inner(x)


ATTACK = PGD(steps=2)
KEY = crafting_key(ATTACK, model_hash="tiny", dataset_fingerprint="clouds", split="test")


def craft_set(model: nn.Module, clouds: tuple[torch.Tensor, torch.Tensor], cache: Path | None) -> Any:
    return craft(ATTACK, model, *clouds, key=KEY, cache_dir=cache, batch_size=BATCH)


def same_crafted(a: Any, b: Any) -> list[str]:
    """How ``a`` differs from ``b`` beyond the reproducibility guarantee (``[]``: indistinguishable)."""
    return compare_results(a, b)


# ================================================================================ kill -9, unit level


@pytest.mark.parametrize("point", POINTS)
def test_a_killed_teacher_feature_write_is_recomputed_to_the_same_features(tmp_path, point):
    die_during(lambda: cached_features(tmp_path, "mrpd-image", FEATURE_KEY, lambda: FEATURES), point, "features")
    assert_killed_state(tmp_path / "features", "mrpd-image-*.npy", point)
    calls = []
    with recorded() as caught:
        features, hit = cached_features(tmp_path, "mrpd-image", FEATURE_KEY, lambda: calls.append(1) or FEATURES)
    assert (hit, len(calls), len(caught)) == (False, 1, expected_warnings(point))
    assert all("interrupted write" in m for m in caught)
    np.testing.assert_array_equal(features, FEATURES)
    with recorded() as caught:
        again, hit = cached_features(tmp_path, "mrpd-image", FEATURE_KEY, lambda: calls.append(1) or FEATURES)
    assert hit and caught == [] and len(calls) == 1 and np.array_equal(again, FEATURES)


@pytest.mark.parametrize("point", POINTS)
def test_killed_weights_are_retrained_to_the_same_weights(tmp_path, data, trained_reference, point):
    die_during(lambda: zoo(data, tmp_path).get("pointnet-lite"), point, "weights")
    assert_killed_state(tmp_path / "weights", "pointnet-lite-*.safetensors", point)
    with recorded() as caught:
        retrained = zoo(data, tmp_path).get("pointnet-lite")
    assert not retrained.cached and len(caught) == expected_warnings(point)
    assert all("pointnet-lite: cached weights unusable" in m and "interrupted write" in m for m in caught)
    assert state_bytes(retrained.model) == trained_reference
    with recorded() as caught:
        loaded = zoo(data, tmp_path).get("pointnet-lite")
    assert loaded.cached and caught == [] and loaded.weights_hash == retrained.weights_hash


def test_a_killed_defense_training_write_is_retrained(tmp_path, data):
    ctx = DefenseContext(victim=nn.Linear(3, 3), train=data["train"], cache_dir=tmp_path, progress=False,
                         log=lambda message: None)

    def prepare() -> None:
        module = nn.Linear(3, 3)
        ctx.cached_training("pgd-at", module, {"steps": 1}, lambda: fit_linear(module))

    die_during(prepare, "payload-renamed", "defenses")
    assert_killed_state(tmp_path / "defenses", "pgd-at-*.safetensors", "payload-renamed")
    module = nn.Linear(3, 3)
    with recorded() as caught:
        _, cached = ctx.cached_training("pgd-at", module, {"steps": 1}, lambda: fit_linear(module))
    assert not cached and len(caught) == 1 and "pgd-at: cached weights unusable" in caught[0]
    fresh = nn.Linear(3, 3)
    _, cached = ctx.cached_training("pgd-at", fresh, {"steps": 1}, lambda: fit_linear(fresh))
    assert cached and state_bytes(fresh) == state_bytes(module)


@pytest.mark.invariance
@pytest.mark.parametrize("point", POINTS)
@pytest.mark.parametrize("kind", ["adversarial-parts", "adversarial"])
def test_killed_adversarial_writes_resume_from_the_finished_batches(tmp_path, net, clouds, kind, point):
    reference = craft_set(net, clouds, None)
    nth = 2 if kind == PARTS_KIND else 1  # the second batch's part, or the merged final entry
    die_during(lambda: craft_set(net, clouds, tmp_path), point, kind, nth)
    if kind == PARTS_KIND:
        assert_killed_state(tmp_path / PARTS_KIND, "*-b5-10.npz", point)
        (first,) = payloads(tmp_path / PARTS_KIND, "*-b0-5.npz")
        assert sidecar(first).exists() and payloads(tmp_path / PARTS_KIND, "*-b10-12.npz") == []
    else:
        assert_killed_state(tmp_path / "adversarial", "*.npz", point)
        assert len(payloads(tmp_path / PARTS_KIND, "*.npz")) == 3  # every batch is kept for the resume

    model = Counting(net)
    with recorded() as caught:
        resumed = craft_set(model, clouds, tmp_path)
    assert not resumed.cached and len(caught) == expected_warnings(point)
    assert all("interrupted write" in m for m in caught)
    # only the lost work is redone: batches 2 and 3 after a lost part, nothing after a lost merge
    attacked = sorted(set(model.batches))
    assert attacked == ([2, 5] if kind == PARTS_KIND else []), model.batches
    assert same_crafted(resumed, reference) == []
    assert payloads(tmp_path / PARTS_KIND, "*.npz") == []  # merged: the parts are gone
    with recorded() as caught:
        assert craft_set(net, clouds, tmp_path).cached and caught == []


def result_row(defense: str, correct: int) -> dict[str, Any]:
    return {"dataset": "toy", "profile": "smoke", "protocol": "transfer", "victim": "v", "source": "",
            "defense": defense, "attack": "clean", "seed": 0, "n": 4, "status": "ok", "correct": correct,
            "accuracy": correct / 4, "cell_hash": f"h-{defense}"}


@pytest.mark.parametrize("point", ["payload-partial", "payload-renamed"])
def test_a_killed_results_write_leaves_a_whole_csv_and_the_lock_free(tmp_path, point):
    rows = [result_row("none", 3), result_row("sor", 2), result_row("srs", 1)]
    reference = ResultStore(tmp_path / "reference")
    reference.write(rows[:1])
    reference.write(rows[1:2])
    reference.write(rows[2:])
    out = tmp_path / "results"
    store = ResultStore(out)
    store.write(rows[:1])
    store.write(rows[1:2])
    before = store.csv_path("toy").read_bytes()

    die_during(lambda: ResultStore(out).write(rows[2:]), point, "results")
    if point == "payload-partial":  # the old file, whole; the half-written one only as a temporary
        assert store.csv_path("toy").read_bytes() == before and len(temporaries(out)) == 1
        assert len(store.read("toy")) == 2
    else:
        assert len(store.read("toy")) == 3 and temporaries(out) == []
    with open(out / ".toy.csv.lock", "a+") as handle:  # the kernel dropped the dead writer's lock
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(handle, fcntl.LOCK_UN)

    store.write(rows[2:])  # the next run writes the cell again
    assert temporaries(out) == []  # and removes what the dead writer left
    pd.testing.assert_frame_equal(store.read("toy"), reference.read("toy"))


# ============================================================================== corruption of entries

CORRUPTIONS = ("truncated", "emptied", "flipped", "sidecar-garbled")


def corrupt(payload: Path, how: str) -> None:
    raw = payload.read_bytes()
    if how == "truncated":
        payload.write_bytes(raw[: len(raw) // 2])
    elif how == "emptied":
        payload.write_bytes(b"")
    elif how == "flipped":
        flipped = bytearray(raw)
        flipped[len(raw) // 3] ^= 0x01
        payload.write_bytes(bytes(flipped))
    else:
        sidecar(payload).write_bytes(b"\x00{not json")


@dataclasses.dataclass
class CacheKind:
    """One kind of cache entry: how to make (or load) it through its real entry point."""

    folder: str
    pattern: str
    run: Callable[[dict[str, Any], Path], tuple[Any, bool | None]]  # (comparable value, hit or None)


def _features(fx: dict[str, Any], cache: Path) -> tuple[Any, bool]:
    features, hit = cached_features(cache, "mrpd-point", FEATURE_KEY, lambda: FEATURES)
    return np.asarray(features).tobytes(), hit


def _weights(fx: dict[str, Any], cache: Path) -> tuple[Any, bool]:
    got = zoo(fx["data"], cache).get("pointnet-lite")
    return state_bytes(got.model), got.cached


def _defense(fx: dict[str, Any], cache: Path) -> tuple[Any, bool]:
    ctx = DefenseContext(victim=nn.Linear(3, 3), train=fx["data"]["train"], cache_dir=cache, progress=False,
                         log=lambda message: None)
    module = nn.Linear(3, 3)
    _, cached = ctx.cached_training("prompt-at", module, {"steps": 1}, lambda: fit_linear(module))
    return state_bytes(module), cached


def _adversarial(fx: dict[str, Any], cache: Path) -> tuple[Any, bool]:
    crafted = craft_set(fx["net"], fx["clouds"], cache)
    return (crafted.points.numpy().tobytes(), crafted.success.numpy().tobytes()), crafted.cached


class _StopAfterFirstBatch(nn.Module):
    """The model, failing once the first batch is attacked (clean forward, 2 steps, evaluation)."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner, self.calls = inner, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.calls > 4:
            raise RuntimeError("simulated interruption after the first batch")
        return self.inner(x)


def _part(fx: dict[str, Any], cache: Path) -> tuple[Any, bool | None]:
    """The first batch's part entry, written by a craft interrupted in its second batch."""
    with pytest.raises(RuntimeError, match="simulated interruption"):
        craft_set(_StopAfterFirstBatch(fx["net"]), fx["clouds"], cache)
    (part,) = payloads(cache / PARTS_KIND, "*-b0-5.npz")
    arrays = load_arrays(part)
    return (arrays["points"].tobytes(), arrays["success"].tobytes()), None


def _dataset(fx: dict[str, Any], cache: Path) -> tuple[Any, bool | None]:
    opts = {"train_size": 9, "test_size": 3, "classes": ["cup", "lamp", "bottle"]}
    ds = load_dataset("synthshapes", "test", num_points=32, cache_dir=cache, options=opts)
    return (ds.fingerprint, ds.points.tobytes()), None


KINDS = {
    "weights": CacheKind("weights", "pointnet-lite-*.safetensors", _weights),
    "defenses": CacheKind("defenses", "prompt-at-*.safetensors", _defense),
    "features": CacheKind("features", "mrpd-point-*.npy", _features),
    "adversarial": CacheKind("adversarial", "*.npz", _adversarial),
    "adversarial-parts": CacheKind(PARTS_KIND, "*-b0-5.npz", _part),
    "datasets": CacheKind("datasets", "synthshapes-*.npz", _dataset),
}


@pytest.fixture(scope="module")
def pristine(tmp_path_factory, data, net, clouds) -> tuple[dict[str, Any], dict[str, tuple[Path, Any]]]:
    """One healthy cache per kind (made once), and the value each holds."""
    fx = {"data": data, "net": net, "clouds": clouds}
    made = {}
    for name, kind in KINDS.items():
        cache = tmp_path_factory.mktemp(f"pristine-{name}")
        value, _ = kind.run(fx, cache)
        made[name] = (cache, value)
    return fx, made


@pytest.mark.parametrize("how", CORRUPTIONS)
@pytest.mark.parametrize("name", list(KINDS))
def test_a_corrupt_cache_entry_is_reported_once_and_recomputed(tmp_path, pristine, name, how):
    fx, made = pristine
    kind = KINDS[name]
    healthy, value = made[name]
    cache = tmp_path / "cache"
    shutil.copytree(healthy, cache)
    (payload,) = payloads(cache / kind.folder, kind.pattern)
    corrupt(payload, how)

    with recorded() as caught:
        again, hit = kind.run(fx, cache)
    assert len(caught) == 1, caught
    assert payload.name in caught[0] and any(
        reason in caught[0] for reason in ("bytes, expected", "sha256", "unreadable", "cannot be decoded"))
    assert hit in (False, None) and again == value
    with recorded() as caught:  # repaired: quiet from now on
        healed, hit = kind.run(fx, cache)
    assert caught == [] and hit in (True, None) and healed == value


# ============================================================================ kill -9 of `bench run`

DRIVER = """
import sys
sys.path.insert(0, {tests!r})
from test_faults import install_kill_hook
install_kill_hook(sys.argv[1], sys.argv[2], int(sys.argv[3]))
from benchmark.cli import main
sys.exit(main(sys.argv[4:]))
"""


def test_bench_run_killed_at_each_kind_of_write_finishes_with_the_uninterrupted_rows(tmp_path, tmp_path_factory):
    """One results folder and cache, `bench run` killed three times in a row (saving the victim's
    weights, merging pgd's adversarial batches, writing a results row), then run to the end: the
    rows equal those of one uninterrupted run."""
    reference_out, _ = reference_run(tmp_path_factory)
    cache, out = tmp_path / "cache", tmp_path / "out"
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER.format(tests=str(Path(__file__).parent)))

    def run(*kill: str) -> subprocess.CompletedProcess[str]:
        return bench(["run", *TINY_RUN, "--out", str(out)], cache, cwd=tmp_path,
                     driver=[str(driver), *kill] if kill else None)

    def rows() -> int:
        return len(ResultStore(out).read("synthshapes"))

    # 1. killed just after the victim's weights were renamed into place, before their sidecar
    killed = run("payload-renamed", "weights", "1")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    (weights,) = payloads(cache / "weights", "pointnet-lite-*.safetensors")
    assert not sidecar(weights).exists() and rows() == 0

    # 2. the weights are reported once and retrained; killed half-way through merging pgd's batches
    killed = run("payload-partial", "adversarial", "1")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert killed.stderr.count("cached weights unusable") == 1, killed.stderr[-3000:]
    assert temporaries(cache / "adversarial") and len(payloads(cache / PARTS_KIND, "pgd-*.npz")) == 3
    assert rows() == 3  # the clean cells

    # 3. pgd is merged from its parts; killed while writing its second row
    killed = run("payload-partial", "results", "2")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert rows() == 4 and len(temporaries(out)) == 1

    # 4. to the end
    done = run()
    assert done.returncode == 0, done.stderr[-3000:]
    assert "unusable" not in done.stderr and "Traceback" not in done.stderr
    assert stable_rows(out) == stable_rows(reference_out)
    assert temporaries(out) == []


def test_the_kill_hook_refuses_an_unknown_point_and_leaves_this_process_alone():
    with pytest.raises(ValueError, match="unknown kill point"):
        install_kill_hook("midway", "weights")
    assert os.replace is _REAL_REPLACE  # only the doomed children are hooked
