"""Name -> builder registries for models, datasets, attacks and defenses, and plug-in loading.

A registry is a lookup table, not a framework: the decorated class or function
stays usable on its own. Each entry keeps its name, the object, its default
parameters (dataclass fields or keyword defaults) and a one-line description
(the docstring's first line, which ``bench list`` shows to users).

    from benchmark.core.registry import ATTACKS

    @ATTACKS.register("pgd")
    @dataclass
    class PGD:
        '''Projected gradient descent on the points (global L2 ball).'''
        budget: float = 0.08

The packages re-export the decorators: ``from attacks import register_attack``.
"""
from __future__ import annotations

import dataclasses
import difflib
import importlib
import importlib.metadata
import inspect
import re
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

__all__ = [
    "ATTACKS",
    "DATASETS",
    "DEFENSES",
    "MODELS",
    "REGISTRIES",
    "DuplicateNameError",
    "Entry",
    "PluginError",
    "Registry",
    "UnknownNameError",
    "close_matches_hint",
    "load_plugins",
    "populate_registries",
]

T = TypeVar("T")

NAME_PATTERN = re.compile(r"^[a-z0-9]+(?:[-.][a-z0-9]+)*$")
PLUGIN_GROUP = "bench.plugins"


class UnknownNameError(LookupError):
    """A name that no registry entry (or config key) carries; the message lists close matches."""


class DuplicateNameError(ValueError):
    """A name registered twice without ``override=True``."""


class PluginError(ImportError):
    """A plug-in module named by the user could not be imported."""


def close_matches_hint(name: str, candidates: Iterable[str], n: int = 3) -> str:
    """Return "; did you mean 'a' or 'b'?" for the closest candidates, or "" when none is close."""
    matches = difflib.get_close_matches(name, list(candidates), n=n, cutoff=0.6)
    if not matches:
        return ""
    quoted = [f"'{m}'" for m in matches]
    joined = quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " or " + quoted[-1]
    return f"; did you mean {joined}?"


def _first_doc_line(obj: Any) -> str:
    doc = inspect.getdoc(obj) or ""
    for line in doc.splitlines():
        if line.strip():
            return line.strip()
    return ""


def _defaults_of(obj: Any) -> dict[str, Any]:
    """Default parameters of a dataclass type (its fields) or a callable (its keyword defaults)."""
    if dataclasses.is_dataclass(obj) and isinstance(obj, type):
        out: dict[str, Any] = {}
        for f in dataclasses.fields(obj):
            if not f.init:
                continue
            if f.default is not dataclasses.MISSING:
                out[f.name] = f.default
            elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
                out[f.name] = f.default_factory()  # type: ignore[misc]
        return out
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):
        return {}
    return {
        p.name: p.default
        for p in sig.parameters.values()
        if p.default is not inspect.Parameter.empty
        and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    }


def _required_params(obj: Any) -> list[str]:
    """Parameters of a dataclass type or callable that have no default."""
    if dataclasses.is_dataclass(obj) and isinstance(obj, type):
        return [
            f.name
            for f in dataclasses.fields(obj)
            if f.init
            and f.default is dataclasses.MISSING
            and f.default_factory is dataclasses.MISSING  # type: ignore[misc]
        ]
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):
        return []
    return [
        p.name
        for p in sig.parameters.values()
        if p.default is inspect.Parameter.empty and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    ]


def _accepts_var_kwargs(obj: Any) -> bool:
    if dataclasses.is_dataclass(obj) and isinstance(obj, type):
        return False
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):
        return True
    return any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values())


@dataclass(frozen=True)
class Entry:
    """One registered thing: its name, the object, its default parameters and a description."""

    name: str
    kind: str
    obj: Any
    defaults: Mapping[str, Any] = field(default_factory=dict)
    description: str = ""
    module: str = ""
    tags: tuple[str, ...] = ()

    def check_params(self, params: Mapping[str, Any], where: str = "") -> None:
        """Raise ``UnknownNameError`` for a parameter the entry does not take (lists close matches)."""
        if _accepts_var_kwargs(self.obj):
            return
        for key in params:
            if key not in self.defaults and key not in self._required():
                prefix = f"{where}: " if where else ""
                known = list(self.defaults) + self._required()
                hint = close_matches_hint(key, known) or "."
                raise UnknownNameError(
                    f"{prefix}{self.kind} '{self.name}' has no parameter '{key}'{hint}"
                    f" Known parameters: {', '.join(sorted(known)) or 'none'}."
                )

    def _required(self) -> list[str]:
        return _required_params(self.obj)

    def build(self, *args: Any, **params: Any) -> Any:
        """Call the registered object with its defaults overridden by ``params``."""
        self.check_params(params)
        return self.obj(*args, **{**self.defaults, **params})


class Registry:
    """A named table of builders of one kind ("model", "dataset", "attack", "defense")."""

    def __init__(self, kind: str, plural: str | None = None) -> None:
        self.kind = kind
        self.plural = plural or f"{kind}s"
        self._entries: dict[str, Entry] = {}

    # -- registration -------------------------------------------------------------------
    def register(
        self,
        name: str | None = None,
        *,
        override: bool = False,
        description: str | None = None,
        tags: Sequence[str] = (),
        **defaults: Any,
    ) -> Callable[[T], T]:
        """Decorator registering a class or factory under ``name`` (default: its lowercased name).

        Extra keyword arguments become the entry's defaults on top of those read from the
        object, which is how several variants of one class are registered.
        Registering a taken name raises ``DuplicateNameError`` unless ``override=True``.
        """

        def decorator(obj: T) -> T:
            self.add(
                name or getattr(obj, "__name__", "").lower().replace("_", "-"),
                obj,
                override=override,
                description=description,
                tags=tags,
                **defaults,
            )
            return obj

        return decorator

    def add(
        self,
        name: str,
        obj: Any,
        *,
        override: bool = False,
        description: str | None = None,
        tags: Sequence[str] = (),
        **defaults: Any,
    ) -> Entry:
        """Register ``obj`` under ``name`` (non-decorator form); returns the new entry."""
        if not isinstance(name, str) or not NAME_PATTERN.match(name):
            raise ValueError(
                f"invalid {self.kind} name {name!r}: names are lowercase kebab-case "
                "(letters, digits, '-' or '.'), e.g. 'pgd', 'add-cd', 'pointnet2-ssg'"
            )
        if name in self._entries and not override:
            old = self._entries[name]
            raise DuplicateNameError(
                f"{self.kind} '{name}' is already registered (by {old.module or 'unknown module'}); "
                "pick another name or pass override=True to replace it"
            )
        merged = _defaults_of(obj)
        if defaults and not _accepts_var_kwargs(obj):
            known = set(merged) | set(_required_params(obj))
            for key in defaults:
                if key not in known:
                    raise ValueError(
                        f"cannot register {self.kind} '{name}': {getattr(obj, '__name__', obj)!s} takes no "
                        f"parameter '{key}'{close_matches_hint(key, known) or ''}"
                    )
        merged.update(defaults)
        entry = Entry(
            name=name,
            kind=self.kind,
            obj=obj,
            defaults=merged,
            description=description if description is not None else _first_doc_line(obj),
            module=getattr(obj, "__module__", "") or "",
            tags=tuple(tags),
        )
        self._entries[name] = entry
        return entry

    def remove(self, name: str) -> None:
        """Forget ``name`` (tests and interactive use); unknown names raise ``UnknownNameError``."""
        self.get(name)
        del self._entries[name]

    # -- lookup ---------------------------------------------------------------------------
    def get(self, name: str) -> Entry:
        """The entry called ``name``; an unknown name raises ``UnknownNameError`` with close matches."""
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            pass
        raise UnknownNameError(self.unknown_message(str(name)))

    def unknown_message(self, name: str, extra_candidates: Iterable[str] = ()) -> str:
        """The error text for an unknown ``name``: close matches, else the known names."""
        hint = close_matches_hint(name, [*self._entries, *extra_candidates])
        known = hint or f". Known {self.plural}: {', '.join(self.names()) or 'none yet'}."
        return f"unknown {self.kind} '{name}'{known} See: bench list {self.plural}"

    def build(self, name: str, *args: Any, **params: Any) -> Any:
        """Build the entry called ``name`` with ``params`` overriding its defaults."""
        return self.get(name).build(*args, **params)

    def resolve(self, spec: str | Sequence[str] | None, *, default: Sequence[str] = ()) -> list[str]:
        """Expand a user selection into registered names, in registry order for ``all``.

        ``spec`` is ``"all"``, a comma list (``"pgd,cw"``) or a sequence of names; an empty
        selection gives ``default``. Unknown names raise ``UnknownNameError``.
        """
        if spec is None:
            return list(default)
        items = spec.split(",") if isinstance(spec, str) else list(spec)
        out: list[str] = []
        for item in items:
            item = str(item).strip()
            if not item:
                continue
            names = self.names() if item == "all" else [self.get(item).name]
            for n in names:
                if n not in out:
                    out.append(n)
        return out if out else list(default)

    def names(self) -> list[str]:
        """Registered names in registration order."""
        return list(self._entries)

    def entries(self) -> list[Entry]:
        return list(self._entries.values())

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {len(self)} entries)"


MODELS = Registry("model")
DATASETS = Registry("dataset")
ATTACKS = Registry("attack")
DEFENSES = Registry("defense")

#: Plural name -> registry, as ``bench list`` spells them.
REGISTRIES: dict[str, Registry] = {r.plural: r for r in (MODELS, DATASETS, ATTACKS, DEFENSES)}


#: The packages whose import fills each registry (imported by name: this module stays on the ground floor).
REGISTRY_PACKAGES = {"models": "models", "datasets": "benchmark.core.data", "attacks": "attacks", "defenses": "defenses"}


def populate_registries(plugins: Iterable[str] = ()) -> None:
    """Fill every registry: import our packages (their modules register their entries), then the
    user's plug-ins (:func:`load_plugins`). What the CLI, the library API and the plots call first."""
    for package in REGISTRY_PACKAGES.values():
        importlib.import_module(package)
    load_plugins(plugins)


def load_plugins(modules: Iterable[str] = (), *, entry_points: bool = True) -> list[str]:
    """Import third-party modules whose import registers models, datasets, attacks or defenses.

    ``modules`` are dotted names the user gave (``--plugin mypkg.mydefense``); a failure to
    import one raises ``PluginError`` naming it. With ``entry_points``, modules advertised in
    the ``bench.plugins`` entry-point group are imported too; a broken one is a warning, so a
    single bad package cannot take the CLI down. Returns the names of the modules imported.
    """
    loaded: list[str] = []
    for name in modules:
        name = name.strip()
        if not name:
            continue
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as err:
            raise PluginError(
                f"cannot import plug-in '{name}': {err}. Install the package that provides it, "
                "or add its folder to PYTHONPATH"
            ) from err
        except DuplicateNameError:
            raise
        except Exception as err:  # the plug-in's own code failed: say which plug-in
            raise PluginError(f"plug-in '{name}' failed while importing: {type(err).__name__}: {err}") from err
        loaded.append(name)
    if entry_points:
        for ep in importlib.metadata.entry_points(group=PLUGIN_GROUP):
            try:
                ep.load()
            except Exception as err:  # noqa: BLE001 - reported, never fatal
                warnings.warn(
                    f"ignoring bench.plugins entry point '{ep.name}' ({ep.value}): "
                    f"{type(err).__name__}: {err}",
                    stacklevel=2,
                )
                continue
            loaded.append(ep.value)
    return loaded
