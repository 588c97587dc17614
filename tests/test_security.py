"""Security: no unpickling of user files, YAML only through a safe loader, plug-ins only by name,
and no user string becomes a path outside the cache or results folders.

The first tests read the source of every Python file of the project (the AST, so comments and
docstrings that mention ``torch.load`` do not count) and name each offending call site.
"""
from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from torch import nn

from benchmark.core.cache import cached_arrays, cached_features
from benchmark.core.config import ConfigError, load_yaml
from benchmark.core.registry import PluginError, Registry, load_plugins
from benchmark.store import ResultStore

ROOT = Path(__file__).resolve().parents[1]
SKIP_DIRS = {".venv", "venv", ".git", "build", "dist", "__pycache__", ".eggs", "node_modules"}


def project_files() -> list[Path]:
    """Every ``.py`` file of the checkout (the virtual environment and build folders excluded)."""
    out = []
    for path in sorted(ROOT.rglob("*.py")):
        parts = set(path.relative_to(ROOT).parts[:-1])
        if not parts & SKIP_DIRS and not any(p.startswith(".") for p in parts):
            out.append(path)
    return out


def calls(tree: ast.AST) -> Iterator[tuple[ast.Call, str]]:
    """Every call with its dotted function name (``torch.load``, ``yaml.load``, ``np.load`` ...)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            parts, func = [], node.func
            while isinstance(func, ast.Attribute):
                parts.append(func.attr)
                func = func.value
            if isinstance(func, ast.Name):
                parts.append(func.id)
            yield node, ".".join(reversed(parts))


def keyword(call: ast.Call, name: str) -> ast.expr | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def is_true(node: ast.expr | None) -> bool:
    return isinstance(node, ast.Constant) and node.value is True


@pytest.fixture(scope="module")
def sources() -> dict[Path, ast.AST]:
    files = project_files()
    assert len(files) > 50 and ROOT / "benchmark" / "core" / "cache.py" in files  # the walk found the project
    return {path: ast.parse(path.read_text(encoding="utf-8"), filename=str(path)) for path in files}


def where(path: Path, node: ast.AST) -> str:
    return f"{path.relative_to(ROOT)}:{node.lineno}"


# ----------------------------------------------------------------------------- deserialisation


def test_every_torch_load_passes_weights_only_true(sources):
    bad, seen = [], 0
    for path, tree in sources.items():
        for call, name in calls(tree):
            if name == "torch.load" or name.split(".")[-1] == "load_checkpoint":
                seen += name == "torch.load"
                if not is_true(keyword(call, "weights_only")):
                    bad.append(f"{where(path, call)} {name}(...) without weights_only=True")
    assert not bad, "unpickling loads (use weights_only=True or safetensors):\n" + "\n".join(bad)
    assert seen >= 1  # the check looked at real call sites


def test_torch_load_is_never_imported_under_another_name(sources):
    bad = [where(path, node) for path, tree in sources.items() for node in ast.walk(tree)
           if isinstance(node, ast.ImportFrom) and node.module in ("torch", "torch.serialization")
           and any(alias.name == "load" for alias in node.names)]
    assert not bad, f"`from torch import load` hides torch.load from review: {bad}"


def test_nothing_unpickles(sources):
    banned = {"pickle.load", "pickle.loads", "cPickle.load", "dill.load", "dill.loads", "joblib.load",
              "pd.read_pickle", "pandas.read_pickle", "numpy.load", "np.load", "torch.jit.load", "marshal.loads",
              "shelve.open"}
    bad = []
    for path, tree in sources.items():
        for call, name in calls(tree):
            if name in ("np.load", "numpy.load"):
                if is_true(keyword(call, "allow_pickle")):
                    bad.append(f"{where(path, call)} {name}(allow_pickle=True)")
            elif name in banned:
                bad.append(f"{where(path, call)} {name}(...)")
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] + ([node.module] if isinstance(node, ast.ImportFrom) else [])
                if any(str(n).split(".")[0] in ("pickle", "cPickle", "dill", "shelve", "marshal") for n in names):
                    bad.append(f"{where(path, node)} imports a pickle module")
    assert not bad, "no unpickling of files (use safetensors, npz without pickles, JSON):\n" + "\n".join(bad)


# ------------------------------------------------------------------------------------------- YAML


def test_yaml_is_parsed_only_by_safe_loaders(sources):
    unsafe = {"yaml.unsafe_load", "yaml.full_load", "yaml.unsafe_load_all", "yaml.full_load_all", "yaml.load_all",
              "yaml.dump", "yaml.dump_all"}
    bad, loads = [], 0
    for path, tree in sources.items():
        module = None
        for call, name in calls(tree):
            if name in unsafe:
                bad.append(f"{where(path, call)} {name}(...); use yaml.safe_load / yaml.safe_dump")
            elif name == "yaml.load":
                loads += 1
                loader = keyword(call, "Loader") or (call.args[1] if len(call.args) > 1 else None)
                if not isinstance(loader, (ast.Name, ast.Attribute)):
                    bad.append(f"{where(path, call)} yaml.load without an explicit Loader")
                    continue
                if module is None:  # resolve the Loader the module really uses
                    rel = path.relative_to(ROOT).with_suffix("")
                    module = importlib.import_module(".".join(rel.parts))
                obj = module
                for part in ast.unparse(loader).split("."):
                    obj = getattr(obj, part, None) if part != "yaml" else yaml
                if not (isinstance(obj, type) and issubclass(obj, yaml.SafeLoader)):
                    bad.append(f"{where(path, call)} yaml.load with Loader={ast.unparse(loader)}, not a SafeLoader")
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr in ("UnsafeLoader", "FullLoader", "Loader") and \
                    isinstance(node.value, ast.Name) and node.value.id == "yaml":
                bad.append(f"{where(path, node)} mentions yaml.{node.attr}")
    assert not bad, "\n".join(bad)
    assert loads >= 1  # benchmark.core.config's loader was looked at


@pytest.mark.parametrize("text", [
    "!!python/object/apply:os.system ['echo pwned']",
    "!!python/name:os.system",
    "a: !!python/object:benchmark.core.config.RunConfig {}",
])
def test_the_config_loader_refuses_python_objects(text):
    with pytest.raises(ConfigError, match="cannot parse YAML"):
        load_yaml(text, "evil.yaml")


# ---------------------------------------------------------------------------------------- plug-ins


@pytest.fixture
def plugin_folder(tmp_path, monkeypatch) -> Path:
    """Two importable modules that record being imported; only one is ever named."""
    folder = tmp_path / "site"
    folder.mkdir()
    for name in ("pcrb_named_plugin", "pcrb_bystander_plugin"):
        (folder / f"{name}.py").write_text(
            f"import builtins\nbuiltins.__dict__.setdefault('_pcrb_imported', []).append({name!r})\n")
    monkeypatch.syspath_prepend(str(folder))
    import builtins

    monkeypatch.setattr(builtins, "_pcrb_imported", [], raising=False)
    yield folder
    for name in ("pcrb_named_plugin", "pcrb_bystander_plugin"):
        sys.modules.pop(name, None)


def test_only_the_named_plugin_module_is_imported(plugin_folder):
    import builtins

    assert load_plugins(["pcrb_named_plugin"], entry_points=False) == ["pcrb_named_plugin"]
    assert builtins._pcrb_imported == ["pcrb_named_plugin"]
    assert "pcrb_bystander_plugin" not in sys.modules


@pytest.mark.parametrize("name", ["../pcrb_named_plugin", "/tmp/pcrb_named_plugin.py",
                                  "os; import pcrb_bystander_plugin", "pcrb_bystander_plugin or True"])
def test_a_plugin_given_as_a_path_or_code_is_refused_without_running_anything(plugin_folder, name):
    import builtins

    with pytest.raises(PluginError, match="plug-in"):
        load_plugins([name], entry_points=False)
    assert builtins._pcrb_imported == []


def test_the_cli_imports_no_plugin_it_was_not_given(tmp_path, plugin_folder):
    """`bench list` in a folder full of plug-in-looking modules imports none of them."""
    for name in ("pcrb_named_plugin", "pcrb_bystander_plugin"):
        (tmp_path / f"{name}.py").write_text("raise SystemExit('imported without being named')\n")
    code = ("import sys; from benchmark.cli import main; rc = main(['list', 'defenses']); "
            "sys.exit(rc if not any(m.startswith('pcrb_') for m in sys.modules) else 9)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env={"PATH": "", "PYTHONPATH": str(ROOT), "PCRB_NO_TUNE": "1", "HOME": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr[-2000:]


# ------------------------------------------------------------------------------- path traversal

TRAVERSALS = ["../escape", "../../etc/passwd", "a/../../b", "/abs/path", "..", ".hidden", "a\\..\\b", ""]


def escaped(root: Path) -> list[Path]:
    """Files written outside ``root`` (its parent's other children)."""
    return [p for p in root.parent.rglob("*") if p.is_file() and root not in p.parents]


@pytest.mark.parametrize("name", TRAVERSALS)
def test_a_feature_cache_name_cannot_leave_the_cache(tmp_path, name):
    cache = tmp_path / "cache"
    with pytest.raises(ValueError, match="unsafe cache name"):
        cached_features(cache, name, {"k": 1}, lambda: np.zeros((2, 2), np.float32))
    assert escaped(cache) == []


@pytest.mark.parametrize("name", TRAVERSALS)
def test_a_defense_name_cannot_leave_the_cache(tmp_path, name):
    from benchmark.core.data import load_dataset
    from defenses.base import DefenseContext

    cache = tmp_path / "cache"
    train = load_dataset("synthshapes", "train", num_points=16, options={"train_size": 4, "classes": ["cup", "lamp"]})
    ctx = DefenseContext(victim=nn.Linear(3, 2), train=train, cache_dir=cache, progress=False, log=lambda m: None)
    with pytest.raises(ValueError, match="unsafe cache name"):
        ctx.cached_training(name, nn.Linear(3, 2), {"p": 1}, lambda: {})
    assert escaped(cache) == []


@pytest.mark.parametrize("name", ["../escape", "../../etc/x", "a/b"])
def test_an_attack_name_in_a_crafting_key_cannot_leave_the_cache(tmp_path, name):
    from attacks.crafting import craft, crafting_key
    from attacks.pgd import PGD
    from tiny_models import TinyPointNet, frozen, unit_clouds

    cache = tmp_path / "cache"
    attack = PGD(steps=1)
    x = unit_clouds(2, 16)
    key = crafting_key(attack, model_hash="m", dataset_fingerprint="d", split="test", name=name)
    with pytest.raises(ValueError, match="unsafe cache name"):
        craft(attack, frozen(TinyPointNet()), x, torch.tensor([0, 1]), key=key, cache_dir=cache, batch_size=2)
    assert escaped(cache) == []


@pytest.mark.parametrize("name", TRAVERSALS)
def test_a_model_name_cannot_be_registered_as_a_path(name):
    registry = Registry("model")
    with pytest.raises(ValueError, match="invalid model name"):
        registry.register(name)(lambda: None)


@pytest.mark.parametrize("name", ["../escape", "../../etc/passwd", "sub/dir", "/abs", "..", ".hidden", ""])
def test_a_dataset_name_in_a_result_row_cannot_leave_the_results_folder(tmp_path, name):
    out = tmp_path / "results"
    store = ResultStore(out)
    with pytest.raises(ValueError, match="unsafe dataset name"):
        store.write([{"dataset": name, "defense": "none", "attack": "clean", "status": "ok"}])
    with pytest.raises(ValueError, match="unsafe run id"):
        store.write_run(name or "../x", {"run_id": name})
    assert escaped(out) == []


def test_an_ordinary_cache_and_results_still_work_with_the_name_checks(tmp_path):
    arrays, hit = cached_arrays(tmp_path / "datasets" / "synthshapes-ab12.npz", lambda: {"x": np.ones(2)})
    assert not hit and arrays["x"].sum() == 2
    ResultStore(tmp_path / "r").write([{"dataset": "modelnet40", "defense": "none", "attack": "clean"}])
    assert (tmp_path / "r" / "modelnet40.csv").is_file()
