"""The import contract of the packages (docs/architecture.md), checked from the sources with ``ast``:

- no import cycle between modules, imports inside functions included;
- no private name (``_x``, not a dunder) of one module imported or reached as ``module._x`` by another;
- every module over :data:`MAX_LINES` lines is in :data:`LONG_MODULES`, with the reason, and every entry there
  still is that long;
- the layering of pyproject.toml's import-linter contracts (lba_core < rtl, lba_train < hwmodel; hwmodel's
  sub-packages cli < sweep < report < workloads < synthesis < execution) holds (``lint-imports``).

Each check is also run on a planted violation, so that none of them can pass by finding nothing.
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("lba_core", "rtl", "lba_train", "hwmodel")
MAX_LINES = 450
#: Modules longer than MAX_LINES, each with the reason it is one module (none at present).
LONG_MODULES: dict[str, str] = {}


@dataclass
class Module:
    name: str
    path: Path
    is_package: bool
    tree: ast.Module
    lines: int
    #: modules this one imports (anywhere in the file), with the line of each import
    imports: dict[str, int] = field(default_factory=dict)
    #: (line, text) of each private name of another module this one uses
    private: list[tuple[int, str]] = field(default_factory=list)


def module_name(path: Path, root: Path) -> tuple[str, bool]:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        return ".".join(parts[:-1]), True
    return ".".join(parts), False


def is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def read_modules(root: Path, packages: tuple[str, ...] = PACKAGES) -> dict[str, Module]:
    modules = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            if "__pycache__" in path.parts:
                continue
            name, is_package = module_name(path, root)
            text = path.read_text(encoding="utf-8")
            modules[name] = Module(name, path, is_package, ast.parse(text, str(path)), len(text.splitlines()))
    for module in modules.values():
        _resolve(module, modules)
    return modules


def _absolute(module: Module, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    package = module.name.split(".") if module.is_package else module.name.split(".")[:-1]
    base = package[: len(package) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _resolve(module: Module, modules: dict[str, Module]) -> None:
    """Fill ``imports`` and ``private``: names bound to project modules, then ``name._x`` uses of them."""
    bound: dict[str, str] = {}  # local name -> project module (an approximation: one scope for the whole file)

    def depend(target: str, line: int) -> None:
        if target in modules and target != module.name:
            module.imports.setdefault(target, line)

    for node in ast.walk(module.tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in modules or alias.name.split(".")[0] in PACKAGES:
                    depend(alias.name, node.lineno)
                    if alias.asname:
                        bound[alias.asname] = alias.name
                    else:
                        bound[alias.name.split(".")[0]] = alias.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom):
            source = _absolute(module, node)
            if source.split(".")[0] not in PACKAGES:
                continue
            for alias in node.names:
                target = f"{source}.{alias.name}"
                if target in modules:  # a sub-module
                    depend(target, node.lineno)
                    bound[alias.asname or alias.name] = target
                    if is_private(alias.name) and not target.startswith(module.name + "."):
                        module.private.append((node.lineno, f"from {source} import {alias.name}"))
                else:
                    depend(source, node.lineno)
                    if is_private(alias.name) and source != module.name:
                        module.private.append((node.lineno, f"from {source} import {alias.name}"))
    for node in ast.walk(module.tree):
        if isinstance(node, ast.Attribute) and is_private(node.attr):
            chain, value = [node.attr], node.value
            while isinstance(value, ast.Attribute):
                chain.append(value.attr)
                value = value.value
            if isinstance(value, ast.Name) and value.id in bound:
                owner = ".".join([bound[value.id], *reversed(chain[1:])])
                if owner in modules and owner != module.name:
                    module.private.append((node.lineno, f"{owner}.{node.attr}"))


def import_cycles(modules: dict[str, Module]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles = []
    counter = 0
    for start in sorted(modules):
        if start in index:
            continue
        work = [(start, iter(sorted(modules[start].imports)))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(modules[child].imports))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    cycles.append(sorted(component))
    return cycles


def cycle_text(modules: dict[str, Module], component: list[str]) -> str:
    members = set(component)
    edges = [f"{name} -> {target} (line {line})" for name in component
             for target, line in sorted(modules[name].imports.items()) if target in members]
    return "; ".join(edges)


def private_uses(modules: dict[str, Module]) -> list[str]:
    return [f"{module.path.relative_to(ROOT)}:{line}: {text}" for module in modules.values()
            for line, text in module.private]


def long_modules(modules: dict[str, Module]) -> dict[str, int]:
    return {name: module.lines for name, module in modules.items() if module.lines > MAX_LINES}


@pytest.fixture(scope="module")
def project() -> dict[str, Module]:
    return read_modules(ROOT)


def test_no_import_cycle(project):
    cycles = import_cycles(project)
    assert not cycles, "import cycles: " + " | ".join(cycle_text(project, component) for component in cycles)


def test_no_private_name_across_modules(project):
    uses = private_uses(project)
    assert not uses, "private names used across modules:\n" + "\n".join(uses)


def test_long_modules_are_listed_with_a_reason(project):
    long = long_modules(project)
    unlisted = {name: lines for name, lines in long.items() if name not in LONG_MODULES}
    assert not unlisted, f"modules over {MAX_LINES} lines not in LONG_MODULES (split them, or list them with a reason): {unlisted}"
    stale = sorted(set(LONG_MODULES) - set(long))
    assert not stale, f"LONG_MODULES lists modules that are no longer over {MAX_LINES} lines: {stale}"
    assert all(reason.strip() for reason in LONG_MODULES.values())


def _write(root: Path, relative: str, text: str) -> None:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def test_the_checks_find_planted_violations(tmp_path):
    """A cycle through a function-level import, a private import and a private attribute are each found."""
    _write(tmp_path, "hwmodel/__init__.py", "")
    _write(tmp_path, "hwmodel/a.py", "from . import b\n\ndef f():\n    return b._hidden\n")
    _write(tmp_path, "hwmodel/b.py", "def g():\n    from .a import f\n    return f\n_hidden = 1\n")
    _write(tmp_path, "hwmodel/c.py", "from hwmodel.b import _hidden\n")
    _write(tmp_path, "hwmodel/d.py", "import hwmodel.b\nx = hwmodel.b._hidden\n")
    _write(tmp_path, "hwmodel/e.py", "from hwmodel import b\n")
    modules = read_modules(tmp_path, ("hwmodel",))
    assert import_cycles(modules) == [["hwmodel.a", "hwmodel.b"]]
    found = sorted(text for module in modules.values() for _, text in module.private)
    assert found == ["from hwmodel.b import _hidden", "hwmodel.b._hidden", "hwmodel.b._hidden"]
    assert modules["hwmodel.e"].imports == {"hwmodel.b": 1} and not modules["hwmodel.e"].private


def test_import_linter_contracts():
    """The layers of pyproject.toml's [tool.importlinter] contracts (function-level imports included)."""
    lint = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert lint, "lint-imports not found beside the Python running the tests: pip install -e '.[test]'"
    done = subprocess.run([lint, "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
