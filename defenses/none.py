"""``none``: the bare victim, the reference row of every table."""
from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from defenses import register_defense
from defenses.base import DefenseContext, ModelDefense

__all__ = ["NoDefense"]


@register_defense("none")
@dataclass
class NoDefense(ModelDefense):
    """The undefended victim (reference row: every table reports it)."""

    def prepare(self, ctx: DefenseContext) -> nn.Module:
        return ctx.victim
