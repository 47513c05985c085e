"""The house rules of docs/architecture.md, checked on the source: layers point one way, no
import cycle, no module reaches into another's underscore names, no stage module imports
another stage, no file over 400 lines."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("labelstore", "loaders", "distill", "benchmarks")
LAYER = {p: i for i, p in enumerate(PACKAGES)}  # a module may import its own layer and those before it
STAGES = ("squeeze", "recover", "relabel", "train", "evaluate")  # demo drives them (docs/architecture.md)
MAX_LINES = 400


def _modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    return out


MODULES = _modules()


def _imports(name: str, path: Path) -> list[tuple[str, str | None, int]]:
    """(imported module, imported name or None, line) for every import in the file, lazy ones included
    (those under `if TYPE_CHECKING:` left out)."""
    is_pkg = path.name == "__init__.py"
    here = name.split(".") if is_pkg else name.split(".")[:-1]
    tree = ast.parse(path.read_text(), str(path))
    # imports only type checkers run are no dependency at run time (the usual way to break a cycle)
    typing_only = {id(n) for blk in ast.walk(tree) if isinstance(blk, ast.If) and "TYPE_CHECKING" in ast.unparse(blk.test)
                   for stmt in blk.body for n in ast.walk(stmt)}
    out = []
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            out += [(a.name, None, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = here[: len(here) - node.level + 1] if node.level else []
            mod = ".".join(base + ([node.module] if node.module else []))
            out += [(mod, a.name, node.lineno) for a in node.names]
    return out


def _target(mod: str, attr: str | None) -> str | None:
    """The project module an import names (`from pkg import mod` names pkg.mod), or None outside the project."""
    if attr is not None and f"{mod}.{attr}" in MODULES:
        return f"{mod}.{attr}"
    while mod and mod not in MODULES:
        mod = mod.rpartition(".")[0]
    return mod or None


def test_no_file_over_400_lines():
    long = {n: len(p.read_text().splitlines()) for n, p in MODULES.items()}
    assert {n: k for n, k in long.items() if k > MAX_LINES} == {}


def test_layers_point_one_way_and_stages_import_no_other_stage():
    bad = []
    for name, path in MODULES.items():
        layer, pkg = LAYER[name.split(".")[0]], name.split(".")[0]
        for mod, attr, line in _imports(name, path):
            target = _target(mod, attr)
            if target is None:
                continue
            if LAYER[target.split(".")[0]] > layer:
                bad.append(f"{name}:{line} imports {target} (a layer above {pkg})")
            if name.startswith("distill.") and name.split(".")[1] in STAGES and name.count(".") == 1:
                other = target.split(".")
                if other[0] == "distill" and len(other) == 2 and other[1] in STAGES and other[1] != name.split(".")[1]:
                    bad.append(f"{name}:{line} imports the stage {target}")
    assert bad == []


def test_no_module_imports_another_modules_underscore_names():
    bad = []
    for name, path in MODULES.items():
        for mod, attr, line in _imports(name, path):
            if attr and attr.startswith("_") and not attr.startswith("__") and _target(mod, attr) is not None:
                if f"{mod}.{attr}" not in MODULES:  # a package's private module may be imported; its names may not
                    bad.append(f"{name}:{line} imports {mod}.{attr}")
    assert bad == []


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every cycle a depth-first walk of `graph` meets, as the path around it."""
    seen, stack, cycles = set(), [], []

    def visit(n):
        if n in stack:
            cycles.append(stack[stack.index(n):] + [n])
            return
        if n in seen:
            return
        seen.add(n)
        stack.append(n)
        for m in sorted(graph.get(n, ())):
            visit(m)
        stack.pop()

    for n in sorted(graph):
        visit(n)
    return cycles


def test_no_import_cycle():
    graph = {n: set() for n in MODULES}
    for name, path in MODULES.items():
        for mod, attr, _ in _imports(name, path):
            target = _target(mod, attr)
            # a package's __init__ re-exports its modules: a module importing its own package's
            # front door is the one edge allowed to point back at it
            if target and target != name and not name.startswith(target + "."):
                graph[name].add(target)
    assert _cycles(graph) == []


def test_the_checks_see_what_they_forbid(tmp_path):
    """Not vacuous: a cycle is found, and the imports the rules are about are parsed."""
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []
    path = tmp_path / "mod.py"
    path.write_text("from typing import TYPE_CHECKING\nfrom ._phases import fmt_number, _secret\n"
                    "if TYPE_CHECKING:\n    from .replay import ReplayLoader\n"
                    "def f():\n    from .pairs import StepPairs\n")
    got = {(m, a) for m, a, _ in _imports("loaders.mod", path)}
    assert {("loaders._phases", "fmt_number"), ("loaders._phases", "_secret"), ("loaders.pairs", "StepPairs")} <= got
    assert ("loaders.replay", "ReplayLoader") not in got
    assert _target("loaders._phases", "_secret") == "loaders._phases"  # a name, not a module: the rule applies
