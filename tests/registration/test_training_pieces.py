"""Label loss, smoothness and adversarial regularisers, label-channel sampling, the iteration function."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.engines import SupervisedTrainer
from monai.networks.nets import LocalNet

from medrobust.registration.adversarial import AdversarialRegulariser, DDFDiscriminator, affine_residual
from medrobust.registration.engine import LossCSVLogger, RegistrationIteration
from medrobust.registration.losses import CentroidDistanceLoss, label_loss, smoothness_loss
from medrobust.registration.transforms import RandLabelChanneld


def _cube(shape=(16, 16, 16), lo=4, hi=12, batch=2):
    lab = torch.zeros(batch, 1, *shape)
    lab[:, :, lo:hi, lo:hi, lo:hi] = 1
    return lab


def test_label_loss_orders_overlaps():
    loss = label_loss((0, 1, 2))
    lab = _cube()
    near, far = torch.roll(lab, 1, 2), torch.roll(lab, 4, 2)
    assert float(loss(lab, lab)) < 1e-4 < float(loss(lab, near)) < float(loss(lab, far))
    assert float(label_loss(None)(lab, far)) > 0


def test_centroid_term_keeps_a_gradient_where_dice_has_none():
    lab = torch.zeros(1, 1, 16, 16, 16)
    lab[..., 2:4, 2:4, 2:4] = 1
    moved = torch.roll(lab, 9, 2).requires_grad_(True)  # no overlap at all: plain Dice is flat here
    loss = label_loss(None, centroid_weight=0.5)
    value = loss(lab, moved)
    assert float(value) == pytest.approx(1.0 + 0.5 * 9.0, abs=1e-3)
    value.backward()
    assert float(moved.grad.abs().sum()) > 0
    assert isinstance(label_loss((0, 1)), type(label_loss((0, 1), centroid_weight=0.0)))  # 0 -> Dice alone
    with pytest.raises(ValueError, match="centroid_weight"):
        label_loss(centroid_weight=-1.0)
    with pytest.raises(ValueError, match="must match"):
        CentroidDistanceLoss()(lab, lab[..., :8])


def test_smoothness_penalties():
    smooth = torch.zeros(2, 3, 12, 12, 12)
    rough = torch.randn(2, 3, 12, 12, 12, generator=torch.Generator().manual_seed(0))
    for name in ("diffusion", "bending"):
        reg = smoothness_loss(name)
        assert float(reg(smooth)) == 0.0 < float(reg(rough))
    assert smoothness_loss("none") is None
    with pytest.raises(ValueError, match="smoothness regulariser"):
        smoothness_loss("adversarial")


@pytest.mark.parametrize("conditional", [False, True])
def test_discriminator_shapes_2d_and_3d(conditional):
    for dims, shape in ((3, (16, 16, 16)), (2, (32, 32))):
        d = DDFDiscriminator(dims, conditional=conditional, channels=4)
        image = torch.rand(2, 1, *shape) if conditional else None
        out = d(torch.zeros(2, dims, *shape), image)
        assert out.shape[:2] == (2, 1)
    with pytest.raises(ValueError, match="needs the fixed image"):
        DDFDiscriminator(3, conditional=True)(torch.zeros(1, 3, 16, 16, 16))


def _adversary(**kw):
    bank = {"a": torch.full((3, 3, 16, 16, 16), 1.0), "b": torch.full((2, 3, 16, 16, 16), -1.0)}
    return AdversarialRegulariser(bank, spatial_dims=3, channels=4, seed=0, **kw)


def test_adversary_samples_real_ddfs_per_case_and_reproducibly():
    adv = _adversary()
    real = adv.sample_real(["b", "a", "zzz"], 3)
    assert float(real[0].mean()) == -1.0 and float(real[1].mean()) == 1.0  # from the named case
    again = _adversary().sample_real(["zzz"] * 6, 6)
    assert torch.equal(_adversary().sample_real(["zzz"] * 6, 6), again)


@pytest.mark.parametrize("criterion,penalty", [("least_squares", 0.0), ("bce", 1.0)])
def test_adversary_updates_d_only_and_gives_g_a_gradient(criterion, penalty):
    adv = _adversary(criterion=criterion, gradient_penalty=penalty, d_steps=2)
    before = [p.detach().clone() for p in adv.discriminator.parameters()]
    ddf = torch.zeros(2, 3, 16, 16, 16, requires_grad=True)
    d_loss = adv.discriminator_step(ddf, None, ["a", "b"])
    assert np.isfinite(d_loss) and ddf.grad is None
    assert any(not torch.equal(b, p) for b, p in zip(before, adv.discriminator.parameters()))
    g = adv.generator_loss(ddf, None)
    g.backward()
    assert ddf.grad is not None and float(ddf.grad.abs().sum()) > 0
    assert all(p.grad is None or p.requires_grad for p in adv.discriminator.parameters())


def test_adversary_learns_to_separate_fe_from_zero_ddfs():
    adv = _adversary(lr=1e-3)
    fake = torch.zeros(2, 3, 16, 16, 16)
    for _ in range(30):
        adv.discriminator_step(fake, None, ["a", "a"])
    with torch.no_grad():
        real_score = adv.discriminator(adv.sample_real(["a", "a"], 2)).mean()
        fake_score = adv.discriminator(fake).mean()
    assert float(real_score) > float(fake_score) + 0.3


def test_affine_residual_removes_exactly_the_affine_part():
    gen = torch.Generator().manual_seed(0)
    grid = torch.stack(torch.meshgrid(*[torch.arange(s, dtype=torch.float64) for s in (10, 12, 8)], indexing="ij"))
    affine = (torch.einsum("ij,j...->i...", 0.1 * torch.randn(3, 3, generator=gen, dtype=torch.float64), grid)
              + torch.tensor([3.0, -2.0, 5.0], dtype=torch.float64).reshape(3, 1, 1, 1))[None]
    local = torch.zeros_like(affine)
    local[:, 0, 3:6, 4:8, 2:5] = 1.5  # a bump is not affine
    assert float(affine_residual(affine).abs().max()) < 1e-9
    res = affine_residual(affine + local)
    torch.testing.assert_close(res, affine_residual(local))  # linear, and blind to the affine part
    assert float(res.abs().max()) > 0.5


def test_adversary_with_remove_affine_ignores_translations():
    adv = _adversary(remove_affine=True, lr=1e-3)
    shifted = torch.full((2, 3, 16, 16, 16), 4.0, requires_grad=True)  # a pure translation
    adv.discriminator_step(shifted, None, ["a", "b"])
    loss = adv.generator_loss(shifted, None)
    loss.backward()
    torch.testing.assert_close(loss, adv.generator_loss(torch.zeros(2, 3, 16, 16, 16), None))  # blind to the offset
    grad = shifted.grad
    assert float((grad - affine_residual(grad)).abs().max()) < 1e-5  # and never pushes on the affine part


@pytest.mark.parametrize("kw,match", [({"criterion": "hinge"}, "criterion"), ({"d_steps": 0}, "d_steps"),
                                      ({"gradient_penalty": -1.0}, "gradient_penalty")])
def test_adversary_rejects_bad_options(kw, match):
    with pytest.raises(ValueError, match=match):
        _adversary(**kw)


def test_rand_label_channel_same_channel_for_both_keys_and_seeded():
    t = RandLabelChanneld(("moving_label", "fixed_label")).set_random_state(3)
    base = torch.arange(5, dtype=torch.float32).reshape(5, 1, 1, 1).expand(5, 4, 4, 4)
    picks = []
    for _ in range(20):
        d = t({"moving_label": base.clone(), "fixed_label": base.clone() + 10})
        assert d["moving_label"].shape == (1, 4, 4, 4)
        assert float(d["fixed_label"][0, 0, 0, 0]) - float(d["moving_label"][0, 0, 0, 0]) == 10
        picks.append(int(d["label_channel"]))
    t2 = RandLabelChanneld(("moving_label", "fixed_label")).set_random_state(3)
    assert picks == [int(t2({"moving_label": base, "fixed_label": base})["label_channel"]) for _ in range(20)]
    assert len(set(picks)) > 2
    gland = RandLabelChanneld(("moving_label",), gland_prob=1.0)
    assert int(gland({"moving_label": base})["label_channel"]) == 0
    with pytest.raises(ValueError, match="same number of channels"):
        t({"moving_label": base, "fixed_label": base[:3]})


def _pair_batch(batch=2, shape=(16, 16, 16)):
    fixed_lab = _cube(shape, batch=batch)
    moving_lab = torch.roll(fixed_lab, 2, 2)
    return {
        "moving_image": moving_lab.clone(), "fixed_image": fixed_lab.clone(),
        "moving_label": moving_lab, "fixed_label": fixed_lab, "case_id": ["a"] * batch,
    }


@pytest.mark.parametrize("regulariser", ["none", "diffusion", "bending", "adversarial"])
def test_iteration_trains_a_localnet_inside_supervised_trainer(regulariser, tmp_path):
    torch.manual_seed(0)
    net = LocalNet(spatial_dims=3, in_channels=2, out_channels=3, num_channel_initial=4, extract_levels=(0, 1, 2))
    adversary = _adversary() if regulariser == "adversarial" else None
    loss = label_loss((0, 1, 2))
    it = RegistrationIteration(loss, regulariser=regulariser, weight=0.1, adversary=adversary)
    batch = _pair_batch()
    trainer = SupervisedTrainer(device=torch.device("cpu"), max_epochs=25, train_data_loader=[batch], network=net,
                                optimizer=torch.optim.Adam(net.parameters(), 1e-2), loss_function=loss,
                                iteration_update=it)
    LossCSVLogger(tmp_path / "log.csv").attach(trainer)
    start = float(loss(batch["fixed_label"], batch["moving_label"]))
    trainer.run()
    out = trainer.state.output
    assert out["pred"].shape == (2, 3, 16, 16, 16)
    assert out["label_loss"] < start  # registration improves overlap of the shifted cube
    assert (out["regulariser_loss"] > 0) == (regulariser != "none")
    assert np.isfinite(out["d_loss"]) == (regulariser == "adversarial")
    assert len((tmp_path / "log.csv").read_text().splitlines()) == 26


def test_moving_keys_feed_the_moving_mask_to_the_network_in_training_and_evaluation():
    from monai.engines import SupervisedEvaluator

    from medrobust.registration.engine import RegistrationEvalIteration

    seen = []

    class Spy(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(()))

        def forward(self, x):
            seen.append(x.detach().clone())
            return torch.zeros(x.shape[0], 3, *x.shape[2:]) + self.w

    batch = _pair_batch()
    batch["moving_mask"] = torch.full_like(batch["moving_image"], 7.0)
    keys = ("moving_image", "moving_mask")
    net = Spy()
    SupervisedTrainer(device=torch.device("cpu"), max_epochs=1, train_data_loader=[batch], network=net,
                      optimizer=torch.optim.SGD(net.parameters(), 0.1), loss_function=label_loss(),
                      iteration_update=RegistrationIteration(label_loss(), moving_keys=keys)).run()
    ev = SupervisedEvaluator(device=torch.device("cpu"), val_data_loader=[batch], network=net,
                             iteration_update=RegistrationEvalIteration(moving_keys=keys))
    ev.run()
    for x in seen:  # moving image, moving mask, fixed image, in that order
        assert x.shape[1] == 3 and torch.equal(x[:, 1], batch["moving_mask"][:, 0]) and torch.equal(x[:, 2], batch["fixed_image"][:, 0])
    out = ev.state.output[0] if isinstance(ev.state.output, list) else ev.state.output  # decollated or not
    assert out["warped_image"].shape[-4] == 1  # only the image is warped for output, not the mask
    del batch["moving_mask"]
    with pytest.raises(ValueError, match="moving_mask"):
        RegistrationIteration(label_loss(), moving_keys=keys)(type("E", (), {"state": type("S", (), {"device": "cpu"})(),
                                                                             "network": net})(), batch)


def test_keypoint_loss_pulls_keypoints_to_the_gland_centroids():
    from medrobust.registration.networks import GlobalLocalNet

    torch.manual_seed(0)
    net = GlobalLocalNet((16, 16, 16), num_channel_initial=2, global_depth=2, extract_levels=(0, 1, 2), num_keypoints=2)
    batch = _pair_batch()
    batch["moving_mask"], batch["fixed_mask"] = batch["moving_label"].clone(), batch["fixed_label"].clone()
    it = RegistrationIteration(label_loss((0, 1)), keypoint_weight=1.0)
    trainer = SupervisedTrainer(device=torch.device("cpu"), max_epochs=30, train_data_loader=[batch], network=net,
                                optimizer=torch.optim.Adam(net.parameters(), 1e-2), loss_function=label_loss(),
                                iteration_update=it)
    first = []
    from ignite.engine import Events

    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: first.append(e.state.output["keypoint_loss"]))
    trainer.run()
    assert first[-1] < 0.5 * first[0] and first[-1] < 2.0  # voxels from the glands' centroids
    with pytest.raises(ValueError, match="keypoints"):
        RegistrationIteration(label_loss(), keypoint_weight=1.0)._keypoint_loss(
            LocalNet(spatial_dims=3, in_channels=2, out_channels=3, num_channel_initial=2, extract_levels=(0, 1)), batch, "cpu")
    with pytest.raises(ValueError, match="keypoint_weight"):
        RegistrationIteration(label_loss(), keypoint_weight=-1.0)


def test_iteration_checks_its_arguments():
    with pytest.raises(ValueError, match="regulariser must be"):
        RegistrationIteration(label_loss(), regulariser="tv")
    with pytest.raises(ValueError, match="needs an adversary"):
        RegistrationIteration(label_loss(), regulariser="adversarial")


def test_precise_batchnorm_makes_eval_match_train_statistics():
    from monai.engines import SupervisedTrainer

    from medrobust.registration.engine import PreciseBatchNorm

    torch.manual_seed(0)
    net = LocalNet(spatial_dims=3, in_channels=2, out_channels=3, num_channel_initial=4, extract_levels=(0, 1, 2))
    batch = _pair_batch()
    loss = label_loss((0, 1))
    trainer = SupervisedTrainer(device=torch.device("cpu"), max_epochs=5, train_data_loader=[batch], network=net,
                                optimizer=torch.optim.Adam(net.parameters(), 1e-2), loss_function=loss,
                                iteration_update=RegistrationIteration(loss))
    PreciseBatchNorm([batch], num_batches=3).attach(trainer)
    trainer.run()
    x = torch.cat([batch["moving_image"], batch["fixed_image"]], 1)
    with torch.no_grad():
        net.train()
        train_out = net(x)
        net.eval()
        eval_out = net(x)
    # running statistics now describe the final weights on this batch (only the unbiased variance differs)
    torch.testing.assert_close(eval_out, train_out, atol=0.05 * float(train_out.abs().max()) + 1e-4, rtol=0)
    with pytest.raises(ValueError, match="num_batches"):
        PreciseBatchNorm([batch], num_batches=-1)


def test_recompute_batchnorm_averages_over_the_given_inputs_and_restores_the_mode():
    from medrobust.registration.engine import recompute_batchnorm

    net = torch.nn.Sequential(torch.nn.Conv3d(2, 2, 1), torch.nn.BatchNorm3d(2)).eval()
    xs = [torch.rand(2, 2, 4, 4, 4, generator=torch.Generator().manual_seed(i)) * (i + 1) for i in range(3)]
    assert recompute_batchnorm(net, iter(xs)) == 3 and not net.training
    with torch.no_grad():
        means = torch.stack([net[0](x).mean(dim=(0, 2, 3, 4)) for x in xs]).mean(0)
    torch.testing.assert_close(net[1].running_mean, means)
    assert net[1].momentum == 0.1
    assert recompute_batchnorm(torch.nn.Conv3d(2, 2, 1), iter(xs)) == 0
