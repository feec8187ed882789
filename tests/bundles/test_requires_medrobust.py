"""Every bundle declares medrobust, and fails clearly (naming medrobust) when it is not installed.

MONAI runs a config's ``"imports"`` through ``optional_import`` and silently skips the ones that
fail, and ``monai.bundle.load`` needs only ``network_def``: without a guard a bundle whose network
is plain MONAI loads "fine" and fails later with a NameError. Each base config therefore has a
``medrobust_version`` entry (MONAI's ``optional_import`` with a descriptor) that ``network_def``
and ``initialize`` depend on.
"""

from __future__ import annotations

import json
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest
from packaging.version import Version

REPO = Path(__file__).resolve().parents[2]
BUNDLES = sorted(p.name for p in (REPO / "bundles").iterdir() if (p / "configs" / "metadata.json").is_file())

HIDE = r"""
import importlib.abc, json, os, sys
class _Hide(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "medrobust" or name.startswith("medrobust."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, _Hide())
sys.path[:] = [p for p in sys.path if p not in ("", REPO)]
import monai.bundle
out = {}
for bundle in BUNDLES:
    for wt in ("inference", "train"):
        try:
            root = REPO + "/bundles/" + bundle
            if os.path.isfile(root + "/models/model.pt"):
                r = monai.bundle.load(bundle, bundle_dir=REPO + "/bundles", workflow_type=wt, device="cpu")
            else:  # no shipped weights (load would try to download them): build the network from the config
                parser = monai.bundle.ConfigParser()
                parser.read_config(f"{root}/configs/{wt}.json")
                r = parser.get_parsed_content("network_def")
            out[f"{bundle}/{wt}"] = "returned " + type(r).__name__
        except Exception as e:
            chain, err = [], e
            while err is not None:
                chain.append(f"{type(err).__name__}: {err}")
                err = err.__cause__ or err.__context__
            out[f"{bundle}/{wt}"] = " <- ".join(chain)
print("RESULT" + json.dumps(out))
"""


@pytest.mark.parametrize("bundle", BUNDLES)
def test_metadata_requires_an_installed_medrobust(bundle):
    meta = json.loads((REPO / "bundles" / bundle / "configs" / "metadata.json").read_text())
    wanted = meta["required_packages_version"]["medrobust"]
    assert Version(wanted) <= Version(version("medrobust")), f"{bundle} wants medrobust {wanted}"
    for name in ("train.json", "inference.json"):
        cfg = json.loads((REPO / "bundles" / bundle / "configs" / name).read_text())
        assert f"'{wanted}'" in cfg["medrobust_version"] and "pip install medrobust" in cfg["medrobust_version"]


@pytest.mark.slow
def test_load_without_medrobust_fails_naming_it(tmp_path):
    code = f"REPO = {str(REPO)!r}\nBUNDLES = {BUNDLES!r}\n" + HIDE
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=600)
    line = next((ln for ln in r.stdout.splitlines() if ln.startswith("RESULT")), None)
    assert line, r.stderr[-3000:]
    results = json.loads(line[len("RESULT") :])
    assert len(results) == 2 * len(BUNDLES)
    for key, outcome in results.items():
        assert not outcome.startswith("returned"), f"{key}: {outcome}"
        assert "needs the Python package medrobust" in outcome and "pip install medrobust" in outcome, f"{key}: {outcome[:500]}"
