"""The MR gland segmenter of the image-only cascade: trains (seeded) on training images only, Dice scoring."""

from __future__ import annotations

import pytest
import torch

from medrobust.registration.segmenter import fit_gland_segmenter, gland_dice, gland_segmenter


def _blobs(n: int = 4, size: int = 16, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Bright boxes of random position in noise, and their masks: ``(n, 1, size, size, size)`` each."""
    g = torch.Generator().manual_seed(seed)
    masks = torch.zeros(n, 1, size, size, size)
    for i in range(n):
        a, b, c = torch.randint(2, size - 9, (3,), generator=g).tolist()
        masks[i, 0, a:a + 7, b:b + 7, c:c + 7] = 1
    return 0.6 * masks + 0.2 * torch.rand(masks.shape, generator=g), masks


def test_training_learns_the_gland_and_is_seeded():
    images, masks = _blobs()
    torch.manual_seed(0)  # test-side initialisation
    net = gland_segmenter(channels=(4, 8))
    init = {k: v.clone() for k, v in net.state_dict().items()}
    before = gland_dice(net, images, masks)
    losses = fit_gland_segmenter(net, images, masks, steps=40, batch_size=2, learning_rate=1e-2, seed=3)
    after = gland_dice(net, images, masks)
    assert after.shape == (4,) and float(after.mean()) > 0.6 and float(before.mean()) < 0.3
    assert sum(losses[-5:]) < sum(losses[:5])
    again = gland_segmenter(channels=(4, 8))
    again.load_state_dict(init)
    assert fit_gland_segmenter(again, images, masks, steps=3, batch_size=2, learning_rate=1e-2, seed=3) == losses[:3]


def test_bad_inputs_are_named():
    images, masks = _blobs(2)
    net = gland_segmenter(channels=(4, 8))
    with pytest.raises(ValueError, match="masks must have the images' shape"):
        fit_gland_segmenter(net, images, masks[:1], steps=1)
    with pytest.raises(ValueError, match="images must be"):
        gland_dice(net, images[:, 0], masks[:, 0])
    with pytest.raises(ValueError, match="steps"):
        fit_gland_segmenter(net, images, masks, steps=0)
    with pytest.raises(ValueError, match="at least 2 levels"):
        gland_segmenter(channels=(4,))
