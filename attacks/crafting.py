"""Crafting adversarial examples once, through the content-addressed cache.

``craft(attack, model, points, labels, key=..., cache_dir=..., batch_size=...)`` runs an
attack over a whole set in batches and returns a ``CraftedSet``. With a cache directory:

* the final entry is ``entry_path(cache_dir, "adversarial", f"{name}-{config_hash(key)}", ".npz")``
  (``save_arrays`` format: uncompressed npz + checksummed sidecar); a complete entry is
  loaded instead of crafting;
* every finished batch is saved as its own entry under ``adversarial-parts``
  (``{name}-{hash}-b{start}-{stop}.npz``), so a killed run resumes from the finished
  batches; once all batches exist they are merged into the final entry and the parts
  are removed;
* a corrupt or partial entry (final or part) is reported with one ``RuntimeWarning`` and
  recomputed (``benchmark.core.cache.cached_arrays``).

The attack sees each sample's position in the set (``indices``, default ``arange(N)``,
e.g. global test-set indices), so targets and random starts do not depend on batching:
any ``batch_size`` gives the same per-sample results, and the batch size is not part of
the key. ``key`` must describe everything the examples depend on (``crafting_key`` builds
the canonical one): attack name, the attack's dataclass fields, source model weights hash,
dataset fingerprint + split + subset indices, seed.
"""
from __future__ import annotations

import dataclasses
import sys
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from attacks.base import Attack
from benchmark.core.cache import (
    CorruptCacheError,
    cached_arrays,
    entry_path,
    load_arrays,
    save_arrays,
)
from benchmark.core.config import config_hash, to_jsonable
from benchmark.core.registry import ATTACKS

__all__ = ["CraftedSet", "attack_name", "craft", "crafting_key", "entry_for"]

FINAL_KIND = "adversarial"
PARTS_KIND = "adversarial-parts"
_PER_SAMPLE = ("success", "pred", "target", "iterations", "l2", "chamfer", "hausdorff", "indices", "labels")


@dataclass
class CraftedSet:
    """Adversarial examples for a whole set, in the order of the input samples.

    Attributes:
        points: ``[N, N', 3]`` adversarial clouds (CPU; every sample of one attack has the same N').
        success: ``[N]`` bool.
        pred: ``[N]`` long, the source model's prediction on ``points``.
        target: ``[N]`` long, ``-1`` for an untargeted attack.
        iterations: ``[N]`` long.
        l2, chamfer, hausdorff: ``[N]`` distances to the clean clouds (``AttackResult`` units).
        indices: ``[N]`` long, the sample positions the attack was given.
        labels: ``[N]`` long, the clean labels.
        seconds: total attack wall time when crafted (summed over batches, including
            batches crafted before an interruption); for a cache hit, the stored time.
        cached: True when the final entry was loaded rather than crafted in this call.
        key_hash: ``config_hash(key)``.
    """

    points: Tensor
    success: Tensor
    pred: Tensor
    target: Tensor
    iterations: Tensor
    l2: Tensor
    chamfer: Tensor
    hausdorff: Tensor
    indices: Tensor
    labels: Tensor
    seconds: float
    cached: bool
    key_hash: str

    def __len__(self) -> int:
        return int(self.points.shape[0])

    @property
    def success_rate(self) -> float:
        return float(self.success.float().mean())


# --------------------------------------------------------------------------- keys and names


def attack_name(attack: Attack) -> str:
    """The registered name of ``attack``'s exact class, else its lowercased class name."""
    for entry in ATTACKS.entries():
        if entry.obj is type(attack):
            return entry.name
    return type(attack).__name__.lower()


def _attack_params(attack: Attack) -> dict[str, Any]:
    if not dataclasses.is_dataclass(attack):
        raise TypeError(f"{type(attack).__name__} is not a dataclass; attacks keep their hyperparameters as fields")
    return to_jsonable(dataclasses.asdict(attack))


def crafting_key(
    attack: Attack,
    *,
    model_hash: str,
    dataset_fingerprint: str,
    split: str,
    subset: Sequence[int] | np.ndarray | Tensor | None = None,
    name: str | None = None,
) -> dict[str, Any]:
    """The canonical cache key: attack name + fields, source weights hash, dataset, subset, seed.

    ``subset`` is the list of global sample indices (None = the whole split).
    """
    if subset is not None:
        subset = [int(i) for i in (subset.tolist() if hasattr(subset, "tolist") else subset)]
    return {
        "attack": name or attack_name(attack),
        "params": _attack_params(attack),
        "model": str(model_hash),
        "dataset": str(dataset_fingerprint),
        "split": str(split),
        "subset": subset,
        "seed": int(getattr(attack, "seed", 0)),
    }


def _name_from_key(attack: Attack, key: Mapping[str, Any]) -> str:
    name = key.get("attack")
    return name if isinstance(name, str) and name else attack_name(attack)


def _check_key(attack: Attack, key: Mapping[str, Any]) -> None:
    """The key must hold the attack's fields (as one top-level value), or stale examples could be reused."""
    params = _attack_params(attack)
    if not any(to_jsonable(v) == params for v in key.values() if isinstance(v, Mapping)):
        raise ValueError(
            f"the crafting key must contain the attack's parameters "
            f"(dataclasses.asdict({type(attack).__name__}(...)) as one of its values, e.g. key['params']) "
            "so a changed hyperparameter gets a new cache entry; build it with attacks.crafting.crafting_key"
        )


def entry_for(cache_dir: str | Path, attack: Attack, key: Mapping[str, Any]) -> Path:
    """Path of the final cache entry for ``(attack, key)``."""
    return entry_path(cache_dir, FINAL_KIND, f"{_name_from_key(attack, key)}-{config_hash(key)}", ".npz")


# --------------------------------------------------------------------------- crafting


def _as_tensor(x: Any, name: str) -> Tensor:
    if isinstance(x, Tensor):
        return x
    if isinstance(x, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(x))
    raise ValueError(f"{name} must be a torch.Tensor or numpy array; got {type(x).__name__}")


def _craft_batch(
    attack: Attack, model: nn.Module, points: Tensor, labels: Tensor, indices: Tensor, start: int, stop: int
) -> dict[str, np.ndarray]:
    res = attack(model, points[start:stop], labels[start:stop].long(), indices=indices[start:stop])
    n = stop - start
    target = res.target if res.target is not None else torch.full((n,), -1, dtype=torch.long)

    def cpu(t: Tensor) -> np.ndarray:
        return t.detach().cpu().numpy()

    return {
        "points": cpu(res.points),
        "success": cpu(res.success.bool()),
        "pred": cpu(res.pred.long()),
        "target": cpu(target.long()),
        "iterations": cpu(res.iterations.long()),
        "l2": cpu(res.l2),
        "chamfer": cpu(res.chamfer),
        "hausdorff": cpu(res.hausdorff),
        "indices": cpu(indices[start:stop].long()),
        "labels": cpu(labels[start:stop].long()),
        "seconds": np.asarray(res.seconds, dtype=np.float64),
    }


def _merge(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    shapes = {tuple(p["points"].shape[1:]) for p in parts}
    if len(shapes) != 1:
        raise ValueError(f"the attack returned clouds of different sizes across batches: {sorted(shapes)}")
    out = {k: np.concatenate([p[k] for p in parts]) for k in ("points", *_PER_SAMPLE)}
    out["seconds"] = np.asarray(sum(float(p["seconds"]) for p in parts), dtype=np.float64)
    return out


def _to_set(arrays: Mapping[str, np.ndarray], *, cached: bool, key_hash: str) -> CraftedSet:
    t = {k: torch.from_numpy(np.asarray(arrays[k]).copy()) for k in ("points", *_PER_SAMPLE)}
    return CraftedSet(**t, seconds=float(arrays["seconds"]), cached=cached, key_hash=key_hash)


def _matches(arrays: Mapping[str, np.ndarray], indices: Tensor, labels: Tensor) -> bool:
    try:
        return (
            all(k in arrays for k in ("points", "seconds", *_PER_SAMPLE))
            and np.array_equal(arrays["indices"], indices.numpy())
            and np.array_equal(arrays["labels"], labels.long().cpu().numpy())
        )
    except Exception:  # noqa: BLE001 - any malformed entry is a mismatch
        return False


def _remove_parts(cache_dir: Path, stem: str) -> None:
    folder = Path(cache_dir) / PARTS_KIND
    if not folder.is_dir():
        return
    for f in folder.glob(f"{stem}-b*.npz*"):  # payloads and their .json sidecars
        f.unlink(missing_ok=True)


def craft(
    attack: Attack,
    model: nn.Module,
    points: Tensor | np.ndarray,
    labels: Tensor | np.ndarray,
    *,
    key: Mapping[str, Any],
    cache_dir: str | Path | None,
    batch_size: int,
    indices: Tensor | None = None,
    progress: bool = False,
    on_batch: Callable[[int, int], None] | None = None,
) -> CraftedSet:
    """Craft (or load) ``attack``'s adversarial examples for a whole set.

    Args:
        attack: an ``Attack`` instance (dataclass of hyperparameters).
        model: the source model, ``[B, N, 3] -> [B, C]`` logits.
        points: ``[N, P, 3]`` clean clouds (tensor or numpy, e.g. ``PointCloudDataset.points``).
        labels: ``[N]`` labels.
        key: what the examples depend on (see ``crafting_key``); must contain the attack's
            dataclass fields as one of its values. ``key['attack']`` (if a string) names the entry.
        cache_dir: cache root, or None to craft in memory without caching.
        batch_size: samples per attack call (does not change the results).
        indices: ``[N]`` sample positions handed to the attack (seeds targets / noise);
            default ``arange(N)``.
        progress: print one line per batch to stderr.
        on_batch: called as ``on_batch(done, total)`` after each batch (crafted or resumed),
            e.g. to drive a progress display.

    Returns:
        ``CraftedSet`` on the CPU, in input order.
    """
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1; got {batch_size!r}")
    points = _as_tensor(points, "points")
    labels = _as_tensor(labels, "labels")
    if points.dim() != 3 or points.shape[-1] != 3:
        raise ValueError(f"points must have shape [N, P, 3]; got {list(points.shape)}")
    n = int(points.shape[0])
    if n == 0:
        raise ValueError("points is empty (N = 0); nothing to attack")
    if labels.shape != (n,):
        raise ValueError(f"labels must have shape [N] = [{n}]; got {list(labels.shape)}")
    if indices is None:
        indices = torch.arange(n)
    indices = _as_tensor(indices, "indices").long().cpu()
    if indices.shape != (n,):
        raise ValueError(f"indices must have shape [N] = [{n}]; got {list(indices.shape)}")
    _check_key(attack, key)

    name = _name_from_key(attack, key)
    key_hash = config_hash(key)
    stem = f"{name}-{key_hash}"
    bounds = [(s, min(s + batch_size, n)) for s in range(0, n, batch_size)]
    meta = {"attack": name, "key_hash": key_hash, "key": to_jsonable(key)}

    def run_batch(i: int, start: int, stop: int) -> dict[str, np.ndarray]:
        t0 = time.perf_counter()
        out = _craft_batch(attack, model, points, labels, indices, start, stop)
        if progress:
            print(
                f"[craft {name}] batch {i + 1}/{len(bounds)} samples {start}:{stop} "
                f"success {out['success'].mean():.2f} ({time.perf_counter() - t0:.1f}s)",
                file=sys.stderr,
                flush=True,
            )
        return out

    def advance(done: int) -> None:
        if on_batch is not None:
            on_batch(done, len(bounds))

    if cache_dir is None:
        done = []
        for i, (s, e) in enumerate(bounds):
            done.append(run_batch(i, s, e))
            advance(i + 1)
        return _to_set(_merge(done), cached=False, key_hash=key_hash)

    final = entry_path(cache_dir, FINAL_KIND, stem, ".npz")
    try:
        arrays = load_arrays(final)
        if _matches(arrays, indices, labels):
            if progress:
                print(f"[craft {name}] loaded {final}", file=sys.stderr, flush=True)
            return _to_set(arrays, cached=True, key_hash=key_hash)
        warnings.warn(
            f"cache entry {final} does not hold these samples (indices/labels differ from the request; "
            "the key does not describe the data?); recomputing it",
            RuntimeWarning,
            stacklevel=2,
        )
    except FileNotFoundError:
        pass
    except CorruptCacheError as err:
        warnings.warn(f"{err}; recomputing it", RuntimeWarning, stacklevel=2)

    parts = []
    for i, (start, stop) in enumerate(bounds):
        part_path = entry_path(cache_dir, PARTS_KIND, f"{stem}-b{start}-{stop}", ".npz")
        part, hit = cached_arrays(part_path, lambda i=i, s=start, e=stop: run_batch(i, s, e), meta)
        if hit and not _matches(part, indices[start:stop], labels[start:stop]):
            warnings.warn(f"cache part {part_path} does not hold these samples; recomputing it", RuntimeWarning, stacklevel=2)
            part = run_batch(i, start, stop)
            save_arrays(part_path, part, meta)
        elif hit and progress:
            print(f"[craft {name}] batch {i + 1}/{len(bounds)} resumed from {part_path}", file=sys.stderr, flush=True)
        parts.append(part)
        advance(i + 1)
    arrays = _merge(parts)
    save_arrays(final, arrays, {**meta, "num_samples": n, "seconds": float(arrays["seconds"])})
    _remove_parts(Path(cache_dir), stem)
    return _to_set(arrays, cached=False, key_hash=key_hash)
