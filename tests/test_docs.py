"""Documentation cannot rot: docstring examples run, the API docs build, links resolve, bundle figures agree.

- every ``>>>`` example in ``medrobust/`` runs as a doctest (a module whose optional dependency is
  not installed is skipped, naming it);
- ``mkdocs build --strict`` builds the API reference from the docstrings (skipped only when
  mkdocs is not installed: ``make test`` installs the ``docs`` extra);
- every relative link in a tracked ``*.md`` file points to an existing file;
- a bundle's ``metadata.json`` states the figures its README states.
"""

from __future__ import annotations

import doctest
import importlib
import importlib.util
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "medrobust"
MODULES = sorted(
    ".".join(p.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")
    for p in PACKAGE.rglob("*.py")
    if p.name != "__main__.py"
)
DOCTEST_FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def _has_examples(module: str) -> bool:
    path = REPO / (module.replace(".", "/") + ".py")
    if not path.is_file():
        path = REPO / module.replace(".", "/") / "__init__.py"
    return ">>>" in path.read_text()


@pytest.mark.parametrize("module", [m for m in MODULES if _has_examples(m)])
def test_docstring_examples(module, tmp_path, monkeypatch):
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name and not e.name.startswith("medrobust"):
            pytest.skip(f"{module} needs the optional package {e.name}")
        raise
    monkeypatch.chdir(tmp_path)  # examples that write files write here
    finder = doctest.DocTestFinder(exclude_empty=True)
    runner = doctest.DocTestRunner(optionflags=DOCTEST_FLAGS)
    tests = [t for t in finder.find(mod, module) if t.examples and (t.filename or "").startswith(str(PACKAGE))]
    for t in tests:
        runner.run(t, out=lambda s: failures.append(s))
    assert runner.failures == 0, "".join(failures)


failures: list[str] = []


@pytest.fixture(autouse=True)
def _reset_failures():
    failures.clear()


def _tracked_markdown() -> list[Path]:
    r = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "*.md"], cwd=REPO, capture_output=True, text=True)
    if r.returncode != 0:  # not a git checkout (e.g. an sdist): every .md outside hidden/virtualenv folders
        return [p for p in REPO.rglob("*.md") if not any(part.startswith(".") or part == "site" for part in p.parts)]
    return [REPO / line for line in r.stdout.splitlines() if (REPO / line).is_file()]


_LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)|!\[[^\]]*\]\(([^)\s]+)\)")


def _relative_links(md: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", md.read_text(), flags=re.S)  # code blocks are not links
    text = re.sub(r"`[^`\n]*`", "", text)
    links = [a or b for a, b in _LINK.findall(text)]
    return [x for x in links if not re.match(r"^[a-z][a-z0-9+.-]*:|^#|^/", x, flags=re.I)]


def test_relative_links_point_to_existing_files():
    missing = []
    files = _tracked_markdown()
    assert any(f.name == "README.md" for f in files)
    for md in files:
        for link in _relative_links(md):
            target = (md.parent / link.split("#", 1)[0]).resolve()
            if not target.exists():
                missing.append(f"{md.relative_to(REPO)}: {link}")
    assert not missing, "links to missing files:\n" + "\n".join(missing)


def test_link_checker_finds_a_broken_link(tmp_path):
    md = tmp_path / "x.md"
    md.write_text("see [a](missing.md), [b](https://example.org), `[c](code.md)`, ![img](pic.png) and [d](#anchor)\n")
    assert _relative_links(md) == ["missing.md", "pic.png"]


def test_mammogram_metadata_states_the_readme_figures():
    bundle = REPO / "bundles" / "mammogram_perturbation_sensitivity"
    metrics = json.loads((bundle / "configs" / "metadata.json").read_text())["eval_metrics"]
    readme = (bundle / "docs" / "README.md").read_text()
    assert metrics, "metadata.json states no figure"
    for name, value in metrics.items():
        assert f"{value:g}" in readme, f"metadata.json eval_metrics {name} = {value} is not stated in docs/README.md"


def test_api_docs_build_strict(tmp_path):
    if shutil.which("mkdocs", path=str(Path(sys.executable).parent)) is None:
        pytest.importorskip("mkdocs", reason="mkdocs not installed (pip install -e '.[docs]')")
    pytest.importorskip("mkdocstrings", reason="mkdocstrings not installed (pip install -e '.[docs]')")
    r = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(REPO / "mkdocs.yml"), "-d", str(tmp_path / "site")],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip  (no -q: it drops the warnings that --strict counts, and the build would always pass)
    warnings = [line for line in r.stderr.splitlines() if line.startswith(("WARNING", "ERROR"))]
    assert r.returncode == 0, "\n".join(warnings[:40]) or r.stderr[-3000:]
    html = (tmp_path / "site" / "api" / "attacks" / "index.html").read_text()
    assert "pgd" in html.lower()
    assert '<span class="gp">&gt;&gt;&gt; </span>' in html, "docstring examples are not rendered as code"


def test_griffe_extension_rewrites_examples_and_grouped_args():
    spec = importlib.util.spec_from_file_location("griffe_docstrings", REPO / "docs" / "api" / "griffe_docstrings.py")
    if importlib.util.find_spec("griffe") is None:
        pytest.skip("griffe not installed (pip install -e '.[docs]')")
    ext = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ext)
    text = "Sum.\n\nArgs:\n    x: input.\n    lo, hi: bounds,\n        inclusive.\n\nRaises:\n    ValueError, TypeError: bad.\n\nExample:\n    >>> 1\n    1"
    assert ext.rewrite(text) == (
        "Sum.\n\nArgs:\n    x: input.\n    lo: bounds,\n        inclusive.\n    hi: bounds,\n        inclusive.\n\n"
        "Raises:\n    ValueError, TypeError: bad.\n\nExamples:\n    >>> 1\n    1"
    )
