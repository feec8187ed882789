"""medrobust.core.pruning: gated Taylor importance, surgery on 2-D/3-D MONAI nets, schedule, save/load."""

from __future__ import annotations

import io

import pytest
import torch
from monai.networks.nets import UNet
from torch import nn

from medrobust.core.pruning import (
    ChannelPruner,
    GatedTaylorImportance,
    adversarial_loss,
    build_graph,
    count_flops,
    iterative_prune,
    load_pruned,
    make_importance,
    net_history,
    save_pruned,
)


def _classifier(dims: int = 2) -> nn.Module:
    conv, bn = (nn.Conv2d, nn.BatchNorm2d) if dims == 2 else (nn.Conv3d, nn.BatchNorm3d)
    pool = nn.AdaptiveAvgPool2d(1) if dims == 2 else nn.AdaptiveAvgPool3d(1)
    return nn.Sequential(conv(1, 6, 3, padding=1), bn(6), nn.ReLU(), conv(6, 8, 3, padding=1), bn(8), nn.ReLU(),
                         pool, nn.Flatten(), nn.Linear(8, 2))


class _Residual(nn.Module):
    """Two conv-BN branches added: Torch-Pruning couples their output channels (one shared gate)."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.na = nn.Conv3d(1, 4, 3, padding=1), nn.BatchNorm3d(4)
        self.b, self.nb = nn.Conv3d(1, 4, 3, padding=1), nn.BatchNorm3d(4)
        self.head = nn.Conv3d(4, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.na(self.a(x)) + self.nb(self.b(x))))


class _Custom(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.scale = nn.Parameter(torch.ones(1, 4, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x) * self.scale


def _group_of(net: nn.Module, layer: nn.Module, x: torch.Tensor):
    import torch_pruning as tp

    dg = build_graph(net, x[:1])
    return dg.get_pruning_group(layer, tp.prune_linear_out_channels if isinstance(layer, nn.Linear)
                                else tp.prune_conv_out_channels, list(range(layer.weight.shape[0])))


@pytest.mark.parametrize("batches", [1, 3])
def test_gate_importance_equals_closed_form_on_linear(batches):
    # no norm layer: the gate sits on the linear output; dL/dgate_m = sum over row m of (dL/dW * W) + dL/db_m * b_m
    g = torch.Generator().manual_seed(0)
    net = nn.Sequential(nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 3))
    xs = [torch.randn(6, 5, generator=g) for _ in range(batches)]
    ys = [torch.randint(0, 3, (6,), generator=g) for _ in range(batches)]
    imp = GatedTaylorImportance()
    expected = torch.zeros(4)
    for x, y in zip(xs, ys):
        with imp.gated(net):
            imp.accumulate(nn.functional.cross_entropy(net(x), y))
        assert all(p.grad is None for p in net.parameters())  # accumulate never touches param.grad
        net.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(net(x), y).backward()
        lin = net[0]
        expected += ((lin.weight.grad * lin.weight).sum(1) + lin.bias.grad * lin.bias).detach() ** 2
        net.zero_grad(set_to_none=True)
    got = imp(_group_of(net, net[0], xs[0]))
    torch.testing.assert_close(got, expected / batches, rtol=1e-5, atol=1e-9)


def test_gate_on_bn_and_shared_gate_for_residual_add():
    torch.manual_seed(0)
    net, x = _Residual(), torch.rand(2, 1, 6, 6, 6)
    imp = GatedTaylorImportance()
    with imp.gated(net):
        imp.accumulate(net(x).pow(2).mean())
    # closed form: a shared gate g on both BN outputs: dL/dg = sum over both sites of z * dL/dz
    za, zb = net.na(net.a(x)), net.nb(net.b(x))
    za.retain_grad(), zb.retain_grad()
    net.head(torch.relu(za + zb)).pow(2).mean().backward()
    site = lambda z: (z * z.grad).sum(dim=(0, 2, 3, 4))  # noqa: E731
    expected = (site(za) + site(zb)).detach() ** 2
    torch.testing.assert_close(imp(_group_of(net, net.a, x)), expected, rtol=1e-4, atol=1e-10)


def test_second_order_term_changes_scores_and_is_seeded():
    torch.manual_seed(0)
    net, x = _classifier(2), torch.rand(4, 1, 8, 8)
    y = torch.tensor([0, 1, 0, 1])
    scores = []
    for so, seed in [(False, 0), (True, 0), (True, 0)]:
        imp = GatedTaylorImportance(second_order=so, generator=seed)
        with imp.gated(net):
            imp.accumulate(nn.functional.cross_entropy(net(x), y))
        scores.append(imp(_group_of(net, net[0], x)))
    assert not torch.allclose(scores[0], scores[1])
    torch.testing.assert_close(scores[1], scores[2])


def test_accumulate_and_call_errors():
    net, x = _classifier(2), torch.rand(2, 1, 8, 8)
    imp = GatedTaylorImportance()
    with pytest.raises(RuntimeError, match="no minibatch accumulated"):
        imp(_group_of(net, net[0], x))
    with pytest.raises(RuntimeError, match="no gate was used"):
        imp.accumulate(net(x).sum())
    with imp.gated(net), pytest.raises(ValueError, match="scalar"):
        imp.accumulate(net(x))


@pytest.mark.parametrize("dims", [2, 3])
def test_surgery_keeps_function_when_removing_zero_importance_channels(dims):
    torch.manual_seed(0)
    net = _classifier(dims).eval()
    x = torch.rand(3, 1, *([8] * dims))
    # channels 1 and 4 of the first block are dead: BN scale and shift 0 -> ReLU output 0 -> zero gate gradient
    with torch.no_grad():
        net[1].weight[[1, 4]] = 0.0
        net[1].bias[[1, 4]] = 0.0
    before = net(x)
    imp = GatedTaylorImportance()
    with imp.gated(net):
        imp.accumulate(net(x).logsumexp(1).mean())
    pruner = ChannelPruner(net, x[:1], importance=imp)
    first_group_scores = imp(_group_of(net, net[0], x))
    assert first_group_scores[[1, 4]].abs().max() == 0
    n_zero = sum(score == 0 for score, _, _ in pruner.ranking())  # the 2 dead channels (+ any dead ReLU channel)
    assert n_zero >= 2
    assert pruner.step(n_zero) == n_zero
    assert net[0].out_channels <= 4 and net[3].in_channels == net[0].out_channels
    assert net[0].out_channels + net[3].out_channels == 14 - n_zero
    torch.testing.assert_close(net(x), before, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dims,res_units", [(2, 0), (3, 0), (3, 1)])
def test_unet_concat_skips_pruned_consistently(dims, res_units):
    torch.manual_seed(0)
    net = UNet(dims, 1, 2, channels=(4, 8, 16), strides=(2, 2), num_res_units=res_units, norm="batch")
    x = torch.rand(2, 1, *([16] * dims))
    imp = GatedTaylorImportance()
    with imp.gated(net):
        imp.accumulate(net(x).pow(2).mean())
    pruner = ChannelPruner(net, x[:1], importance=imp)
    assert pruner.step(5) == 5
    assert net(x).shape == (2, 2, *([16] * dims))
    # every concat feeds a conv whose input width equals the sum of the two concatenated widths
    enc0 = net.model[0].conv if res_units == 0 else net.model[0].conv.unit0.conv
    up0 = net.model[1].submodule[2].conv if res_units == 0 else net.model[1].submodule[2][0].conv
    final = net.model[2].conv if res_units == 0 else net.model[2][0].conv
    assert final.in_channels == enc0.out_channels + up0.out_channels
    assert pruner.flops_ratio() < 1


def test_instance_norm_unet_gets_nonzero_taylor_scores():
    # MONAI's default UNet: non-affine InstanceNorm, shared-slope PReLU (Torch-Pruning 1.6.1 fails without the fix)
    torch.manual_seed(0)
    net, x = UNet(3, 1, 2, channels=(4, 8), strides=(2,)), torch.rand(2, 1, 8, 8, 8)
    imp = GatedTaylorImportance()
    with imp.gated(net):
        imp.accumulate(net(x).pow(2).mean())
    scores = ChannelPruner(net, x[:1], importance=imp).ranking()
    assert len(scores) > 0 and max(s for s, _, _ in scores) > 0


def test_localnet_3d_prunes_and_keeps_output_shape(caplog):
    from monai.networks.nets import LocalNet

    torch.manual_seed(0)
    net, x = LocalNet(3, 2, 4, extract_levels=(0, 1, 2), out_channels=3), torch.rand(2, 2, 8, 8, 8)
    res = iterative_prune(net, [(x, x[:, :1])], example_inputs=x[:1], criterion="taylor", target_flops=0.9,
                          channels_per_step=4, batches_per_step=1,
                          train_loss=lambda m, a, b: m(a).pow(2).mean())
    assert res.flops_ratio <= 0.9 and net(x).shape == (2, 3, 8, 8, 8)
    # the groups through its additive up-sampling (split + sum) are left unpruned, with a warning
    assert "left 2 channel group(s) unpruned" in caplog.text and net.bottom_block.conv.out_channels == 16


@pytest.mark.parametrize("criterion", ["taylor", "taylor2", "magnitude", "random"])
def test_iterative_prune_reaches_flops_target(criterion):
    torch.manual_seed(0)
    net, x = _classifier(2), torch.rand(4, 1, 8, 8)
    data = [(x, torch.tensor([0, 1, 0, 1]))]
    res = iterative_prune(net, data, example_inputs=x[:1], criterion=criterion, target_flops=0.5, channels_per_step=2,
                          batches_per_step=1, finetune_batches=1)
    assert res.flops_ratio <= 0.5 and res.flops == count_flops(net, x[:1])[0]
    assert res.train_batches == len(res.steps) + 1
    assert net(x).shape == (4, 2)



@pytest.mark.parametrize("criterion", ["magnitude", "random"])
def test_match_target_stops_inside_the_last_step(criterion):
    x, res, removed = torch.rand(2, 1, 16, 16, 16), {}, {}
    for match in (True, False):
        torch.manual_seed(0)
        net = UNet(3, 1, 2, channels=(8, 16, 32), strides=(2, 2), norm="batch")
        res[match] = iterative_prune(net, [(x, None)], example_inputs=x[:1], criterion=criterion, target_flops=0.7,
                                     channels_per_step=8, batches_per_step=0, match_target=match)
        removed[match] = [s["removed"] for s in res[match].steps]
        assert res[match].flops_ratio <= 0.7 and res[match].flops == count_flops(net, x[:1])[0]
    assert set(removed[False]) == {8} and removed[True][-1] < 8  # stopped once the target was reached
    assert sum(removed[True]) < sum(removed[False]) and res[True].flops_ratio > res[False].flops_ratio


def test_robustness_aware_criterion_differs_from_natural():
    torch.manual_seed(0)
    net, x, y = _classifier(2), torch.rand(4, 1, 8, 8), torch.tensor([0, 1, 0, 1])
    scores = []
    for loss in (lambda m, a, b: nn.functional.cross_entropy(m(a), b), adversarial_loss(eps=8 / 255, steps=3)):
        imp = GatedTaylorImportance()
        with imp.gated(net):
            imp.accumulate(loss(net, x, y))
        scores.append(imp(_group_of(net, net[3], x)))
    assert not torch.allclose(scores[0], scores[1])
    assert net.training


@pytest.mark.parametrize("dims", [2, 3])
def test_save_reload_identical_outputs_weights_only(dims, tmp_path):
    torch.manual_seed(0)
    make = lambda: UNet(dims, 1, 2, channels=(4, 8, 16), strides=(2, 2), norm="batch")  # noqa: E731
    net, x = make(), torch.rand(2, 1, *([16] * dims))
    iterative_prune(net, [(x, None)], example_inputs=x[:1], criterion="magnitude", target_flops=0.6,
                    channels_per_step=3, batches_per_step=1, train_loss=lambda m, a, b: m(a).pow(2).mean())
    save_pruned(net, tmp_path / "p.pt", history=net_history(net), example_shape=x[:1].shape)
    net2 = load_pruned(tmp_path / "p.pt", make())
    net.eval(), net2.eval()
    assert torch.equal(net(x), net2(x))
    assert sum(p.numel() for p in net2.parameters()) == sum(p.numel() for p in net.parameters())


@pytest.mark.parametrize("target", [0.0, 1.0, 1.5, -0.1])
def test_bad_flops_target_raises(target):
    net, x = _classifier(2), torch.rand(2, 1, 8, 8)
    with pytest.raises(ValueError, match="target_flops"):
        iterative_prune(net, [(x, torch.tensor([0, 1]))], example_inputs=x[:1], target_flops=target)


def test_bad_settings_raise():
    net, x = _classifier(2), torch.rand(2, 1, 8, 8)
    with pytest.raises(ValueError, match="channels_per_step"):
        iterative_prune(net, [(x, torch.tensor([0, 1]))], example_inputs=x[:1], target_flops=0.5, channels_per_step=0)
    with pytest.raises(ValueError, match="criterion must be one of"):
        make_importance("l1-norm")
    with pytest.raises(ValueError, match="n .channels to remove"):
        ChannelPruner(net, x[:1]).step(0)
    with pytest.raises(ValueError, match="min_channels"):
        ChannelPruner(net, x[:1], min_channels=0)
    with pytest.raises(ValueError, match="cannot be reached"):
        iterative_prune(_classifier(2), [(x, torch.tensor([0, 1]))], example_inputs=x[:1], target_flops=0.01,
                        criterion="magnitude", channels_per_step=4, batches_per_step=0)
    with pytest.raises(ValueError, match="no prunable channel group"):
        ChannelPruner(nn.Sequential(nn.Flatten(), nn.Linear(64, 2)), x[:1])


def test_unsupported_layer_raises():
    net, x = _Custom(), torch.rand(2, 1, 8, 8)
    with pytest.raises(TypeError, match=r"module '0' \(_Custom\) holds parameters \['scale'\]"):
        ChannelPruner(nn.Sequential(net, nn.Flatten(), nn.Linear(144, 2)), x[:1])


def test_load_rejects_wrong_file_and_wrong_network(tmp_path):
    torch.save({"state_dict": {}}, tmp_path / "x.pt")
    with pytest.raises(ValueError, match="not a medrobust pruned checkpoint"):
        load_pruned(tmp_path / "x.pt", _classifier(2))
    net, x = _classifier(2), torch.rand(2, 1, 8, 8)
    ChannelPruner(net, x[:1]).step(2)
    buf = io.BytesIO()
    save_pruned(net, buf, history=net_history(net), example_shape=(1, 1, 8, 8))
    buf.seek(0)
    with pytest.raises(ValueError, match="is not in"):
        load_pruned(buf, nn.Sequential(nn.Conv2d(1, 2, 3)))
