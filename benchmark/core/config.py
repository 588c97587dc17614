"""Typed run configuration, profiles, merging and the stable config hash.

A run's configuration is resolved in this order, later winning:

    profile YAML (benchmark/core/profiles/<name>.yaml, optionally ``base:`` another profile)
      < user YAML (``--config file.yaml``)
      < ``--set dotted.key=value`` overrides (values parsed as YAML scalars)
      < explicit CLI flags (``--attack``, ``--seed``, ...)

Selections and parameters are kept apart: ``attack: [pgd, cw]`` (what ``--attack`` sets)
chooses what runs, while ``attacks: {pgd: {budget: 0.08}}`` holds parameters by registry
name. The same holds for ``defense``/``defenses``; ``models`` and ``datasets`` hold
per-model parameters and per-reader options (``datasets: {synthshapes: {train_size: 2048}}``),
so switching ``dataset.name`` never passes one reader's options to another.
Unknown keys are errors naming the key and its closest known spelling.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import re
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path, PurePath
from typing import Any, Literal, Union

import yaml

from benchmark.core.registry import Registry, UnknownNameError, close_matches_hint

__all__ = [
    "PROTOCOLS",
    "ConfigError",
    "DatasetConfig",
    "RunConfig",
    "TrainConfig",
    "available_profiles",
    "check_params",
    "config_hash",
    "deep_merge",
    "load_profile",
    "load_yaml",
    "parse_set",
    "resolve_config",
    "to_jsonable",
]

PROTOCOLS: tuple[str, ...] = ("transfer", "blackbox", "adaptive")


class ConfigError(ValueError):
    """An invalid configuration: unknown key, wrong type, bad ``--set`` syntax, missing profile."""


# ---------------------------------------------------------------------------------------------
# YAML: safe loading, with "1e-3" read as a float (PyYAML's YAML 1.1 resolver reads it as a str)
# ---------------------------------------------------------------------------------------------
class PCRBSafeLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that also reads ``1e-3`` / ``5E+4`` as floats, as YAML 1.2 does."""


_FLOAT_RE = re.compile(
    r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |[-+]?\.[0-9_]+(?:[eE][-+]?[0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""",
    re.X,
)
PCRBSafeLoader.yaml_implicit_resolvers = {
    key: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:float"]
    for key, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
PCRBSafeLoader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT_RE, list("-+0123456789."))


def load_yaml(text: str, source: str = "<string>") -> Any:
    """Parse YAML safely (no object construction); a syntax error names ``source``."""
    try:
        return yaml.load(text, Loader=PCRBSafeLoader)  # a SafeLoader subclass: no arbitrary objects
    except yaml.YAMLError as err:
        raise ConfigError(f"cannot parse YAML in {source}: {err}") from err


# ---------------------------------------------------------------------------------------------
# The typed configuration
# ---------------------------------------------------------------------------------------------
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


# ---------------------------------------------------------------------------------------------
# dict -> dataclass with type checks and unknown-key errors
# ---------------------------------------------------------------------------------------------
def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _convert(value: Any, tp: Any, path: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, path)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{path}: {value!r} is not a valid {_type_name(tp)}")
    if origin is Literal:
        if value not in args:
            raise ConfigError(
                f"{path}: {value!r} is not one of {', '.join(map(str, args))}"
                f"{close_matches_hint(str(value), [str(a) for a in args])}"
            )
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(f"{path}: expected a mapping of {tp.__name__} fields, got {value!r}")
        return _from_dict(tp, value, path + ".")
    if origin is list:
        (item_tp,) = args or (Any,)
        if isinstance(value, str):  # "a,b" -> ["a", "b"]: what --attack/--defense take
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{path}: expected a list (or a comma list), got {value!r}")
        return [_convert(v, item_tp, f"{path}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        key_tp, val_tp = args or (Any, Any)
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            raise ConfigError(f"{path}: expected a mapping, got {value!r}")
        return {str(k): _convert(v, val_tp, f"{path}.{k}") for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{path}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{path}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if isinstance(value, float) and not math.isfinite(value):
                raise ConfigError(f"{path}: expected a finite number, got {value!r}")
            return float(value)
        raise ConfigError(f"{path}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{path}: expected a string, got {value!r}")
    return value


def _from_dict(cls: type, data: Mapping[str, Any], prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    kwargs = {}
    for key, value in data.items():
        if key not in names:
            raise ConfigError(
                f"unknown config key '{prefix}{key}'{close_matches_hint(str(key), names) or '.'} "
                f"Known keys{' under ' + prefix.rstrip('.') if prefix else ''}: {', '.join(names)}"
            )
        kwargs[key] = _convert(value, hints[key], prefix + key)
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{prefix.rstrip('.') or cls.__name__}: {err}") from err


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Recursive dict merge: mappings merge key by key, anything else (lists too) is replaced."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


# ---------------------------------------------------------------------------------------------
# Profiles, user YAML and --set
# ---------------------------------------------------------------------------------------------
def available_profiles() -> list[str]:
    """Names of the profiles shipped in ``benchmark/core/profiles``."""
    folder = resources.files("benchmark.core") / "profiles"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


def load_profile(name: str, _seen: tuple[str, ...] = ()) -> dict[str, Any]:
    """The profile ``name`` as a dict, with its ``base:`` profiles merged underneath."""
    if name in _seen:
        raise ConfigError(f"profile inheritance loops: {' -> '.join((*_seen, name))}")
    known = available_profiles()
    if name not in known:
        raise ConfigError(
            f"unknown profile '{name}'{close_matches_hint(name, known) or '.'} "
            f"Shipped profiles: {', '.join(known)}; or give your own file with --config"
        )
    text = (resources.files("benchmark.core") / "profiles" / f"{name}.yaml").read_text()
    data = load_yaml(text, f"profile '{name}'") or {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"profile '{name}' must be a mapping at top level")
    base = data.pop("base", None)
    if base:
        data = deep_merge(load_profile(str(base), (*_seen, name)), data)
    data["profile"] = name
    return data


def load_user_config(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A user's YAML config file as a dict."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise ConfigError(f"config file '{p}' does not exist")
    data = load_yaml(p.read_text(), str(p)) or {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"config file '{p}' must hold a mapping (key: value lines) at top level")
    return dict(data)


def parse_set(assignments: Sequence[str]) -> dict[str, Any]:
    """``["a.b=1", "c=[x, y]"]`` -> ``{"a": {"b": 1}, "c": ["x", "y"]}`` (values as YAML scalars)."""
    out: dict[str, Any] = {}
    for item in assignments:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--set expects dotted.key=value, got {item!r}")
        parts = key.split(".")
        if any(not p for p in parts):
            raise ConfigError(f"--set key {key!r} has an empty part")
        value = load_yaml(raw, f"--set {item}") if raw.strip() else None
        node = out
        for part in parts[:-1]:
            existing = node.get(part)
            if not isinstance(existing, dict):
                existing = node[part] = {}
            node = existing
        node[parts[-1]] = value
    return out


def resolve_config(
    profile: str | None = None,
    config_file: str | os.PathLike[str] | None = None,
    overrides: Sequence[str] = (),
    flags: Mapping[str, Any] | None = None,
) -> RunConfig:
    """Merge profile < config file < ``--set`` overrides < explicit flags into a ``RunConfig``.

    ``flags`` hold already-structured values from CLI options (None values are ignored),
    e.g. ``{"attack": "pgd,cw", "dataset": {"root": "~/data"}}``. ``profile`` None means the
    config file's ``profile:`` key, else ``default``; an explicit ``profile`` wins over the file's.
    """
    user = load_user_config(config_file) if config_file is not None else {}
    file_profile = user.pop("profile", None)
    data = load_profile(str(profile or file_profile or "default"))
    data = deep_merge(data, user)
    sets = parse_set(overrides)
    if "profile" in sets:
        raise ConfigError(
            "the profile cannot be changed with --set (its values would not follow); use --profile NAME"
        )
    data = deep_merge(data, sets)
    if flags:
        data = deep_merge(data, _drop_none(flags))
    return _from_dict(RunConfig, data)


def _drop_none(mapping: Mapping[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in mapping.items():
        if isinstance(v, Mapping):
            v = _drop_none(v)
            if not v:
                continue
        if v is not None:
            out[k] = v
    return out


def check_params(section: str, params: Mapping[str, Mapping[str, Any]], registry: Registry) -> None:
    """Check ``attacks:``/``defenses:``/``models:`` parameters against the registered entries.

    Raises ``ConfigError`` for a name the registry lacks or a parameter its entry does not take.
    """
    for name, values in params.items():
        try:
            entry = registry.get(name)
            entry.check_params(values or {}, where=f"{section}.{name}")
        except UnknownNameError as err:
            raise ConfigError(f"in '{section}': {err}") from err


# ---------------------------------------------------------------------------------------------
# Stable hashing
# ---------------------------------------------------------------------------------------------
def to_jsonable(obj: Any) -> Any:
    """Convert dataclasses, paths, tuples, numpy/torch scalars into plain JSON types."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, (set, frozenset)):
        return sorted(to_jsonable(v) for v in obj)
    if isinstance(obj, PurePath):
        return str(obj)
    if isinstance(obj, float) and not math.isfinite(obj):
        return {"$float": repr(obj)}  # JSON has no NaN/inf; tagged so it cannot equal a string
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    if hasattr(obj, "item") and callable(obj.item):  # numpy / torch scalars
        return to_jsonable(obj.item())
    raise TypeError(f"cannot hash a value of type {type(obj).__name__}: {obj!r}")


def config_hash(obj: Any, length: int = 16) -> str:
    """sha256 of the canonical JSON of ``obj`` (sorted keys, no whitespace), hex, truncated."""
    text = json.dumps(to_jsonable(obj), sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()[:length]
