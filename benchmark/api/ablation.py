"""``bench ablate <defense>``: the defense once per declared ablation, as its own defense column
of one grid run, and the ablation table written beside the rows.

    ablate("mrpd", cfg) -> AblationOutcome   (rows, ablation.md; re-exported by benchmark.api)

The statistics and markdown are :mod:`benchmark.ablate`'s; this module runs the grid.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmark.core.config import ConfigError, RunConfig

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["AblationOutcome", "ablate", "ablation_variants"]


def ablation_variants(defense: str, select: Sequence[str] | None = None, plugins: Sequence[str] = ()) -> dict[str, Any]:
    """The ablations ``defense`` declares (``benchmark.ablate.variants_of``), the full method
    first; ``select`` keeps only those (and the full method). Raises ``UnknownNameError`` /
    ``ConfigError`` for an unknown defense or variant."""
    from benchmark.ablate import variants_of
    from benchmark.core.registry import DEFENSES, UnknownNameError, populate_registries

    populate_registries(plugins)
    if defense not in DEFENSES:
        raise UnknownNameError(DEFENSES.unknown_message(defense))
    try:
        return variants_of(defense, select)
    except ValueError as err:
        raise ConfigError(str(err)) from None


@dataclass
class AblationOutcome:
    """``rows``: this run's clouds and profile, ``none``, the control and every variant column;
    ``table``: ``ablation.md`` (``mechanisms.md`` beside it when every mechanism was measured)."""

    rows: pd.DataFrame
    defense: str
    variants: dict[str, Any]
    control: str | None
    table: Path
    results: Path
    failures: list[tuple[Any, str]] = field(default_factory=list)


def ablate(defense: str, cfg: RunConfig, *, variants: Sequence[str] | None = None, force: bool = False,
           fail_fast: bool = False, progress: bool = True, console: Any = None) -> AblationOutcome:
    """``bench ablate``: ``defense`` once per declared ablation (:func:`ablation_variants`) as its
    own defense column beside ``none`` (and the defense's matched control, e.g. ``prompt-at``
    for MRPD), with ``cfg``'s attacks, clouds and protocol. Rows go to
    ``<cfg.out_dir>/ablations/<defense>/<dataset>.csv``, the table to ``ablation.md`` beside them."""
    import torch

    from benchmark.ablate import ablation_dir, ablation_markdown, column_name, mechanism_markdown, same_as_full
    from benchmark.core.registry import DEFENSES
    from benchmark.runner import Runner, check_names
    from defenses import build_defense

    declared = ablation_variants(defense, variants, cfg.plugins)
    obj = DEFENSES.get(defense).obj
    control = getattr(obj, "ablation_control", None)
    out = ablation_dir(cfg.out_dir, defense)
    cfg = dataclasses.replace(cfg, defense=["none", *([control] if control else [])], out_dir=str(out))
    check_names(cfg)
    base = dict(cfg.defenses.get(defense) or {})
    full = next(iter(declared))
    built = {variant: build_defense(defense, **{**base, **dict(ablation.changes)})
             for variant, ablation in declared.items()}
    if console is None:
        from rich.console import Console

        console = Console(stderr=True)
    redundant = same_as_full({variant: one.params() for variant, one in built.items()})
    if redundant:
        console.print(f"[yellow]skipped {', '.join(redundant)}: the same parameters as the full method under "
                      "this run's settings[/]")
        declared = {k: v for k, v in declared.items() if k not in redundant}
    extra = {}
    for variant in declared:
        one = built[variant]
        one.registry_name = column_name(defense, variant, full)
        extra[one.registry_name] = one
    console.print(f"[bold]bench ablate {defense}[/] {len(declared)} variants, profile={cfg.profile} "
                  f"dataset={cfg.dataset.name} config={cfg.hash()}")
    torch.manual_seed(cfg.seed)
    runner = Runner(cfg, console=console, progress=progress, fail_fast=fail_fast, extra_defenses=extra, force=force)
    rows = runner.run()
    stored = runner.store.read(cfg.dataset.name)
    mine = stored[stored["defense"].isin(["none", *([control] if control else []), *extra])] if len(stored) else rows
    mine = mine[mine["profile"] == cfg.profile] if len(mine) else mine
    mine = mine[mine["n"] == len(runner.indices)] if len(mine) else mine  # this run's clouds only
    markdown = ablation_markdown(mine, defense, declared, title=f"{defense} ablations", control=control)
    (out / "ablation.md").write_text(markdown if markdown.endswith("\n") else markdown + "\n")
    mechanisms = getattr(obj, "mechanisms", None)
    if mechanisms and set(mechanisms.values()) <= set(declared):  # else some mechanisms go unmeasured
        (out / "mechanisms.md").write_text(mechanism_markdown(mine, defense, declared, mechanisms, control))
    return AblationOutcome(mine, defense, declared, control, out / "ablation.md",
                           runner.store.csv_path(cfg.dataset.name), list(runner.failures))
