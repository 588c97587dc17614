"""The model zoo: build, train or load every model a run needs, cached by config hash.

``Zoo(ctx).get(name)`` returns a trained model for the dataset in ``ctx``: from the weights
cache when an entry with the same key exists (architecture + parameters, training
settings, dataset fingerprint, seed and the weights of the models it depends on), else
trained here and stored as safetensors with a JSON sidecar (accuracy, epochs, seconds,
versions). How a model is trained follows from what it is:

- ``ClipTeacher``: a user's open_clip checkpoint is loaded as is (``models.clip.checkpoint``);
  without one, the tiny embedded CLIP is trained with an image-text contrastive loss on
  depth projections of the training clouds against one caption per class (a random
  template each step), so that repeated classes in a batch are never false negatives.
- ``EmbeddingClassifier`` (models registered with the tag ``clip-space``: the point
  transformers): built with the CLIP's embedding size and a text head, aligned Uni3D-style
  into the CLIP space — InfoNCE against the frozen CLIP image embedding of the cloud's projection
  (weighted by ``training.<model>.image_alignment``; 0 drops it) plus cross-entropy of the
  scaled cosine to the CLIP class-text embeddings — and then classifies zero-shot style
  through those text embeddings.
- ``PointCloudAutoencoder``: Chamfer reconstruction.
- anything else with ``num_classes``: supervised cross-entropy (plug-in models included).

A model trains on the run's training split unless ``training.<model>.source`` names another
distribution (overrides of the run's dataset, read through ``ZooContext.source``): the
embedded default pretrains the MRPD student and its teachers that way, so that none of them
has seen the split MRPD tunes on (README, "MRPD"). Every model is scored on the run's test split.
"""
from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from benchmark.core.cache import cached_training, entry_path, file_sha256
from benchmark.core.config import TrainConfig, config_hash
from benchmark.core.data import PointCloudDataset
from benchmark.core.env import package_versions
from benchmark.core.geometry import chamfer_distance
from benchmark.core.projection import DepthProjector, ProjectionConfig
from benchmark.core.registry import MODELS
from benchmark.core.training import classification_step, evaluate_accuracy, fit, split_indices, split_validation

from .autoencoder import PointCloudAutoencoder
from .clip import ClipTeacher, encode_text_classes
from .heads import EmbeddingClassifier

__all__ = ["CAPTION_TEMPLATES", "ZOO_VERSION", "Zoo", "ZooContext", "ZooModel", "describe_score"]

#: Bump when training recipes change, so cached weights are retrained.
ZOO_VERSION = 1

#: Training options added after version 1, left out of a model's cache key while at these values:
#: a model that does not use them keeps its cached weights.
_KEY_OMITS_UNSET: dict[str, Any] = {"point_dropout": 0.0, "outliers": 0.0, "image_alignment": 1.0, "source": None}

#: Captions paired with depth images when training the embedded CLIP (and for zero-shot heads).
CAPTION_TEMPLATES: tuple[str, ...] = (
    "A depth picture of {}.",
    "a depth map of a {}.",
    "a point cloud of a {}.",
    "a 3D rendering of the {}.",
    "a grey silhouette of a {}.",
)


@dataclass
class ZooContext:
    """What the zoo needs to know: data, device, cache, parameters and training settings."""

    train: PointCloudDataset
    test: PointCloudDataset
    cache_dir: Path
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    seed: int = 0
    params: dict[str, dict[str, Any]] = field(default_factory=dict)  # config ``models:``
    train_config: Callable[[str], TrainConfig] = lambda name: TrainConfig()
    projection: ProjectionConfig = field(default_factory=lambda: ProjectionConfig(image_size=64))
    force: bool = False  # retrain even when cached
    progress: bool = True
    log: Callable[[str], None] = print
    # the run's dataset with some options overridden (``training.<model>.source``); None: no source datasets
    source: Callable[[dict[str, Any]], PointCloudDataset] | None = None


@dataclass
class ZooModel:
    """A ready model plus the facts every result row needs to trace it."""

    name: str
    model: nn.Module
    weights_hash: str  # sha256 of the weights file
    meta: dict[str, Any]
    cached: bool  # loaded rather than trained in this call


class Zoo:
    """Builds, trains or loads models by registry name, memoising them for one run."""

    def __init__(self, ctx: ZooContext) -> None:
        self.ctx = ctx
        self._ready: dict[str, ZooModel] = {}
        self._sources: dict[str, PointCloudDataset] = {}
        self._skipped_sources: set[str] = set()

    # -- public --------------------------------------------------------------------------------
    def get(self, name: str) -> ZooModel:
        """The trained model called ``name`` (loaded from the cache when possible)."""
        if name not in self._ready:
            self._ready[name] = self._load_or_train(name)
        return self._ready[name]

    def training_data(self, name: str) -> PointCloudDataset:
        """The clouds model ``name`` trains on: the run's training split, or its ``source`` distribution."""
        source = self.source_options(name)
        if not source:
            return self.ctx.train
        if self.ctx.source is None:
            raise ValueError(f"training.{name}.source asks for another dataset, but this zoo was built without a "
                             "reader for one (ZooContext.source); build it through benchmark.runner.Runner")
        key = config_hash(source)
        if key not in self._sources:
            data = self.ctx.source(dict(source))
            if tuple(data.class_names) != tuple(self.ctx.train.class_names):
                raise ValueError(f"training.{name}.source has other classes than the run's dataset; a source "
                                 "distribution must name the same classes in the same order")
            self._sources[key] = data
        return self._sources[key]

    def source_options(self, name: str) -> dict[str, Any] | None:
        """The dataset overrides model ``name`` trains on (``training.<name>.source``), or None for
        the run's own training split. A source that names a ``dataset`` applies only to runs on that
        dataset: the shipped profiles' SynthShapes sources (``dataset: synthshapes``) leave a
        ModelNet40 or ScanObjectNN run training on its own split, as ``source: null`` would."""
        source = self.ctx.train_config(name).source
        if not source:
            return None
        source = dict(source)
        target = source.pop("dataset", None)
        if target is not None and target != self.ctx.train.name:
            if name not in self._skipped_sources:
                self._skipped_sources.add(name)
                self.ctx.log(f"{name}: training.{name}.source is for {target}; this run is on {self.ctx.train.name}, "
                             "so it trains on the run's training split")
            return None
        return source

    # -- dispatch ------------------------------------------------------------------------------
    def _params(self, name: str) -> dict[str, Any]:
        return dict(self.ctx.params.get(name) or {})

    def _build(self, name: str) -> nn.Module:
        entry = MODELS.get(name)
        params = self._params(name)
        if "clip-teacher" in entry.tags:  # sizes or a named architecture + checkpoint, nothing derived
            return self._init(name, entry, params)
        if "num_points" in entry.defaults and "num_classes" not in entry.defaults:
            params.setdefault("num_points", self.ctx.train.num_points)  # e.g. the autoencoder
            return self._init(name, entry, params)
        params.setdefault("num_classes", self.ctx.train.num_classes)
        if "clip-space" in entry.tags:  # a point encoder trained into the CLIP embedding space
            params.setdefault("embed_dim", self.get("clip").model.embed_dim)
            params.setdefault("head", "text")
            params.setdefault("class_names", self.ctx.train.class_names)
        model = self._init(name, entry, params)
        if not getattr(model, "class_names", None):
            model.class_names = tuple(self.ctx.train.class_names)
        return model

    def _init(self, name: str, entry: Any, params: dict[str, Any]) -> nn.Module:
        """``entry.build(**params)`` under a random seed of its own (run seed and model name), so the
        initial weights depend only on what the cache key names, not on what this process ran
        before (a model retrained after a lost cache entry equals the one an uninterrupted run trained)."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(config_hash({"init": name, "seed": self.ctx.seed}), 16))
            return entry.build(**params)

    def _dependencies(self, name: str, model: nn.Module) -> dict[str, str]:
        return {"clip": self.get("clip").weights_hash} if isinstance(model, EmbeddingClassifier) else {}

    def _key(self, name: str, model: nn.Module) -> str:
        train = dataclasses.asdict(self.ctx.train_config(name))
        train["source"] = self.source_options(name)  # as applied (without its "dataset"), so adding one keeps keys
        for option, unset in _KEY_OMITS_UNSET.items():  # options added later leave the keys of models without them
            if train.get(option) == unset:
                train.pop(option)
        spec = {
            "zoo": ZOO_VERSION,
            "model": name,
            "params": self._params(name),
            "train": train,
            "dataset": self.training_data(name).fingerprint,
            "num_points": self.ctx.train.num_points,
            "seed": self.ctx.seed,
            "deps": self._dependencies(name, model),
            # the architecture as built (parameter names and shapes): a changed default changes the key
            "arch": config_hash([(k, list(v.shape)) for k, v in model.state_dict().items()]),
            "projection": dataclasses.asdict(self.ctx.projection) if isinstance(model, ClipTeacher) else None,
        }
        return f"{name}-{config_hash(spec)}"

    def _load_or_train(self, name: str) -> ZooModel:
        model = self._build(name)
        checkpoint = self._params(name).get("checkpoint") if isinstance(model, ClipTeacher) else None
        if checkpoint:  # the user's pretrained CLIP: used as is, traced by its file's hash
            path = Path(checkpoint).expanduser()
            model = model.to(self.ctx.device).freeze()
            return ZooModel(name, model, file_sha256(path), {"checkpoint": str(path)}, cached=True)
        pretrained = self._params(name).get("pretrained") if isinstance(model, EmbeddingClassifier) else None
        if pretrained:  # the user's Uni3D-style encoder: used as is, its head = the CLIP's class texts
            return self._pretrained_embedding(name, model, Path(pretrained).expanduser())
        path = entry_path(self.ctx.cache_dir, "weights", self._key(name, model), ".safetensors")
        model = model.to(self.ctx.device)

        def train() -> dict[str, Any]:
            start = time.perf_counter()
            meta = self._train(name, model)
            meta.update(
                trained_on=self.training_data(name).fingerprint,
                seconds=round(time.perf_counter() - start, 1),
                params=sum(p.numel() for p in model.parameters()),
                device=str(self.ctx.device),
                versions={k: v for k, v in package_versions().items() if k in ("pcrb", "torch", "open_clip_torch")},
            )
            return meta

        meta, cached, sha256 = cached_training(path, model, train, force=self.ctx.force, what=name)
        self.ctx.log(f"{name}: loaded cached weights ({describe_score(meta)})" if cached
                     else f"{name}: trained in {meta['seconds']:.0f} s ({describe_score(meta)})")
        return ZooModel(name, model.eval(), sha256, meta, cached=cached)

    def _pretrained_embedding(self, name: str, model: EmbeddingClassifier, path: Path) -> ZooModel:
        """A point encoder loaded from the user's file (e.g. ``--set models.uni3d-ti.pretrained=...``):
        not fine-tuned; its class embeddings are the CLIP teacher's class texts (zero-shot, as
        Uni3D and MRPD classify), and it is traced by both files' hashes."""
        clip = self.get("clip")
        model = model.to(self.ctx.device)
        with torch.no_grad():
            model.head.set_class_embeddings(self._class_text_embeddings(clip.model.to(self.ctx.device).eval()))
        model.eval().requires_grad_(False)
        weights = config_hash({"pretrained": file_sha256(path), "clip": clip.weights_hash})
        self.ctx.log(f"{name}: loaded pretrained weights {path} (zero-shot head from the CLIP class texts)")
        return ZooModel(name, model, weights, {"pretrained": str(path), "clip": clip.weights_hash}, cached=True)

    def _train(self, name: str, model: nn.Module) -> dict[str, Any]:
        cfg = self.ctx.train_config(name)
        if isinstance(model, ClipTeacher):
            return self._train_clip(name, model, cfg)
        if isinstance(model, EmbeddingClassifier):
            return self._train_embedding(name, model, cfg)
        if isinstance(model, PointCloudAutoencoder):
            return self._train_autoencoder(name, model, cfg)
        if not hasattr(model, "num_classes"):
            raise TypeError(f"model '{name}' ({type(model).__name__}) is neither a classifier nor a known teacher")
        return self._train_classifier(name, model, cfg)

    # -- recipes -------------------------------------------------------------------------------
    def _fit_kwargs(self, name: str) -> dict[str, Any]:
        return {"device": self.ctx.device, "seed": self.ctx.seed, "description": name,
                "progress": self.ctx.progress, "log": self.ctx.log}

    def _train_classifier(self, name: str, model: nn.Module, cfg: TrainConfig) -> dict[str, Any]:
        train, val = split_validation(self.training_data(name), cfg.val_fraction, self.ctx.seed)
        base = classification_step(model, cfg.label_smoothing)
        extra = getattr(model, "regularization_loss", None)  # e.g. PointNet's feature-transform term

        def step(points: Tensor, labels: Tensor, idx: Tensor) -> Tensor:
            loss = base(points, labels, idx)
            return loss + extra() if extra is not None else loss

        validate = None if val is None else (lambda: evaluate_accuracy(model, val, device=self.ctx.device))
        result = fit(model, train, cfg, step, validate=validate, **self._fit_kwargs(name))
        return self._accuracy_meta(model, result, cfg)

    def _train_autoencoder(self, name: str, model: nn.Module, cfg: TrainConfig) -> dict[str, Any]:
        train, val = split_validation(self.training_data(name), cfg.val_fraction, self.ctx.seed)

        def step(points: Tensor, labels: Tensor, idx: Tensor) -> Tensor:
            return chamfer_distance(model(points), points, mode="both").mean()

        @torch.no_grad()
        def chamfer(data: PointCloudDataset) -> float:
            model.eval()
            values = [chamfer_distance(model(x), x, mode="both") for x, _ in data.batches(64, device=self.ctx.device)]
            model.train()
            return float(torch.cat(values).mean())

        validate = None if val is None else (lambda: -chamfer(val))
        result = fit(model, train, cfg, step, validate=validate, **self._fit_kwargs(name))
        return {"epochs": cfg.epochs, "best_epoch": result.best_epoch, "val_by_epoch": _by_epoch(result.val_score),
                "test_chamfer": chamfer(self.ctx.test), "train_loss": result.train_loss[-1] if result.train_loss else None}

    def _class_text_embeddings(self, clip: ClipTeacher) -> Tensor:
        return encode_text_classes(clip, self.ctx.train.class_names, CAPTION_TEMPLATES)

    def _train_clip(self, name: str, clip: ClipTeacher, cfg: TrainConfig) -> dict[str, Any]:
        projector = DepthProjector(dataclasses.replace(self.ctx.projection, image_size=clip.image_size))
        train, val = split_validation(self.training_data(name), cfg.val_fraction, self.ctx.seed)
        names = [c.replace("_", " ") for c in train.class_names]
        captions = [[t.format(c) for t in CAPTION_TEMPLATES] for c in names]
        tokens = clip.tokenize([cap for per_class in captions for cap in per_class]).to(self.ctx.device)
        tokens = tokens.view(len(names), len(CAPTION_TEMPLATES), -1)
        generator = torch.Generator().manual_seed(self.ctx.seed)
        rows = torch.arange(len(names), device=self.ctx.device)

        def step(points: Tensor, labels: Tensor, idx: Tensor) -> Tensor:
            # one caption per class (a random template each step) is the text side of the batch:
            # image-text contrastive over all C captions, with no false negatives from repeated classes
            template = torch.randint(len(CAPTION_TEMPLATES), (len(names),), generator=generator).to(rows.device)
            image = nn.functional.normalize(clip.encode_image(projector(points)), dim=-1)
            text = nn.functional.normalize(clip.encode_text(tokens[rows, template]), dim=-1)
            logits = clip.model.logit_scale.exp().clamp(max=100) * image @ text.T
            return nn.functional.cross_entropy(logits, labels, label_smoothing=cfg.label_smoothing)

        def zero_shot(data: PointCloudDataset) -> float:
            with torch.no_grad():
                text = self._class_text_embeddings(clip)
            return evaluate_accuracy(
                clip, data, device=self.ctx.device,
                predict=lambda x: nn.functional.normalize(clip.encode_image(projector(x)), dim=-1) @ text.T,
            )

        validate = None if val is None else (lambda: zero_shot(val))
        result = fit(clip, train, cfg, step, validate=validate, **self._fit_kwargs(name))
        return {"epochs": cfg.epochs, "best_epoch": result.best_epoch, "val_zero_shot": result.best_score,
                "val_by_epoch": _by_epoch(result.val_score),
                "test_zero_shot_accuracy": zero_shot(self.ctx.test), "train_loss": result.train_loss[-1]}

    def _train_embedding(self, name: str, model: EmbeddingClassifier, cfg: TrainConfig) -> dict[str, Any]:
        clip = self.get("clip").model.to(self.ctx.device).eval().requires_grad_(False)
        projector = DepthProjector(dataclasses.replace(self.ctx.projection, image_size=clip.image_size))
        data = self.training_data(name)
        align = cfg.image_alignment
        with torch.no_grad():
            text = self._class_text_embeddings(clip)
            model.head.set_class_embeddings(text)
            images = torch.cat([
                nn.functional.normalize(clip.encode_image(projector(x)), dim=-1)
                for x, _ in data.batches(64, device=self.ctx.device)
            ]) if align > 0 else None
        train_idx, val_idx = split_indices(data, cfg.val_fraction, self.ctx.seed)
        train = data.subset(train_idx)
        val = data.subset(val_idx) if len(val_idx) else None
        train_rows = torch.from_numpy(train_idx).to(self.ctx.device)  # row of each train cloud in `images`
        temperature = 0.07

        def step(points: Tensor, labels: Tensor, idx: Tensor) -> Tensor:
            z = nn.functional.normalize(model.embed(points), dim=-1)
            loss = nn.functional.cross_entropy(model.head(z), labels, label_smoothing=cfg.label_smoothing)
            if images is None:
                return loss
            img = images[train_rows[idx.to(self.ctx.device)]]
            logits = z @ img.T / temperature
            target = torch.arange(len(z), device=z.device)
            infonce = 0.5 * (nn.functional.cross_entropy(logits, target) + nn.functional.cross_entropy(logits.T, target))
            return loss + align * infonce

        validate = None if val is None else (lambda: evaluate_accuracy(model, val, device=self.ctx.device))
        params = [p for n, p in model.named_parameters() if not n.startswith("head.")]
        result = fit(model, train, cfg, step, params=params, validate=validate, **self._fit_kwargs(name))
        return self._accuracy_meta(model, result, cfg)

    def _accuracy_meta(self, model: nn.Module, result: Any, cfg: TrainConfig) -> dict[str, Any]:
        return {
            "epochs": cfg.epochs,
            "best_epoch": result.best_epoch,
            "val_accuracy": result.best_score,
            "val_by_epoch": _by_epoch(result.val_score),
            "test_accuracy": evaluate_accuracy(model, self.ctx.test, device=self.ctx.device),
            "train_loss": result.train_loss[-1] if result.train_loss else None,
        }


def _by_epoch(scores: list[float]) -> list[float] | None:
    """The validation score after each epoch (6 decimals), for the weights' metadata: how far the
    recipe's last epochs still moved it; None without a validation split."""
    return [round(float(v), 6) for v in scores] if not all(math.isnan(v) for v in scores) else None


def _soft_ce(logits: Tensor, targets: Tensor) -> Tensor:
    return -(targets * logits.log_softmax(-1)).sum(-1).mean()


def describe_score(meta: dict[str, Any]) -> str:
    """A model's headline score from its weights metadata, for tables and logs."""
    for key in ("test_accuracy", "test_zero_shot_accuracy"):
        if meta.get(key) is not None:
            return f"{key.replace('_', ' ')} {100 * meta[key]:.1f}%"
    if meta.get("test_chamfer") is not None:
        return f"test chamfer {meta['test_chamfer']:.4f}"
    return "no score"
