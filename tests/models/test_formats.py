"""Every model format loads and gives the predictions of the original torch module; outputs and preprocessing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.networks.nets import Classifier

from medrobust.models import load_model
from medrobust.models.formats import OutputSelector, parse_entry_point
from medrobust.models.preprocessing import InputPreprocessing

CONFIG = {"_target_": "monai.networks.nets.Classifier", "in_shape": [1, 16, 16], "classes": 2, "channels": [4, 8], "strides": [2, 2]}

ENTRY_SOURCE = '''
import torch
from monai.networks.nets import Classifier


class TwoHeads(torch.nn.Module):
    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        z = self.net(x)
        return {"aux": z.sum(1, keepdim=True), "logits": z}


def build():
    torch.manual_seed(0)
    net = Classifier(in_shape=(1, 16, 16), classes=2, channels=(4, 8), strides=(2, 2)).eval()
    net.load_state_dict(torch.load(WEIGHTS, weights_only=True))
    return net


def build_two_heads():
    return TwoHeads(build())
'''


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    root = tmp_path_factory.mktemp("formats")
    torch.manual_seed(0)
    net = Classifier(in_shape=(1, 16, 16), classes=2, channels=(4, 8), strides=(2, 2)).eval()
    torch.save(net.state_dict(), root / "model.pt")
    (root / "net.json").write_text(json.dumps(CONFIG))
    torch.jit.trace(net, torch.rand(2, 1, 16, 16)).save(str(root / "model.ts"))
    torch.onnx.export(net, (torch.rand(2, 1, 16, 16),), str(root / "model.onnx"), input_names=["image"],
                      output_names=["logits"], dynamic_axes={"image": {0: "b"}, "logits": {0: "b"}}, dynamo=False)
    bundle = root / "bundle"
    (bundle / "configs").mkdir(parents=True)
    (bundle / "models").mkdir()
    (bundle / "configs" / "inference.json").write_text(json.dumps({"network_def": CONFIG}))
    (bundle / "configs" / "metadata.json").write_text(json.dumps(
        {"network_data_format": {"inputs": {"image": {"num_channels": 1, "spatial_shape": [16, 16]}}},
         "medrobust": {"preprocessing": {"intensity": "percentile", "percentiles": [1, 99]}}}))
    torch.save(net.state_dict(), bundle / "models" / "model.pt")
    pkg = root / "user_nets"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "factory.py").write_text(ENTRY_SOURCE.replace("WEIGHTS", repr(str(root / "model.pt"))))
    x = torch.rand(3, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        p = torch.softmax(net(x), 1)[:, 1]
    return root, x, p


@pytest.mark.parametrize(
    "source, kwargs, kind",
    [
        ("bundle", {}, "bundle"),
        ("model.ts", {"input_size": (16, 16)}, "torchscript"),
        ("model.pt", {"network_config": "net.json", "input_size": (16, 16)}, "state_dict"),
        ("model.onnx", {"input_size": (16, 16)}, "onnx"),
        ("user_nets.factory:build", {"input_size": (16, 16)}, "entry_point"),
        ("user_nets.factory:build_two_heads", {"input_size": (16, 16), "output": "logits"}, "entry_point"),
    ],
)
def test_each_format_gives_the_original_predictions(reference, monkeypatch, source, kwargs, kind) -> None:
    root, x, p = reference
    monkeypatch.syspath_prepend(str(root))
    src = source if ":" in source else str(root / source)
    if "network_config" in kwargs:
        kwargs = {**kwargs, "network_config": root / kwargs["network_config"]}
    model = load_model(src, **kwargs)
    assert model.source == kind and model.spatial_shape == (16, 16) and model.in_channels == 1
    with torch.no_grad():
        got = model.probability(x)
    torch.testing.assert_close(got, p, atol=1e-5, rtol=0)
    margin = model.decision_margin(model.logits(x))
    assert ((margin > 0) == (got > 0.5)).all()


def test_bundle_declares_preprocessing_and_the_command_line_overrides_it(reference) -> None:
    root, _, _ = reference
    model = load_model(root / "bundle")
    assert model.preprocessing == InputPreprocessing(intensity="percentile", percentiles=(1, 99))
    model = load_model(root / "bundle", preprocessing={"intensity": "window", "window": (100, 50)})
    assert model.preprocessing.describe().startswith("intensity window centre 100 width 50")


def test_preprocessing_modes_and_standardisation() -> None:
    img = np.concatenate([np.linspace(0, 100, 1000), [10000.0]]).reshape(1, 1, -1).astype(np.float32)  # one hot pixel
    mm = InputPreprocessing().to_unit(img.copy())  # to_unit works in place when it can (full-field images)
    pc = InputPreprocessing(intensity="percentile", percentiles=(0, 99)).to_unit(img.copy())
    assert float(mm[0, 0, 500]) < 0.01 and float(pc[0, 0, 500]) == pytest.approx(0.5, abs=0.01)  # robust to the marker
    fx = InputPreprocessing(intensity="fixed", value_range=(0, 200)).to_unit(img.copy())
    assert float(fx[0, 0, 999]) == pytest.approx(0.5) and float(fx.max()) == 1.0
    s = InputPreprocessing(mean=0.5, std=0.25)
    assert s.standardise(torch.ones(1)).item() == 2.0 and "standardised" in s.describe()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"intensity": "gamma"}, "intensity should be one of"),
        ({"intensity": "window"}, "needs window"),
        ({"intensity": "fixed", "value_range": (1, 1)}, "needs value_range"),
        ({"percentiles": (50, 10)}, "percentiles"),
        ({"mean": 0.5}, "both mean and std"),
    ],
)
def test_bad_preprocessing(kwargs, match) -> None:
    with pytest.raises(ValueError, match=match):
        InputPreprocessing(**kwargs)
    with pytest.raises(ValueError, match="unknown keys"):
        InputPreprocessing.from_sources({"windw": (1, 2)})


def test_output_selection_errors_and_entry_point_errors(reference, monkeypatch) -> None:
    root, x, _ = reference
    two = OutputSelector(torch.nn.Identity(), None)
    with pytest.raises(ValueError, match="choose one"):
        two.select({"a": x, "b": x})
    with pytest.raises(ValueError, match="choose one"):
        OutputSelector(torch.nn.Identity(), 5).select((x, x))
    with pytest.raises(ValueError, match="package.module:factory"):
        parse_entry_point("not an entry point")
    monkeypatch.syspath_prepend(str(root))
    with pytest.raises(ValueError, match="has no callable 'nope'"):
        load_model("user_nets.factory:nope", input_size=(16, 16))
    with pytest.raises(ValueError, match="cannot import"):
        load_model("no_such_pkg_xyz.mod:build", input_size=(16, 16))
    with pytest.raises(ValueError, match="input size"):
        load_model("user_nets.factory:build")
    with pytest.raises(ValueError, match="no output 'zzz'"):
        load_model(root / "model.onnx", input_size=(16, 16), output="zzz")


def test_bundle_given_as_a_relative_path(reference, monkeypatch) -> None:
    root, x, p = reference
    monkeypatch.chdir(root)
    with torch.no_grad():
        torch.testing.assert_close(load_model("bundle").probability(x), p, atol=1e-5, rtol=0)
