"""The package's layers, checked on the source (ast over every .py; nothing is imported).

- ``medrobust/core`` (attacks, defenses, metrics, ...) imports no application module: not
  ``medrobust.data``, ``.models``, ``.sensitivity``, ``.registration``, ``.simulation``,
  ``.perturbations``, ``.reconstruction``, ``.measures``, ``.commands``, nor any ``cli`` module;
- ``medrobust`` never imports ``benchmarks``, ``bundles``, a bundle's ``scripts`` or ``sample_data``;
- ``benchmarks/*.py`` and ``bundles/*/scripts/*.py`` import the library, never each other through
  ``sys.path`` edits (they do not touch ``sys.path`` at all) and never a bundle's ``scripts``
  package from a benchmark;
- ``core/attacks`` and ``core/metrics`` do not import each other (no cycle).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "medrobust"
APPLICATION = ("data", "models", "sensitivity", "registration", "simulation", "perturbations", "reconstruction",
               "measures", "commands", "cli")
OUTSIDE = ("benchmarks", "bundles", "scripts", "sample_data")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> Iterator[tuple[int, str]]:
    """``(line, absolute module name)`` of every import in ``path`` (relative imports resolved)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = _module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
            yield node.lineno, base
            for alias in node.names:  # "from medrobust import cli" imports a module too
                yield node.lineno, f"{base}.{alias.name}"


def _sys_path_edits(path: Path) -> Iterator[int]:
    """Lines that change ``sys.path`` (insert/append/extend/remove, item or slice assignment, rebinding)."""
    tree = ast.parse(path.read_text(), filename=str(path))

    def is_sys_path(node: ast.AST) -> bool:
        return isinstance(node, ast.Attribute) and node.attr == "path" and isinstance(node.value, ast.Name) and node.value.id == "sys"

    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and is_sys_path(node.func.value):
            if node.func.attr in ("insert", "append", "extend", "remove", "pop", "clear"):
                yield node.lineno
        elif isinstance(node, (ast.Assign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for t in targets:
                if is_sys_path(t) or (isinstance(t, ast.Subscript) and is_sys_path(t.value)):
                    yield node.lineno


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.py") if "__pycache__" not in p.parts)


def _hits(files: list[Path], bad: tuple[str, ...]) -> list[str]:
    out: dict[str, str] = {}
    for f in files:
        for line, name in _imports(f):
            if any(name == b or name.startswith(b + ".") for b in bad):
                out.setdefault(f"{f.relative_to(REPO)}:{line}", name)  # one report per import statement
    return [f"{where} imports {name}" for where, name in out.items()]


def test_the_checker_sees_relative_and_from_imports(tmp_path) -> None:
    pkg = REPO / "medrobust" / "core" / "attacks" / "gradient.py"  # a real file: relative names resolve against it
    names = {n for _, n in _imports(pkg)}
    assert "torch" in names and any(n.startswith("medrobust.core") for n in names)
    probe = tmp_path / "probe.py"
    probe.write_text("import sys\nsys.path.insert(0, 'x')\nsys.path[:] = []\nsys.path += ['y']\nsys.path.append('z')\n")
    assert sorted(_sys_path_edits(probe)) == [2, 3, 4, 5]


def test_core_imports_no_application_module() -> None:
    bad = tuple(f"medrobust.{m}" for m in APPLICATION)
    hits = _hits(_files(PACKAGE / "core"), bad)
    hits += [f"{f.relative_to(REPO)} is a CLI module inside core" for f in _files(PACKAGE / "core") if f.stem == "cli"]
    assert not hits, "medrobust/core must not depend on the application layer:\n" + "\n".join(hits)


def test_library_imports_no_benchmark_bundle_or_script() -> None:
    hits = _hits(_files(PACKAGE), OUTSIDE)
    assert not hits, "medrobust must not import benchmarks, bundles or scripts:\n" + "\n".join(hits)


@pytest.mark.parametrize("root", ["benchmarks", "bundles"])
def test_benchmarks_and_bundle_scripts_do_not_edit_sys_path(root) -> None:
    files = _files(REPO / root)
    if root == "bundles":
        files = [f for f in files if "scripts" in f.relative_to(REPO).parts]
    assert files, f"no python files under {root}"
    hits = [f"{f.relative_to(REPO)}:{line}" for f in files for line in _sys_path_edits(f)]
    assert not hits, "import the library instead of editing sys.path:\n" + "\n".join(hits)


def test_benchmarks_do_not_import_bundle_scripts_and_scripts_not_benchmarks() -> None:
    bench = _hits(_files(REPO / "benchmarks"), ("bundles", "scripts"))
    scripts = _hits([f for f in _files(REPO / "bundles") if "scripts" in f.parts], ("benchmarks", "bundles"))
    assert not bench + scripts, "shared logic belongs in medrobust:\n" + "\n".join(bench + scripts)


def test_attacks_and_metrics_do_not_import_each_other() -> None:
    a = _hits(_files(PACKAGE / "core" / "attacks"), ("medrobust.core.metrics",))
    m = _hits(_files(PACKAGE / "core" / "metrics"), ("medrobust.core.attacks",))
    assert not (a and m), "core.attacks <-> core.metrics import cycle:\n" + "\n".join(a + m)
