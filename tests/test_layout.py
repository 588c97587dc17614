"""The project's floors, as folders: ``benchmark/core/`` is the ground ``models/``, ``attacks/``
and ``defenses/`` build on; ``benchmark/*.py`` is the harness on top. No import cycles."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("benchmark", "models", "attacks", "defenses")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def our_modules() -> dict[str, Path]:
    return {module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def imports_of(path: Path, modules: dict[str, Path]) -> set[str]:
    """Our modules ``path`` imports anywhere in it (top level or inside functions)."""
    here = module_name(path)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([node.module] if node.module else []))
            names = [base] + [f"{base}.{a.name}" for a in node.names]
        for name in names:
            while name and name not in modules:  # `from x.y import z`: z may be a name, not a module
                name = name.rpartition(".")[0]
            if name and name != here and name.split(".")[0] in PACKAGES:
                found.add(name)
    return found


def test_the_ground_floor_imports_nothing_above_it():
    modules = our_modules()
    ground = [m for m in modules if m.startswith("benchmark.core")]
    assert "benchmark.core.geometry" in ground and "benchmark.core.data.synthshapes" in ground
    above = {m: sorted(i for i in imports_of(modules[m], modules)
                       if not (i.startswith("benchmark.core") or i == "benchmark"))
             for m in ground}
    assert {m: i for m, i in above.items() if i} == {}


def test_models_attacks_and_defenses_never_import_the_harness():
    modules = our_modules()
    harness = {m for m in modules if m.startswith("benchmark.") and not m.startswith("benchmark.core")}
    lower = [m for m in modules if m.split(".")[0] in ("models", "attacks", "defenses")]
    assert {m: sorted(imports_of(modules[m], modules) & harness) for m in lower
            if imports_of(modules[m], modules) & harness} == {}


def test_no_module_imports_a_module_that_imports_it():
    modules = our_modules()
    graph = {m: imports_of(p, modules) - {"benchmark"} for m, p in modules.items()}
    # a package's __init__ importing its own submodules (to register them) is how registries fill
    cycles = sorted((a, b) for a, deps in graph.items() for b in deps
                    if a in graph.get(b, ()) and a < b and not (b.startswith(a + ".") or a.startswith(b + ".")))
    assert cycles == []
