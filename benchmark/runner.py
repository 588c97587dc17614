"""The evaluation harness: a run configuration in, one result row per (protocol, defense, attack) out.

    Runner(cfg).run() -> pandas.DataFrame (the rows it wrote or found finished)

What one run does (DESIGN.md, "Data flows one way"):

1. prepare both splits of the dataset and the test subset (``limit``, ``shard``);
2. train or load the victim (and the surrogate for ``blackbox``) through the model zoo;
3. for each protocol and attack, craft the adversarial examples once per *source* model
   (``transfer``: the undefended victim; ``blackbox``: the surrogate; ``adaptive``: each
   defended model, differentiated as it declares — exact, BPDA, EOT over ``eot`` draws),
   through the adversarial cache;
4. classify them with each defended model (defenses are prepared lazily, once, and cached
   when they train) and write one row per cell to the results store.

A cell whose row is stored with the same cell hash is skipped (resume). An exception in a
cell is recorded as a failed row and the run goes on (``fail_fast`` stops it instead). A
CUDA out-of-memory error retries the batch in halves.

This file is the :class:`Runner` alone (~500 lines: one concept, the grid run, whose methods
share its state); the pieces that need no run state are in :mod:`benchmark.cells`.
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import time
import traceback
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from attacks.crafting import CraftedSet, craft, crafting_key
from attacks.factory import attack_spec, build_attack
from benchmark.cells import (
    Cell,
    attack_role,
    batch_seed,
    check_names,
    git_commit,
    is_oom,
    predict,
)
from benchmark.core.cache import resolve_cache_dir, state_dict_sha256
from benchmark.core.config import RunConfig, config_hash, resolve_config, to_jsonable
from benchmark.core.data import PointCloudDataset, load_run_split
from benchmark.core.env import package_versions, resolve_device
from benchmark.core.registry import ATTACKS, DEFENSES
from benchmark.store import CLEAN, ResultStore, encode_distances, encode_outcomes, wilson_interval
from benchmark.variants import cell_variants
from defenses import build_defense
from defenses.base import Defense, DefenseContext, DefendedModel, ModelDefense, inference_cost

__all__ = ["Cell", "Runner", "attack_role", "check_names", "git_commit", "predict"]


@dataclass
class PreparedDefense:
    name: str
    model: DefendedModel | None = None
    seconds: float = 0.0
    cost_ratio: float = float("nan")
    identity: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


class GivenModel(ModelDefense):
    """A user's classifier evaluated as a defense (``api.evaluate``)."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model

    def prepare(self, ctx: DefenseContext) -> nn.Module:
        return self.model

    def params(self) -> dict[str, Any]:
        return {"class": type(self.model).__qualname__, "weights": state_dict_sha256(self.model.state_dict())[:16]}


class Runner:
    """Runs the grid a :class:`RunConfig` describes and writes its rows.

    Args:
        cfg: the resolved run configuration.
        console: a ``rich.console.Console`` for messages (default: stderr).
        progress: show the live progress display.
        fail_fast: re-raise the first exception of a cell instead of recording it.
        extra_defenses: more defenses by name (``Defense`` instances or plain classifiers
            ``[B, N, 3] -> [B, C]``), evaluated beside the selected ones.
        shard: ``(index, count)``: evaluate only this shard's batches of the test subset.
        force: recompute cells even when finished rows exist.
    """

    def __init__(
        self,
        cfg: RunConfig,
        *,
        console: Any = None,
        progress: bool = True,
        fail_fast: bool = False,
        extra_defenses: Mapping[str, Defense | nn.Module] | None = None,
        shard: tuple[int, int] = (0, 1),
        force: bool = False,
    ) -> None:
        from rich.console import Console

        self.cfg = cfg
        self.console = console or Console(stderr=True)
        self.progress = progress
        self.fail_fast = fail_fast
        self.force = force
        self.shard = shard
        self.extra = dict(extra_defenses or {})
        self.device = resolve_device(cfg.device)
        self.cache_dir = resolve_cache_dir(cfg.cache_dir)
        self.store = ResultStore(cfg.out_dir)
        self.run_id = f"{_dt.datetime.now(_dt.timezone.utc):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:6]}"
        self.versions = package_versions()
        self.commit = git_commit()
        self._defenses: dict[str, PreparedDefense] = {}
        self._clean_pred: dict[str, Tensor] = {}
        self._profile_config: dict[str, Any] | None = None
        self.failures: list[tuple[Cell, str]] = []
        self.rows: list[dict[str, Any]] = []
        #: stored rows this run replaced (same cell key: the same variant label): ``(old row, new cell hash)``
        self.replaced: list[tuple[dict[str, Any], str]] = []

    # ------------------------------------------------------------------ selection
    def attack_names(self) -> list[str]:
        return ATTACKS.resolve(self.cfg.attack)

    def defense_names(self) -> list[str]:
        names = [n for n in DEFENSES.resolve(self.cfg.defense) if n not in self.extra]
        names = ["none"] + [n for n in names if n != "none"]  # the reference row is always there
        return names + list(self.extra)

    def cells(self) -> list[Cell]:
        out = []
        for protocol in self.cfg.protocol:
            for defense in self.defense_names():
                out.append(Cell(protocol, defense, CLEAN))
            for attack in self.attack_names():
                for defense in self.defense_names():
                    out.append(Cell(protocol, defense, attack))
        return out

    # ------------------------------------------------------------------ data and models
    def _log(self, message: str) -> None:
        self.console.print(f"  {message}")

    def prepare_data(self) -> None:
        cfg = self.cfg
        self.splits: dict[str, PointCloudDataset] = {}
        for split in ("train", "test"):
            with self.console.status(f"preparing {cfg.dataset.name} ({split})"):
                self.splits[split] = load_run_split(cfg, split, self.cache_dir)
        test = self.splits["test"]
        n = len(test) if cfg.limit is None else min(cfg.limit, len(test))
        index, count = self.shard
        if not 0 <= index < count:
            raise ValueError(f"shard must be i/K with 0 <= i < K; got {index}/{count}")
        starts = list(range(0, n, cfg.batch_size))[index::count]  # whole batches: same draws as one process
        self.n_total = n
        self.indices = np.concatenate([np.arange(s, min(s + cfg.batch_size, n)) for s in starts]) if starts \
            else np.zeros(0, dtype=np.int64)
        self.points = torch.from_numpy(test.points[self.indices]).float()
        self.labels = torch.from_numpy(test.labels[self.indices]).long()
        self.console.print(
            f"  {cfg.dataset.name}: {len(self.splits['train'])} train / {len(self.indices)} of {len(test)} test "
            f"clouds x {test.num_points} points, {test.num_classes} classes (fingerprint {test.fingerprint})"
        )

    def build_zoo(self, force: bool = False) -> Any:
        """The model zoo over this run's splits (after :meth:`prepare_data`): every model is
        trained or loaded from the weights cache on first use; ``force`` retrains cached ones."""
        from models.zoo import Zoo, ZooContext

        cfg = self.cfg
        self.zoo = Zoo(ZooContext(train=self.splits["train"], test=self.splits["test"], cache_dir=self.cache_dir,
                                  device=self.device, seed=cfg.seed, params=cfg.models,
                                  train_config=cfg.train_config, force=force, progress=self.progress, log=self._log,
                                  source=lambda overrides: load_run_split(cfg, "train", self.cache_dir, overrides)))
        return self.zoo

    def prepare_models(self) -> None:
        """Build the zoo and train or load the victim (``self.victim``, frozen, in eval mode)."""
        self.build_zoo()
        self.victim = self.zoo.get(self.cfg.victim)
        self.victim.model.eval().requires_grad_(False)

    def defense_context(self) -> DefenseContext:
        """The context every defense of this run is prepared with (victim, training split, zoo, caches)."""
        return DefenseContext(
            victim=self.victim.model, train=self.splits["train"], device=self.device, seed=self.cfg.seed,
            cache_dir=self.cache_dir, victim_name=self.cfg.victim, victim_hash=self.victim.weights_hash,
            train_config=self.cfg.train_config, attack_params=self.cfg.attacks, zoo=self.zoo,
            progress=self.progress, log=self._log,
        )

    def defense_object(self, name: str) -> Defense:
        """The unprepared defense ``name`` with this run's parameters (or the given extra defense)."""
        if name in self.extra:
            given = self.extra[name]
            obj = given if isinstance(given, Defense) else GivenModel(given)
            obj.registry_name = name
            return obj
        return build_defense(name, **(self.cfg.defenses.get(name) or {}))

    def defense_identity(self, name: str) -> tuple[str, dict[str, Any]]:
        """A hash of everything a prepared defense depends on (without preparing it)."""
        obj = self.defense_object(name)
        params = to_jsonable(obj.params())
        section = getattr(obj, "training_section", None) or name  # e.g. prompt-at trains with training.mrpd
        train = to_jsonable(dataclasses.asdict(self.cfg.train_config(section)))
        spec = {"defense": name, "params": params, "train": train,
                "victim": self.victim.weights_hash, "dataset": self.splits["train"].fingerprint, "seed": self.cfg.seed}
        return config_hash(spec), params

    def defense(self, name: str) -> PreparedDefense:
        """The prepared defense ``name`` (prepared once per run; failures remembered)."""
        if name in self._defenses:
            return self._defenses[name]
        identity, params = self.defense_identity(name)
        prepared = PreparedDefense(name, identity=identity, params=params)
        self._defenses[name] = prepared
        try:
            start = time.perf_counter()
            prepared.model = self.defense_object(name)(self.defense_context())
            prepared.seconds = time.perf_counter() - start
            sample = self.points[: self.cfg.batch_size].to(self.device)
            if name == "none":
                prepared.cost_ratio = 1.0
            elif len(sample):
                prepared.model.reseed(self.cfg.seed)
                prepared.cost_ratio = inference_cost(prepared.model, self.victim.model, sample, repeats=2)["ratio"]
        except Exception as err:  # noqa: BLE001 - recorded per cell
            if self.fail_fast:
                raise
            prepared.error = f"{type(err).__name__}: {err}"
            self.console.print(f"[red]  defense {name} failed to prepare: {prepared.error}[/]")
        return prepared

    def attack_object(self, name: str) -> Any:
        """The attack ``name`` with the run's parameters and seed, the models it declares
        resolved through the zoo (``attacks.factory.build_attack``)."""
        return build_attack(name, self.cfg.attacks.get(name), seed=self.cfg.seed,
                            resolve_model=lambda model: self.zoo.get(model).model)

    # ------------------------------------------------------------------ cells
    def _source(self, protocol: str, defense: str) -> tuple[str, str]:
        """(source name, source identity) of the examples a cell classifies."""
        if protocol == "transfer" or (protocol == "adaptive" and defense == "none"):
            return self.cfg.victim, self.victim.weights_hash
        if protocol == "blackbox":
            return self.cfg.surrogate, self.zoo.get(self.cfg.surrogate).weights_hash
        identity, _ = self.defense_identity(defense)
        return f"{defense}@{self.cfg.victim}", f"adaptive:{identity}:eot{self.cfg.eot}"

    def variants(self, cell: Cell) -> tuple[str, str]:
        """``(defense_variant, attack_variant)``: the cell's settings that differ from its
        profile's (``benchmark.variants``); ``("", "")`` for the profile's own settings."""
        if self._profile_config is None:
            self._profile_config = resolve_config(self.cfg.profile).to_dict()
        section = getattr(self.defense_object(cell.defense), "training_section", None) \
            if cell.defense in DEFENSES.names() else None
        return cell_variants(self.cfg.to_dict(), self._profile_config, defense=cell.defense, attack=cell.attack,
                             protocol=cell.protocol, defense_names=DEFENSES.names(), training_section=section)

    def _key(self, cell: Cell, source: str) -> dict[str, Any]:
        defense_variant, attack_variant = self.variants(cell)
        return {"dataset": self.cfg.dataset.name, "profile": self.cfg.profile, "protocol": cell.protocol,
                "victim": self.cfg.victim, "source": source if cell.attack != CLEAN else "",
                "defense": cell.defense, "defense_variant": defense_variant, "attack": cell.attack,
                "attack_variant": attack_variant, "seed": self.cfg.seed, "n": len(self.indices),
                "shard": "" if self.shard == (0, 1) else f"{self.shard[0]}/{self.shard[1]}"}

    def _cell_hash(self, cell: Cell, source_identity: str) -> str:
        attack_params = {} if cell.attack == CLEAN else to_jsonable(dataclasses.asdict(self.attack_object_spec(cell.attack)))
        return config_hash({
            "cell": dataclasses.asdict(cell), "source": source_identity if cell.attack != CLEAN else "",
            "defense": self.defense_identity(cell.defense)[0], "attack": attack_params,
            # the whole subset (not this shard's part), so shard and merged rows share the hash
            "dataset": self.splits["test"].fingerprint, "n": self.n_total, "seed": self.cfg.seed,
            "batch_size": self.cfg.batch_size,  # randomised defenses draw per batch
        })

    def attack_object_spec(self, name: str) -> Any:
        """The attack's hyperparameters (without building helper models): for hashing."""
        return attack_spec(name, self.cfg.attacks.get(name), seed=self.cfg.seed)

    def _craft(self, attack_name: str, source_model: nn.Module, source_identity: str,
               advance: Callable[[int, int], None]) -> CraftedSet:
        attack = self.attack_object(attack_name)
        key = crafting_key(attack, model_hash=source_identity, dataset_fingerprint=self.splits["test"].fingerprint,
                           split="test", subset=self.indices.tolist(), name=attack_name)
        batch = self.cfg.batch_size
        while True:
            try:
                return craft(attack, source_model, self.points, self.labels, key=key, cache_dir=self.cache_dir,
                             batch_size=batch, indices=torch.from_numpy(self.indices), on_batch=advance)
            except RuntimeError as err:
                if not is_oom(err) or batch == 1:
                    raise
                torch.cuda.empty_cache()
                batch = max(1, batch // 2)
                self.console.print(f"[yellow]  {attack_name}: CUDA out of memory; retrying with batch {batch}[/]")

    def transfer_examples(self, attack_name: str,
                          on_batch: Callable[[int, int], None] | None = None) -> CraftedSet:
        """The attack's examples of this run's test clouds crafted against the victim (the
        transfer protocol's examples): loaded from the adversarial-example cache or crafted.
        ``on_batch(done, total)`` is called after each batch."""
        return self._craft(attack_name, self.victim.model, self.victim.weights_hash,
                           on_batch or (lambda done, total: None))

    def _evaluate(self, prepared: PreparedDefense, points: Tensor, cell: Cell) -> tuple[Tensor, float]:
        model = prepared.model
        start = time.perf_counter()
        pred = predict(model, points, self.cfg.batch_size, self.device,
                       before_batch=lambda s: model.reseed(batch_seed(self.cfg.seed, cell.protocol, cell.attack,
                                                                       int(self.indices[s]))))
        return pred, time.perf_counter() - start

    def _row(self, cell: Cell, key: Mapping[str, Any], cell_hash: str, prepared: PreparedDefense,
             correct: Tensor | None, crafted: CraftedSet | None, seconds_eval: float, error: str | None) -> dict[str, Any]:
        n = len(self.indices)
        row: dict[str, Any] = dict(key)
        row.update(status="ok" if error is None else "failed", error=error or "", batch_size=self.cfg.batch_size,
                   defense_params=json.dumps(prepared.params, sort_keys=True),
                   attack_params="" if cell.attack == CLEAN else json.dumps(
                       to_jsonable(dataclasses.asdict(self.attack_object_spec(cell.attack))), sort_keys=True),
                   cell_hash=cell_hash, config_hash=self.cfg.hash(), dataset_fingerprint=self.splits["test"].fingerprint,
                   victim_hash=self.victim.weights_hash, run_id=self.run_id, pcrb_version=self.versions.get("pcrb"),
                   torch_version=self.versions.get("torch"), git_commit=self.commit, device=str(self.device),
                   timestamp=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                   seconds_defense=round(prepared.seconds, 3), cost_ratio=prepared.cost_ratio,
                   seconds_eval=round(seconds_eval, 3))
        if correct is not None:
            k = int(correct.sum())
            low, high = wilson_interval(k, n)
            row.update(correct=k, accuracy=k / n if n else float("nan"), ci_low=low, ci_high=high,
                       outcomes=encode_outcomes(correct.numpy()))
        row["attack_role"] = attack_role(cell.attack)
        if crafted is not None and row["attack_role"] == "min-norm":  # each cloud's minimal distance on the source
            row["distances"] = encode_distances(np.where(crafted.success.numpy(), crafted.l2.double().numpy(), np.inf))
        if crafted is not None:
            row.update(attack_success=crafted.success_rate, seconds_attack=round(crafted.seconds, 3),
                       l2=float(crafted.l2.nanmean()) if not bool(crafted.l2.isnan().all()) else float("nan"),
                       chamfer=float(crafted.chamfer.mean()), hausdorff=float(crafted.hausdorff.mean()))
        return row

    def check_parameters(self) -> None:
        """Check every name (:func:`check_names`), then build every selected or configured attack
        and defense from its parameters (no data, no models: seconds), so an unknown name or a
        value outside its domain fails before any dataset generation or training
        (``ConfigError`` / ``UnknownNameError`` naming the key)."""
        check_names(self.cfg)
        for name in dict.fromkeys([*self.attack_names(), *self.cfg.attacks]):
            self.attack_object_spec(name)
        for name in dict.fromkeys([*self.defense_names(), *self.cfg.defenses]):
            if name not in self.extra:
                self.defense_object(name)

    # ------------------------------------------------------------------ the run
    def run(self) -> pd.DataFrame:
        """Run every cell (skipping finished ones) and return the rows of this run's cells."""
        self.check_parameters()
        self.prepare_data()
        if not len(self.indices):
            raise ValueError(f"shard {self.shard[0]}/{self.shard[1]} holds no test clouds; use fewer shards")
        self.prepare_models()
        if "blackbox" in self.cfg.protocol:
            self.zoo.get(self.cfg.surrogate)
        self.store.write_run(self.run_id, self._run_meta())
        cells = self.cells()
        with self._progress(len(cells)) as advance:
            for cell in cells:
                advance(cell, None)
                self._do_cell(cell, advance)
                advance(cell, 1)
        self.store.write_run(self.run_id, self._run_meta(finished=True))
        return pd.DataFrame(self.rows)

    def _do_cell(self, cell: Cell, advance: Callable[..., None]) -> None:
        source, source_identity = self._source(cell.protocol, cell.defense) if cell.attack != CLEAN else ("", "")
        key = self._key(cell, source)
        try:
            cell_hash = self._cell_hash(cell, source_identity)
        except Exception as err:  # noqa: BLE001 - e.g. bad attack parameters
            if self.fail_fast:
                raise
            self._fail(cell, key, "", PreparedDefense(cell.defense), err)
            return
        if not self.force:
            done = self.store.finished(key, cell_hash)
            if done is not None:
                self.rows.append(done)
                return
        prepared = self.defense(cell.defense)
        if prepared.error is not None:
            self._fail(cell, key, cell_hash, prepared, RuntimeError(prepared.error))
            return
        try:
            crafted = None
            if cell.attack == CLEAN:
                points = self.points
            else:
                source_model = self._source_model(cell)
                reseed = self._source_reseed(cell)
                reseed(0)

                def on_batch(done: int, total: int) -> None:
                    reseed(done)  # a randomised source draws per batch, as in a single process
                    advance(cell, None, f"{done}/{total} batches")

                crafted = self._craft(cell.attack, source_model, source_identity, on_batch)
                points = crafted.points
            pred, seconds = self._evaluate(prepared, points, cell)
            row = self._row(cell, key, cell_hash, prepared, pred == self.labels, crafted, seconds, None)
        except Exception as err:  # noqa: BLE001 - one failed cell must not lose the others
            if self.fail_fast or isinstance(err, KeyboardInterrupt):
                raise
            self._fail(cell, key, cell_hash, prepared, err)
            return
        self._write(cell, row)

    def _write(self, cell: Cell, row: dict[str, Any]) -> None:
        self.replaced += [(old, str(row.get("cell_hash", ""))) for old in self.store.write([row])]
        self.rows.append(row)

    def _source_model(self, cell: Cell) -> nn.Module:
        if cell.protocol == "transfer" or (cell.protocol == "adaptive" and cell.defense == "none"):
            return self.victim.model
        if cell.protocol == "blackbox":
            return self.zoo.get(self.cfg.surrogate).model
        return self.defense(cell.defense).model.attackable(eot=self.cfg.eot)

    def _source_reseed(self, cell: Cell) -> Callable[[int], None]:
        """``reseed(b)``: restart a randomised adaptive source's draws for this shard's batch ``b``,
        keyed by the batch's first global sample index."""
        if cell.protocol != "adaptive" or cell.defense == "none":
            return lambda b: None
        model = self.defense(cell.defense).model

        def reseed(b: int) -> None:
            start = b * self.cfg.batch_size
            if start < len(self.indices):
                model.reseed(batch_seed(self.cfg.seed, "adaptive", cell.attack, int(self.indices[start])))

        return reseed

    def _fail(self, cell: Cell, key: Mapping[str, Any], cell_hash: str, prepared: PreparedDefense,
              err: BaseException) -> None:
        message = f"{type(err).__name__}: {err}"
        self.failures.append((cell, message))
        self.console.print(f"[red]  {cell.protocol}/{cell.defense}/{cell.attack} failed: {message}[/]")
        if not isinstance(err, RuntimeError) or prepared.error is None:
            self.console.print(traceback.format_exc(limit=3), markup=False, highlight=False)
        row = self._row(cell, key, cell_hash, prepared, None, None, 0.0, message)
        self._write(cell, row)

    def _run_meta(self, finished: bool = False) -> dict[str, Any]:
        import platform

        return {
            "run_id": self.run_id, "finished": finished, "config": self.cfg.to_dict(), "config_hash": self.cfg.hash(),
            "versions": self.versions, "git_commit": self.commit, "device": str(self.device),
            "platform": platform.platform(), "python": platform.python_version(),
            "shard": list(self.shard), "n": len(getattr(self, "indices", [])),
            "failures": [{"cell": dataclasses.asdict(c), "error": e} for c, e in self.failures],
            # what each defense learned and measured while preparing (e.g. MRPD's per-epoch diagnostics)
            "defenses": {name: {"seconds": round(p.seconds, 1), "cost_ratio": p.cost_ratio, "error": p.error,
                                "meta": to_jsonable(getattr(p.model, "meta", {}) or {})}
                         for name, p in sorted(self._defenses.items())},
            "time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        }

    def _progress(self, total: int) -> Any:
        from contextlib import contextmanager

        from benchmark.core.progress import progress_report

        @contextmanager
        def display() -> Iterator[Callable[..., None]]:
            with progress_report(total, "cells", self.console, enabled=self.progress, transient=False) as update:

                def advance(cell: Cell, step: int | None, info: str = "") -> None:
                    what = f"{cell.protocol} · {cell.attack} → {cell.defense}" + (f" ({info})" if info else "")
                    update(step or 0, what)

                yield advance

        return display()
