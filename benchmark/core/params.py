"""Parameter domains declared once, on the dataclass field, and checked in one place.

An attack or defense is a dataclass of hyperparameters. A field with a domain is declared
with one of the helpers below instead of a plain default::

    @dataclass
    class PGD(Attack):
        budget: float = positive(0.08)              # a float > 0
        steps: int = count(20)                      # an int >= 1
        loss: str = choice("ce", ("ce", "margin"))  # one of the listed strings
        gamma: float = fraction(0.25)               # a float in [0, 1]

:func:`check_fields` (called by ``Attack.__post_init__`` and ``Defense.__post_init__``)
validates every field against its domain and raises one ``ValueError`` that names the
class, the field, the value and the domain. A subclass may redeclare a field with a plain
default (``init_weight: float = 5e3``): the domain declared by the nearest base class
still applies. Checks that relate two fields (``max_weight >= init_weight``) stay in the
class's own ``__post_init__``.

:class:`Ablation` is the other declaration a class makes about its parameters: a named
set of changes `bench ablate` evaluates as its own column (``Defense.ablations``).

Floor 0: the standard library only.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "Ablation",
    "Domain",
    "check_fields",
    "choice",
    "count",
    "domain_of",
    "domains",
    "fraction",
    "nonnegative",
    "param",
    "positive",
]

_KINDS = {"int": int, "float": float, "bool": bool, "str": str}


@dataclass(frozen=True)
class Domain:
    """The values a field accepts.

    Attributes:
        kind: ``"int"``, ``"float"``, ``"bool"`` or ``"str"`` (an int is accepted where a
            float is asked; a bool never counts as a number).
        gt, ge, lt, le: numeric bounds (None = unbounded).
        choices: the accepted values of a string field (None = any).
        optional: whether ``None`` is accepted (it then means "use the default rule" the
            field's docstring states).
    """

    kind: str
    gt: float | None = None
    ge: float | None = None
    lt: float | None = None
    le: float | None = None
    choices: tuple[Any, ...] | None = None
    optional: bool = False

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise ValueError(f"Domain.kind must be one of {', '.join(_KINDS)}; got {self.kind!r}")

    def describe(self) -> str:
        """A phrase for messages and ``bench list``: ``"an int >= 1"``, ``"one of 'ce', 'margin'"``."""
        if self.choices is not None:
            text = "one of " + ", ".join(repr(c) for c in self.choices)
        else:
            text = {"int": "an int", "float": "a number", "bool": "true or false", "str": "a string"}[self.kind]
            lower = f"> {self.gt:g}" if self.gt is not None else f">= {self.ge:g}" if self.ge is not None else ""
            upper = f"< {self.lt:g}" if self.lt is not None else f"<= {self.le:g}" if self.le is not None else ""
            if lower and upper and self.ge is not None and self.le is not None:
                text += f" in [{self.ge:g}, {self.le:g}]"
            elif lower or upper:
                text += " " + " and ".join(p for p in (lower, upper) if p)
        return text + (" (or null)" if self.optional else "")

    def accepts(self, value: Any) -> bool:
        """Whether ``value`` lies in the domain."""
        if value is None:
            return self.optional
        if self.kind == "bool":
            return isinstance(value, bool)
        if self.kind == "str":
            if not isinstance(value, str):
                return False
        elif isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        elif self.kind == "int" and not isinstance(value, int):
            return False
        elif isinstance(value, float) and not math.isfinite(value):
            return False
        if self.choices is not None and value not in self.choices:
            return False
        if self.kind in ("int", "float"):
            if self.gt is not None and not value > self.gt:
                return False
            if self.ge is not None and not value >= self.ge:
                return False
            if self.lt is not None and not value < self.lt:
                return False
            if self.le is not None and not value <= self.le:
                return False
        return True


def param(
    default: Any = dataclasses.MISSING,
    *,
    kind: str | None = None,
    gt: float | None = None,
    ge: float | None = None,
    lt: float | None = None,
    le: float | None = None,
    choices: Sequence[Any] | None = None,
    optional: bool | None = None,
    default_factory: Any = dataclasses.MISSING,
) -> Any:
    """A dataclass field with a :class:`Domain` (``kind`` inferred from the default's type;
    ``optional`` defaults to True when the default is None)."""
    if kind is None:
        if isinstance(default, bool):
            kind = "bool"
        elif isinstance(default, int):
            kind = "float" if any(isinstance(b, float) for b in (gt, ge, lt, le)) else "int"
        elif isinstance(default, float):
            kind = "float"
        elif isinstance(default, str):
            kind = "str"
        else:
            raise ValueError("param(): give kind= when the default is not a bool, int, float or str")
    if optional is None:
        optional = default is None
    domain = Domain(kind=kind, gt=gt, ge=ge, lt=lt, le=le, optional=optional,
                    choices=tuple(choices) if choices is not None else None)
    if default is not dataclasses.MISSING and not domain.accepts(default):
        raise ValueError(f"param(): the default {default!r} is not {domain.describe()}")
    return dataclasses.field(default=default, default_factory=default_factory, metadata={"domain": domain})


def positive(default: float | None, *, optional: bool | None = None) -> Any:
    """A number > 0."""
    return param(default, kind="float", gt=0.0, optional=optional)


def nonnegative(default: float | None, *, optional: bool | None = None) -> Any:
    """A number >= 0."""
    return param(default, kind="float", ge=0.0, optional=optional)


def fraction(default: float | None, *, optional: bool | None = None) -> Any:
    """A number in [0, 1] (a probability, a mixing weight, a share)."""
    return param(default, kind="float", ge=0.0, le=1.0, optional=optional)


def count(default: int | None, *, minimum: int = 1, optional: bool | None = None) -> Any:
    """An int >= ``minimum`` (default 1): iterations, steps, points."""
    return param(default, kind="int", ge=minimum, optional=optional)


def choice(default: str | None, choices: Sequence[str], *, optional: bool | None = None) -> Any:
    """One of ``choices``."""
    return param(default, kind="str", choices=choices, optional=optional)


def domains(cls: type) -> dict[str, Domain]:
    """Every init field of dataclass ``cls`` that has a domain, by name; a field redeclared
    with a plain default keeps the domain its nearest base class declared."""
    out: dict[str, Domain] = {}
    for klass in reversed(cls.__mro__):
        for name, f in getattr(klass, "__dataclass_fields__", {}).items():
            if f.init and "domain" in f.metadata:
                out[name] = f.metadata["domain"]
    if dataclasses.is_dataclass(cls):
        names = {f.name for f in dataclasses.fields(cls) if f.init}
        out = {k: v for k, v in out.items() if k in names}
    return out


def domain_of(cls: type, name: str) -> Domain | None:
    """The domain of field ``name`` of ``cls`` (None when it declares none)."""
    return domains(cls).get(name)


def check_fields(obj: Any) -> None:
    """Raise ``ValueError`` for the first field of dataclass instance ``obj`` outside its domain.

    The message names the class, the field, the value and the domain, e.g.
    ``PGD: budget must be a number > 0; got -1``.
    """
    for name, domain in domains(type(obj)).items():
        value = getattr(obj, name)
        if not domain.accepts(value):
            raise ValueError(f"{type(obj).__name__}: {name} must be {domain.describe()}; got {value!r}")


@dataclass(frozen=True)
class Ablation:
    """A variant a defense declares for `bench ablate` (``Defense.ablations``): parameter
    ``changes`` over the run's parameters, a one-line ``what``, and the paper's mean robust
    accuracy for it (percent; None where the paper gives none)."""

    changes: Mapping[str, Any] = field(default_factory=dict)
    what: str = ""
    paper: float | None = None
