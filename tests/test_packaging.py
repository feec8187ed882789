"""Packaging: nothing medrobust installs may pull another torch; the wheel ships the LICENSE."""

from __future__ import annotations

import importlib.metadata as md
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]
EXTRAS = ("test", "docs", "dicom-codecs")
TORCH_FAMILY = {"torchvision", "torchaudio"}  # these would drag in (or pin) their own torch build


def _requirement_closure() -> dict[str, list[tuple[str, Requirement]]]:
    """Installed distribution name -> [(who requires it, requirement)] over medrobust's dependency tree."""
    seen: dict[str, list[tuple[str, Requirement]]] = {}
    todo: list[tuple[str, set[str]]] = [("medrobust", set(EXTRAS))]
    done: set[str] = set()
    while todo:
        name, extras = todo.pop()
        key = f"{name}[{','.join(sorted(extras))}]"
        if key in done:
            continue
        done.add(key)
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:
            continue
        for text in dist.requires or []:
            req = Requirement(text)
            env_ok = req.marker is None or any(req.marker.evaluate({"extra": e}) for e in (extras or {""}))
            if not env_ok:
                continue
            dep = canonicalize_name(req.name)
            seen.setdefault(dep, []).append((name, req))
            todo.append((dep, set(req.extras)))
    return seen


def test_no_dependency_pulls_another_torch():
    closure = _requirement_closure()
    assert "torch" in closure, "medrobust's requirements were not found: is it installed (pip install -e .)?"
    installed = md.version("torch")
    bad = [f"{who} requires {req}" for who, req in closure["torch"] if not req.specifier.contains(installed, prereleases=True)]
    assert not bad, f"these requirements exclude the installed torch {installed}: {bad}"
    family = sorted(f"{who} requires {req}" for name in TORCH_FAMILY for who, req in closure.get(name, []))
    assert not family, f"a dependency pulls a torch companion package (and with it maybe another torch): {family}"


def test_pyproject_states_license_and_extras():
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert project["license"] == "Apache-2.0" and project["license-files"] == ["LICENSE"]
    assert (REPO / "LICENSE").read_text().lstrip().startswith("Apache License")
    assert set(EXTRAS) <= set(project["optional-dependencies"])


def test_wheel_ships_the_license(tmp_path):
    src = tmp_path / "src"  # build from a copy: setuptools writes build/ next to the sources
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(REPO / name, src / name)
    shutil.copytree(REPO / "medrobust", src / "medrobust", ignore=shutil.ignore_patterns("__pycache__"))
    r = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), str(src)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    (wheel,) = tmp_path.glob("medrobust-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names), [n for n in names if "dist-info" in n]
    assert "medrobust/cli.py" in names and "medrobust/commands/metrics.py" in names
