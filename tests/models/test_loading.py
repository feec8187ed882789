"""Loading a classifier from a bundle, a TorchScript file and a state dict + config; probabilities."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
import yaml
from monai.networks.nets import Classifier

from medrobust.models import load_model, predicted_class, probability_from_logits

NET = {"_target_": "monai.networks.nets.Classifier", "in_shape": [1, 32, 32], "classes": 2, "channels": [4, 8], "strides": [2, 2]}
NET3D = {"_target_": "monai.networks.nets.Classifier", "in_shape": [1, 16, 16, 12], "classes": 1, "channels": [4], "strides": [2]}

SCRIPTS_NET = '''
import torch


class TinyNet(torch.nn.Module):
    def __init__(self, in_channels: int = 1, classes: int = 3):
        super().__init__()
        self.conv = torch.nn.Conv2d(in_channels, 4, 3, padding=1)
        self.fc = torch.nn.Linear(4, classes)

    def forward(self, x):
        return self.fc(self.conv(x).mean(dim=(2, 3)))
'''


def _net(cfg: dict) -> torch.nn.Module:
    kw = {k: v for k, v in cfg.items() if k != "_target_"}
    return Classifier(**kw)


def _bundle(root: Path, net_cfg: dict, spatial_shape, channels=1, net=None) -> torch.nn.Module:
    (root / "configs").mkdir(parents=True)
    (root / "models").mkdir()
    (root / "configs" / "inference.json").write_text(
        json.dumps({"bundle_root": ".", "device": "$torch.device('cpu')", "network_def": net_cfg, "network": "$@network_def.to(@device)"})
    )
    meta = {"network_data_format": {"inputs": {"image": {"num_channels": channels, "spatial_shape": spatial_shape}}}}
    (root / "configs" / "metadata.json").write_text(json.dumps(meta))
    net = net if net is not None else _net(net_cfg)
    torch.save(net.state_dict(), root / "models" / "model.pt")
    return net


def test_bundle_2d(tmp_path: Path) -> None:
    net = _bundle(tmp_path / "b", NET, [32, 32])
    m = load_model(tmp_path / "b")
    assert m.source == "bundle" and m.spatial_shape == (32, 32) and m.in_channels == 1
    assert not m.network.training and all(not p.requires_grad for p in m.network.parameters())
    x = torch.rand(3, 1, 32, 32)
    net.eval()
    torch.testing.assert_close(m.probability(x), torch.softmax(net(x), 1)[:, 1])
    assert len(m.sha256) == 64
    with pytest.raises(ValueError, match=r"\(B, 1, 32, 32\)"):
        m.probability(torch.rand(2, 1, 16, 16))


def test_bundle_3d_single_logit_and_override(tmp_path: Path) -> None:
    net = _bundle(tmp_path / "b3", NET3D, [16, 16, 12])
    m = load_model(tmp_path / "b3")
    assert m.spatial_shape == (16, 16, 12) and m.spatial_dims == 3
    x = torch.rand(2, 1, 16, 16, 12)
    net.eval()
    torch.testing.assert_close(m.probability(x), torch.sigmoid(net(x)[:, 0]))
    assert load_model(tmp_path / "b3", input_size=(16, 16, 12)).spatial_shape == (16, 16, 12)


def test_bundle_with_scripts_package(tmp_path: Path) -> None:
    root = tmp_path / "bs"
    (root / "scripts").mkdir(parents=True)
    (root / "scripts" / "__init__.py").write_text("")
    (root / "scripts" / "tinynet.py").write_text(SCRIPTS_NET)
    sys.path.insert(0, str(root))
    try:
        from scripts.tinynet import TinyNet  # noqa: PLC0415
    finally:
        sys.path.remove(str(root))
    net = TinyNet()
    path_before = list(sys.path)
    _bundle(root, {"_target_": "scripts.tinynet.TinyNet", "classes": 3}, [20, 24], net=net)
    m = load_model(root, positive_class=2)
    assert sys.path == path_before
    x = torch.rand(2, 1, 20, 24)
    torch.testing.assert_close(m.probability(x), torch.softmax(net.eval()(x), 1)[:, 2])
    sys.modules.pop("scripts.tinynet", None)
    sys.modules.pop("scripts", None)


def test_bundle_errors(tmp_path: Path) -> None:
    _bundle(tmp_path / "b", NET, [32, 32])
    (tmp_path / "b" / "models" / "model.pt").unlink()
    with pytest.raises(FileNotFoundError, match="model.pt"):
        load_model(tmp_path / "b")
    _bundle(tmp_path / "c", NET, ["8*n", "8*n"])
    with pytest.raises(ValueError, match="spatial_shape"):
        load_model(tmp_path / "c")
    assert load_model(tmp_path / "c", input_size=[32, 32]).spatial_shape == (32, 32)
    _bundle(tmp_path / "d", NET, [32, 32])
    (tmp_path / "d" / "configs" / "inference.json").write_text(json.dumps({"net": NET}))
    with pytest.raises(ValueError, match="network_def"):
        load_model(tmp_path / "d")
    (tmp_path / "e").mkdir()
    with pytest.raises(FileNotFoundError, match="inference.json"):
        load_model(tmp_path / "e")
    with pytest.raises(FileNotFoundError, match="not found"):
        load_model(tmp_path / "nope")


def test_torchscript(tmp_path: Path) -> None:
    net = _net(NET).eval()
    ts = tmp_path / "model.ts"
    torch.jit.trace(net, torch.rand(1, 1, 32, 32)).save(str(ts))
    m = load_model(ts, input_size=(32, 32))
    assert m.source == "torchscript" and m.in_channels == 1
    x = torch.rand(2, 1, 32, 32)
    torch.testing.assert_close(m.probability(x), torch.softmax(net(x), 1)[:, 1])
    with pytest.raises(ValueError, match="input size"):
        load_model(ts)
    sd = tmp_path / "weights.pt"
    torch.save(net.state_dict(), sd)
    with pytest.raises(ValueError, match="network-config"):
        load_model(sd, input_size=(32, 32))


@pytest.mark.parametrize("fmt", ["json", "yaml"])
def test_state_dict_and_config(tmp_path: Path, fmt: str) -> None:
    net = _net(NET).eval()
    cfg = tmp_path / f"net.{fmt}"
    content = {"network_def": NET, "spatial_shape": [32, 32], "num_channels": 1}
    cfg.write_text(json.dumps(content) if fmt == "json" else yaml.safe_dump(content))
    wrapped = tmp_path / "ckpt.pt"  # an ignite-style checkpoint with a DataParallel prefix
    torch.save({"model": {f"module.{k}": v for k, v in net.state_dict().items()}, "epoch": torch.tensor(3)}, wrapped)
    m = load_model(wrapped, network_config=cfg)
    assert m.source == "state_dict" and m.spatial_shape == (32, 32)
    x = torch.rand(2, 1, 32, 32)
    torch.testing.assert_close(m.probability(x), torch.softmax(net(x), 1)[:, 1])


def test_state_dict_errors(tmp_path: Path) -> None:
    cfg = tmp_path / "net.json"
    cfg.write_text(json.dumps(NET))
    other = Classifier(in_shape=(1, 32, 32), classes=2, channels=(4, 8, 16), strides=(2, 2, 2))
    torch.save(other.state_dict(), tmp_path / "w.pt")
    with pytest.raises(ValueError, match="do not match"):
        load_model(tmp_path / "w.pt", network_config=cfg, input_size=(32, 32))
    with pytest.raises(ValueError, match="input size"):
        load_model(tmp_path / "w.pt", network_config=cfg)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"layers": 3}))
    with pytest.raises(ValueError, match="_target_"):
        load_model(tmp_path / "w.pt", network_config=bad, input_size=(32, 32))
    torch.save({"optimizer": {"lr": 0.1}}, tmp_path / "opt.pt")
    with pytest.raises(ValueError, match="state dict"):
        load_model(tmp_path / "opt.pt", network_config=cfg, input_size=(32, 32))


def test_probability_conventions() -> None:
    one = torch.tensor([[0.0], [2.0]])
    torch.testing.assert_close(probability_from_logits(one), torch.sigmoid(one[:, 0]))
    two = torch.tensor([[1.0, 3.0], [0.0, -1.0]])
    torch.testing.assert_close(probability_from_logits(two), torch.softmax(two, 1)[:, 1])
    three = torch.tensor([[1.0, 2.0, 0.5]])
    torch.testing.assert_close(probability_from_logits(three, positive_class=2), torch.softmax(three, 1)[:, 2])
    probs = torch.tensor([[0.2, 0.8]])
    torch.testing.assert_close(probability_from_logits(probs, activation="none"), torch.tensor([0.8]))
    assert predicted_class(one).tolist() == [1, 1] and predicted_class(two).tolist() == [1, 0]
    assert predicted_class(torch.tensor([[0.4]]), activation="none").tolist() == [0]
    with pytest.raises(ValueError, match="positive_class"):
        probability_from_logits(two, positive_class=2)
    with pytest.raises(ValueError, match="activation"):
        probability_from_logits(two, activation="relu")
    with pytest.raises(ValueError, match=r"\(B, K\)"):
        probability_from_logits(torch.rand(2, 2, 4, 4))


def test_load_weights_submodule_of_a_wrapping_checkpoint(tmp_path: Path) -> None:
    from medrobust.models import load_weights

    inner = torch.nn.Conv3d(2, 3, 3)
    wrapper = torch.nn.ModuleDict({"segmenter": torch.nn.Conv3d(1, 1, 1), "registration": inner})
    torch.save(wrapper.state_dict(), tmp_path / "wrapped.pt")
    torch.save(inner.state_dict(), tmp_path / "plain.pt")
    for name in ("wrapped.pt", "plain.pt"):
        target = torch.nn.Conv3d(2, 3, 3)
        load_weights(target, tmp_path / name, submodule="registration")
        assert torch.equal(target.weight, inner.weight), name
    with pytest.raises(ValueError, match="do not match"):
        load_weights(torch.nn.Conv3d(2, 3, 3), tmp_path / "wrapped.pt")
