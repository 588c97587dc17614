"""The adversarial example cache (``attacks.crafting``): load, new keys, batching, resume, corruption."""
from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from attacks.crafting import (
    FINAL_KIND,
    PARTS_KIND,
    CraftedSet,
    craft,
    crafting_key,
    entry_for,
)
from attacks.pgd import PGD
from tiny_models import TinyPointNet

N, P = 12, 64




class Counting(nn.Module):
    """Counts forward calls and the batch sizes seen; raises after ``fail_after`` calls."""

    def __init__(self, inner: nn.Module, fail_after: int | None = None) -> None:
        super().__init__()
        self.inner = inner
        self.fail_after = fail_after
        self.calls: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fail_after is not None and len(self.calls) >= self.fail_after:
            raise RuntimeError("simulated interruption")
        self.calls.append(int(x.shape[0]))
        return self.inner(x)


STEPS = 3
CALLS_PER_BATCH = STEPS + 2  # clean forward + one per step + final evaluation


@pytest.fixture(scope="module")
def net() -> TinyPointNet:
    return TinyPointNet()


@pytest.fixture(scope="module")
def data(net) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(N, P, 3, generator=g)
    x = x / x.norm(dim=-1).amax(dim=1)[:, None, None]
    with torch.no_grad():
        y = net(x).argmax(1)
    return x, y


def _attack(**kw) -> PGD:
    return PGD(**{"steps": STEPS, "targeted": False, "loss": "margin", "budget": 1.0, **kw})


def _key(attack: PGD) -> dict:
    return crafting_key(attack, model_hash="tiny-0", dataset_fingerprint="fp-test", split="test", subset=None)


def _assert_same(a: CraftedSet, b: CraftedSet, *, exact: bool = True) -> None:
    if exact:
        assert torch.equal(a.points, b.points)
        for f in ("l2", "chamfer", "hausdorff"):
            assert torch.equal(getattr(a, f), getattr(b, f))
    else:
        torch.testing.assert_close(a.points, b.points, atol=1e-5, rtol=0)
        for f in ("l2", "chamfer", "hausdorff"):
            torch.testing.assert_close(getattr(a, f), getattr(b, f), atol=1e-5, rtol=1e-5)
    for f in ("success", "pred", "target", "iterations", "indices", "labels"):
        assert torch.equal(getattr(a, f), getattr(b, f)), f
    assert a.key_hash == b.key_hash


def test_second_call_loads_identical_arrays_without_calling_the_model(tmp_path, net, data):
    x, y = data
    attack = _attack()
    m1 = Counting(net)
    first = craft(attack, m1, x, y, key=_key(attack), cache_dir=tmp_path, batch_size=5)
    assert not first.cached and len(m1.calls) == 3 * CALLS_PER_BATCH
    assert first.points.shape == (N, P, 3) and first.success.dtype == torch.bool
    assert torch.equal(first.target, torch.full((N,), -1))  # untargeted
    assert first.seconds > 0 and first.success.any()
    path = entry_for(tmp_path, attack, _key(attack))
    assert path.exists() and path.parent.name == FINAL_KIND and path.name.startswith("pgd-")
    assert not list((tmp_path / PARTS_KIND).glob("*"))  # parts merged and removed

    m2 = Counting(net)
    second = craft(attack, m2, x.numpy(), y.numpy(), key=_key(attack), cache_dir=tmp_path, batch_size=5)
    assert second.cached and m2.calls == []
    _assert_same(first, second)
    assert second.seconds == pytest.approx(first.seconds)


def test_changed_attack_parameter_gives_a_new_entry(tmp_path, net, data):
    x, y = data
    a, b = _attack(), _attack(budget=0.5)
    ra = craft(a, net, x, y, key=_key(a), cache_dir=tmp_path, batch_size=12)
    m = Counting(net)
    rb = craft(b, m, x, y, key=_key(b), cache_dir=tmp_path, batch_size=12)
    assert not rb.cached and m.calls and ra.key_hash != rb.key_hash
    assert len(list((tmp_path / FINAL_KIND).glob("*.npz"))) == 2
    assert torch.all(rb.l2 <= 0.5 + 1e-6)


def test_key_without_the_attack_parameters_is_rejected(tmp_path, net, data):
    x, y = data
    with pytest.raises(ValueError, match="attack's parameters"):
        craft(_attack(), net, x, y, key={"attack": "pgd", "model": "m"}, cache_dir=tmp_path, batch_size=5)
    stale = {**_key(_attack()), "params": dataclasses.asdict(_attack(budget=0.5))}
    with pytest.raises(ValueError, match="attack's parameters"):
        craft(_attack(), net, x, y, key=stale, cache_dir=tmp_path, batch_size=5)


def test_results_do_not_depend_on_batch_size(tmp_path, net, data):
    x, y = data
    attack = _attack(targeted=True, loss="ce", seed=7)  # targets and random start both per sample
    five = craft(attack, net, x, y, key=_key(attack), cache_dir=None, batch_size=5)
    twelve = craft(attack, net, x, y, key=_key(attack), cache_dir=None, batch_size=12)
    assert not five.cached and not twelve.cached
    assert torch.all(five.target != five.labels)
    _assert_same(five, twelve, exact=False)
    assert not (tmp_path / FINAL_KIND).exists()  # cache_dir=None writes nothing


def test_indices_seed_the_samples(net, data):
    x, y = data
    attack = _attack(targeted=True, loss="ce")
    full = craft(attack, net, x, y, key=_key(attack), cache_dir=None, batch_size=5, indices=torch.arange(100, 112))
    tail = craft(attack, net, x[4:], y[4:], key=_key(attack), cache_dir=None, batch_size=3, indices=torch.arange(104, 112))
    assert torch.equal(full.indices, torch.arange(100, 112))
    torch.testing.assert_close(full.points[4:], tail.points, atol=1e-5, rtol=0)
    assert torch.equal(full.target[4:], tail.target)


def test_interrupted_run_resumes_from_finished_batches(tmp_path, net, data):
    x, y = data
    attack = _attack()
    broken = Counting(net, fail_after=2 * CALLS_PER_BATCH)  # dies on the 3rd batch
    with pytest.raises(RuntimeError, match="simulated interruption"):
        craft(attack, broken, x, y, key=_key(attack), cache_dir=tmp_path, batch_size=5)
    assert len(list((tmp_path / PARTS_KIND).glob("*.npz"))) == 2
    assert not entry_for(tmp_path, attack, _key(attack)).exists()

    m = Counting(net)
    resumed = craft(attack, m, x, y, key=_key(attack), cache_dir=tmp_path, batch_size=5)
    assert m.calls == [2] * CALLS_PER_BATCH  # only the last batch (samples 10:12) is crafted
    assert not resumed.cached and not list((tmp_path / PARTS_KIND).glob("*"))

    reference = craft(attack, net, x, y, key=_key(attack), cache_dir=None, batch_size=5)
    _assert_same(resumed, reference)
    again = Counting(net)
    assert craft(attack, again, x, y, key=_key(attack), cache_dir=tmp_path, batch_size=5).cached and not again.calls


def test_corrupt_final_entry_warns_once_and_is_recomputed(tmp_path, net, data):
    x, y = data
    attack = _attack()
    first = craft(attack, net, x, y, key=_key(attack), cache_dir=tmp_path, batch_size=5)
    path = entry_for(tmp_path, attack, _key(attack))
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    path.write_bytes(bytes(raw))

    m = Counting(net)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        redone = craft(attack, m, x, y, key=_key(attack), cache_dir=tmp_path, batch_size=5)
    runtime = [w for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(runtime) == 1 and "checksum" in str(runtime[0].message)
    assert not redone.cached and len(m.calls) == 3 * CALLS_PER_BATCH
    _assert_same(first, redone)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert craft(attack, net, x, y, key=_key(attack), cache_dir=tmp_path, batch_size=5).cached


def test_corrupt_part_warns_once_and_only_that_batch_is_recomputed(tmp_path, net, data):
    x, y = data
    attack = _attack()
    broken = Counting(net, fail_after=2 * CALLS_PER_BATCH)
    with pytest.raises(RuntimeError):
        craft(attack, broken, x, y, key=_key(attack), cache_dir=tmp_path, batch_size=5)
    (part,) = (tmp_path / PARTS_KIND).glob("*-b0-5.npz")
    raw = bytearray(part.read_bytes())
    raw[-10] ^= 0xFF
    part.write_bytes(bytes(raw))
    m = Counting(net)
    with pytest.warns(RuntimeWarning, match="checksum") as record:
        out = craft(attack, m, x, y, key=_key(attack), cache_dir=tmp_path, batch_size=5)
    assert len([w for w in record if issubclass(w.category, RuntimeWarning)]) == 1
    assert m.calls == [5] * CALLS_PER_BATCH + [2] * CALLS_PER_BATCH
    _assert_same(out, craft(attack, net, x, y, key=_key(attack), cache_dir=None, batch_size=5))


def test_bad_inputs_raise_value_error(tmp_path, net, data):
    x, y = data
    attack = _attack()
    with pytest.raises(ValueError, match="batch_size"):
        craft(attack, net, x, y, key=_key(attack), cache_dir=None, batch_size=0)
    with pytest.raises(ValueError, match="labels"):
        craft(attack, net, x, y[:3], key=_key(attack), cache_dir=None, batch_size=5)
    with pytest.raises(ValueError, match=r"\[N, P, 3\]"):
        craft(attack, net, x[..., :2], y, key=_key(attack), cache_dir=None, batch_size=5)
    assert isinstance(np.asarray(craft(attack, net, x[:2], y[:2], key=_key(attack), cache_dir=None, batch_size=5).points), np.ndarray)
