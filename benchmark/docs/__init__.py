"""Generated sections of README.md and docs/*.md: numbers come from the files the code writes,
never by hand.

:mod:`benchmark.docs.render` holds the markers, the table of renderers and ``check_docs`` /
``write_docs`` (``bench docs [--check]``). The other submodules register one renderer per
section, grouped by the page that shows it (``attacks``, ``datasets``, ``defenses``, ``models``, ``mrpd``,
``performance``, ``paper``); importing this package registers them all. The committed results'
leaderboard sections are registered by ``benchmark.leaderboard``.
"""
from __future__ import annotations

from benchmark.docs import attacks, datasets, defenses, models, mrpd, paper, performance  # noqa: F401  (register their sections)
from benchmark.docs.render import (
    GENERATORS,
    SECTION,
    check_docs,
    documents,
    markdown_table,
    number,
    outside_sections,
    percent,
    register_section,
    render_sections,
    write_docs,
)

__all__ = ["GENERATORS", "SECTION", "check_docs", "documents", "markdown_table", "number", "outside_sections",
           "percent", "register_section", "render_sections", "write_docs"]
