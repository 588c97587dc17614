"""The typed run configuration: ``RunConfig`` (what a run is), ``DatasetConfig`` (which data)
and ``TrainConfig`` (how a model is trained), each validated when built.

How a ``RunConfig`` is resolved from profiles, files and ``--set`` is
:mod:`benchmark.core.config_profiles`; import everything from :mod:`benchmark.core.config`.
Floor 0: imports PyYAML and ``benchmark.core`` only.
"""
from __future__ import annotations

import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import yaml

from benchmark.core.config_dicts import ConfigError, _from_dict, config_hash, deep_merge, to_jsonable
from benchmark.core.registry import close_matches_hint

__all__ = ["PROTOCOLS", "DatasetConfig", "RunConfig", "TrainConfig", "expand_protocols"]

PROTOCOLS: tuple[str, ...] = ("transfer", "blackbox", "adaptive")


@dataclass
class DatasetConfig:
    """Which data, and how each cloud is prepared."""

    name: str = "synthshapes"
    root: str | None = None  # folder with the dataset's files (real datasets)
    num_points: int = 1024
    sampling: Literal["first", "random", "fps"] = "first"
    normalize: bool = True


@dataclass
class TrainConfig:
    """How a model is trained (``training.default`` merged with ``training.<model name>``)."""

    epochs: int = 10
    lr: float = 1e-3
    min_lr: float = 1e-5  # cosine schedule floor
    warmup: float = 0.05  # fraction of all steps with a linear learning-rate warm-up
    weight_decay: float = 1e-4  # AdamW
    batch_size: int = 32
    label_smoothing: float = 0.0
    grad_clip: float | None = None  # max gradient norm
    val_fraction: float = 0.1  # carved from the training split for best-checkpoint selection
    scale_low: float = 0.85  # anisotropic scaling augmentation range
    scale_high: float = 1.15
    jitter: float = 0.0  # Gaussian point jitter augmentation (std, unit-sphere units)
    rotate: bool = False  # random rotation about the up axis (y) as augmentation
    point_dropout: float = 0.0  # each cloud loses a uniform [0, point_dropout) share of its points (set to a kept one)
    outliers: float = 0.0  # each cloud has a uniform [0, outliers) share of its points moved uniformly into [-1, 1]^3
    # clip-space point encoders: weight of the InfoNCE term against the CLIP image embeddings of the
    # cloud's projection (1: Uni3D-style alignment; 0: trained on the class-text head alone)
    image_alignment: float = 1.0
    # train on another distribution than the run's training split: overrides of the run's dataset
    # (e.g. {seed: 2, train_size: 1024, sampling: fps}); the run's split is then never seen by the model
    source: dict[str, Any] | None = None
    amp: bool = True  # mixed precision on CUDA (ignored on CPU)

    def __post_init__(self) -> None:
        if self.epochs < 0 or self.batch_size < 1 or self.lr <= 0:
            raise ConfigError(f"training needs epochs >= 0, batch_size >= 1 and lr > 0, got {self}")
        if not (0.0 <= self.point_dropout < 1.0 and 0.0 <= self.outliers < 1.0):
            raise ConfigError(f"training.point_dropout and training.outliers must be in [0, 1), got "
                              f"{self.point_dropout} and {self.outliers}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ConfigError(f"training.val_fraction must be in [0, 1), got {self.val_fraction}")


@dataclass
class RunConfig:
    """Everything that determines a benchmark run."""

    profile: str = "default"
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    victim: str = "point-transformer-student"
    surrogate: str = "pointnet"  # black-box protocol's source model
    defense: list[str] = field(default_factory=lambda: ["all"])  # selection; "all" = every registered
    attack: list[str] = field(default_factory=lambda: ["all"])
    protocol: list[str] = field(default_factory=lambda: ["transfer"])
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:<i>
    batch_size: int = 32
    limit: int | None = None  # evaluate only the first N test clouds
    eot: int = 4  # adaptive protocol: draws averaged per gradient for randomised defenses (EOT)
    cache_dir: str | None = None  # None: $PCRB_CACHE_DIR or the user cache dir
    out_dir: str = "results"
    plugins: list[str] = field(default_factory=list)
    datasets: dict[str, dict[str, Any]] = field(default_factory=dict)  # per-reader options
    models: dict[str, dict[str, Any]] = field(default_factory=dict)  # per-model parameters
    training: dict[str, dict[str, Any]] = field(default_factory=dict)  # "default" + per-model overrides
    attacks: dict[str, dict[str, Any]] = field(default_factory=dict)  # per-attack parameters
    defenses: dict[str, dict[str, Any]] = field(default_factory=dict)  # per-defense parameters

    # Fields that say where things go, not what is computed: left out of the hash.
    NON_SEMANTIC: typing.ClassVar[tuple[str, ...]] = ("cache_dir", "out_dir", "plugins")

    def __post_init__(self) -> None:
        self.protocol = expand_protocols(self.protocol)
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.eot < 1:
            raise ConfigError(f"eot must be >= 1 (draws per gradient of a randomised defense), got {self.eot}")
        if self.limit is not None and self.limit < 1:
            raise ConfigError(f"limit must be >= 1 (or null for all), got {self.limit}")
        if self.dataset.num_points < 1:
            raise ConfigError(f"dataset.num_points must be >= 1, got {self.dataset.num_points}")
        for name in self.training:  # fail at load time, naming the key, not mid-run
            self.train_config(name)

    def train_config(self, model: str) -> TrainConfig:
        """Training settings for ``model``: ``training.default`` overridden by ``training.<model>``."""
        merged = deep_merge(self.training.get("default") or {}, self.training.get(model) or {})
        return _from_dict(TrainConfig, merged, f"training.{model}.")

    def dataset_options(self) -> dict[str, Any]:
        """The reader options for the selected dataset (``datasets.<dataset.name>``)."""
        return dict(self.datasets.get(self.dataset.name) or {})

    def to_dict(self) -> dict[str, Any]:
        """A plain nested dict (YAML/JSON ready)."""
        return to_jsonable(self)

    def hash(self, length: int = 16) -> str:
        """Stable hash of everything that affects results (paths and plug-in names excluded)."""
        data = self.to_dict()
        for key in self.NON_SEMANTIC:
            data.pop(key, None)
        return config_hash(data, length)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def expand_protocols(value: str | Sequence[str]) -> list[str]:
    """``"all"``, ``"transfer,adaptive"`` or a list -> validated protocol names."""
    items = value.split(",") if isinstance(value, str) else list(value)
    out: list[str] = []
    for item in items:
        item = str(item).strip()
        names = list(PROTOCOLS) if item == "all" else [item]
        for name in names:
            if name not in PROTOCOLS:
                raise ConfigError(
                    f"unknown protocol '{name}'{close_matches_hint(name, PROTOCOLS) or '.'} "
                    f"Choose from: {', '.join(PROTOCOLS)}, all"
                )
            if name not in out:
                out.append(name)
    if not out:
        raise ConfigError("protocol is empty: choose from transfer, blackbox, adaptive, all")
    return out
