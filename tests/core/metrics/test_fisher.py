"""Fisher-information sensitivity: golden checks against brute force (explicit Jacobian + pseudo-inverse)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from medrobust.core.metrics.fisher import (
    fisher_information_from_jacobian,
    image_fisher_information,
    log_prob_jacobian,
    pixel_fisher_information,
)


def _tiny(classes: int = 4, d: int = 9, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(d, 5), nn.Tanh(), nn.Linear(5, classes)).double().eval()


def _brute_force(model: nn.Module, x: torch.Tensor, target: int, sv_tol: float) -> tuple[float, torch.Tensor]:
    """Image FI with the d x d Fisher matrix and torch.linalg.pinv; per-entry FI by definition."""
    xf = x.reshape(-1)

    def logp(v):
        return torch.log_softmax(model(v.reshape(x.shape)), dim=1)[0]

    a = torch.autograd.functional.jacobian(logp, xf)  # (K, d): rows are grad log p_k
    p = logp(xf).exp().detach()
    g_mat = sum(p[k] * torch.outer(a[k], a[k]) for k in range(a.shape[0]))  # G, d x d
    g = a[target]
    # singular values of L = eigenvalues of G ** 0.5: the same cut-off as sv_tol on L
    fi = float(g @ torch.linalg.pinv(g_mat, atol=sv_tol**2, hermitian=True) @ g)
    pix = torch.stack([a[target, j] ** 2 / sum(p[k] * a[k, j] ** 2 for k in range(a.shape[0]))
                       for j in range(xf.numel())])
    return fi, pix.reshape(x.shape[1:])


@pytest.mark.parametrize("classes", [2, 4])
def test_image_and_pixel_fi_match_brute_force(classes):
    model = _tiny(classes)
    x = torch.rand(3, 1, 3, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    targets = torch.tensor([0, 1, classes - 1])
    fi = image_fisher_information(model, x, targets, sv_tol=1e-8)
    pix = pixel_fisher_information(model, x, targets)
    for i in range(3):
        ref_fi, ref_pix = _brute_force(model, x[i:i + 1], int(targets[i]), sv_tol=1e-8)
        assert float(fi[i]) == pytest.approx(ref_fi, rel=1e-6)
        torch.testing.assert_close(pix[i], ref_pix, rtol=1e-8, atol=1e-12)


def test_truncation_matches_pinv_cutoff():
    """Dropping small singular values (sv_tol) equals pinv with the same cut-off on G."""
    model = _tiny(4, seed=3)
    x = torch.rand(1, 1, 3, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    a, p = log_prob_jacobian(model, x)
    s = torch.linalg.svdvals((a.reshape(4, -1) * p.reshape(4, 1).sqrt()).T)
    cut = float((s[1] + s[2]) / 2)  # keeps the two largest directions only
    fi_cut = float(image_fisher_information(model, x, 0, sv_tol=cut))
    fi_all = float(image_fisher_information(model, x, 0, sv_tol=1e-10))
    assert fi_cut == pytest.approx(_brute_force(model, x, 0, sv_tol=cut)[0], rel=1e-6)
    assert fi_cut < fi_all


def test_full_rank_closed_form():
    """With all K - 1 directions kept, FI of log p_y is (1 - p_y) / p_y, and pixel FI is bounded by it."""
    model = _tiny(4, d=16, seed=5)
    x = torch.rand(5, 1, 4, 4, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    with torch.no_grad():
        p = model(x).softmax(1)
    y = torch.tensor([0, 1, 2, 3, 0])
    py = p[torch.arange(5), y]
    torch.testing.assert_close(image_fisher_information(model, x, y, sv_tol=1e-10), (1 - py) / py)
    pix = pixel_fisher_information(model, x, y).flatten(1)
    assert bool((pix <= ((1 - py) / py)[:, None] * (1 + 1e-9)).all()) and bool((pix >= 0).all())


def test_default_target_is_the_prediction_and_single_logit():
    model = _tiny(3)
    x = torch.rand(4, 1, 3, 3, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    with torch.no_grad():
        pred = model(x).argmax(1)
    torch.testing.assert_close(image_fisher_information(model, x), image_fisher_information(model, x, pred))
    # a single logit z reads as two classes [0, z]
    single = nn.Sequential(_tiny(1))
    double = nn.Sequential(single, nn.ZeroPad1d((1, 0)))
    torch.testing.assert_close(pixel_fisher_information(single, x, 1), pixel_fisher_information(double, x, 1))
    torch.testing.assert_close(image_fisher_information(single, x, 0, sv_tol=1e-10),
                               image_fisher_information(double, x, 0, sv_tol=1e-10))


def test_3d_volume_without_the_d_by_d_matrix():
    """A 1x24^3 volume: G would be 13824^2 float64 (1.5 GB); the column-space route is instant."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv3d(1, 2, 3, stride=4), nn.ReLU(), nn.Flatten(), nn.LazyLinear(3)).eval()
    x = torch.rand(2, 1, 24, 24, 24, generator=torch.Generator().manual_seed(1))
    model(x)
    fi = image_fisher_information(model, x, sv_tol=1e-10)
    with torch.no_grad():
        p = model(x).softmax(1).max(1).values
    torch.testing.assert_close(fi, (1 - p) / p, rtol=1e-3, atol=1e-6)
    assert pixel_fisher_information(model, x).shape == x.shape


def test_model_untouched_and_errors():
    model = _tiny(3).train()
    model[1].weight.grad = torch.ones_like(model[1].weight)
    x = torch.rand(2, 1, 3, 3, dtype=torch.float64)
    image_fisher_information(model, x)
    assert model.training and torch.equal(model[1].weight.grad, torch.ones_like(model[1].weight))
    assert model[3].weight.grad is None
    with pytest.raises(ValueError, match="target"):
        image_fisher_information(model, x, torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="target"):
        pixel_fisher_information(model, x, 7)
    with pytest.raises(ValueError, match="grad_f"):
        a, p = log_prob_jacobian(model, x)
        fisher_information_from_jacobian(a, p, torch.zeros(2, 5))
