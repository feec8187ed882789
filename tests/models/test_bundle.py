"""One bundle-network builder and one workflow runner, on tiny bundles written by the test."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from medrobust.models import bundle_config_files, load_bundle_network, run_bundle_workflow

META = {"version": "0.1.0", "monai_version": "1.4.0", "pytorch_version": "2.3.0", "numpy_version": "1.26.0"}


def _bundle(root: Path, kind: str) -> Path:
    """A bundle whose ``network_def`` comes from its own ``scripts.net`` (2-D or 3-D conv)."""
    (root / "configs").mkdir(parents=True)
    (root / "scripts").mkdir()
    (root / "scripts" / "__init__.py").write_text("")
    conv = {"2d": "Conv2d", "3d": "Conv3d"}[kind]
    (root / "scripts" / "net.py").write_text(
        "import torch\n\n\nclass Net(torch.nn.Sequential):\n    def __init__(self, width=4):\n"
        f"        super().__init__(torch.nn.{conv}(1, width, 3), torch.nn.Flatten())\n"
    )
    config = {"width": 4, "network_def": {"_target_": "scripts.net.Net", "width": "@width"},
              "out_file": "$@bundle_root + '/ran.txt'", "run": ["$open(@out_file, 'w').write(str(@width))"]}
    (root / "configs" / "inference.json").write_text(json.dumps(config))
    (root / "configs" / "metadata.json").write_text(json.dumps(META))
    return root


@pytest.fixture
def bundles(tmp_path):
    saved = list(sys.path)
    yield _bundle(tmp_path / "a", "2d"), _bundle(tmp_path / "b", "3d")
    for name in [m for m in sys.modules if m == "scripts" or m.startswith("scripts.")]:
        del sys.modules[name]
    assert sys.path == saved, "the helpers must restore sys.path"


@pytest.mark.parametrize("width", [3, 5])
def test_network_with_overrides_and_weights(bundles, tmp_path, width) -> None:
    a, _ = bundles
    net = load_bundle_network(a, overrides={"width": width}, weights=None)
    assert net[0].out_channels == width and not net.training
    with torch.no_grad():
        net[0].weight.fill_(0.5)
    torch.save(net.state_dict(), tmp_path / f"w{width}.pt")
    again = load_bundle_network(a, overrides={"width": width}, weights=tmp_path / f"w{width}.pt")
    assert torch.equal(again[0].weight, net[0].weight)
    with pytest.raises(ValueError, match="do not match"):
        load_bundle_network(a, weights=tmp_path / f"w{width}.pt")  # width 4 by default


def test_each_bundle_gets_its_own_scripts_package(bundles) -> None:
    a, b = bundles
    assert isinstance(load_bundle_network(a, weights=None)[0], torch.nn.Conv2d)
    assert isinstance(load_bundle_network(b, weights=None)[0], torch.nn.Conv3d)  # not a's cached scripts.net
    assert isinstance(load_bundle_network(a, weights=None)[0], torch.nn.Conv2d)


def test_missing_pieces_are_named(bundles) -> None:
    a, _ = bundles
    with pytest.raises(FileNotFoundError, match=r"'train.json' not found; configs/ holds \['inference.json', 'metadata.json'\]"):
        load_bundle_network(a, config_files=["train.json"])
    with pytest.raises(FileNotFoundError, match="model.pt"):
        load_bundle_network(a)
    with pytest.raises(ValueError, match="no 'net' in"):
        load_bundle_network(a, net_id="net", weights=None)
    with pytest.raises(ValueError, match="config_files"):
        bundle_config_files(a, [])
    with pytest.raises(FileNotFoundError, match="not a folder"):
        bundle_config_files(a / "nope", "inference")


def test_workflow_runs_with_overrides_or_only_initializes(bundles) -> None:
    a, _ = bundles
    wf = run_bundle_workflow(a, "inference", workflow_type=None, run=False, width=7)
    assert not (a / "ran.txt").exists() and wf.parser.get_parsed_content("width") == 7
    run_bundle_workflow(a, ["inference.json"], workflow_type=None, width=7)
    assert (a / "ran.txt").read_text() == "7"
    with pytest.raises(ValueError, match=r"lack required train properties \[.*device"):
        run_bundle_workflow(a, "inference", workflow_type="train")
