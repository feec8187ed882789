"""Accuracy, AUC and ECE against independent references (scikit-learn, a numpy ECE)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from medrobust.core.metrics.classification import (
    accuracy,
    class_probabilities,
    classification_metrics,
    expected_calibration_error,
    roc_auc,
)


def _ece_reference(p: np.ndarray, y: np.ndarray, bins: int) -> float:
    conf, pred = p.max(1), p.argmax(1)
    edges = np.linspace(0, 1, bins + 1)
    total = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        sel = (conf >= lo) & (conf < hi) if hi < 1 else (conf >= lo) & (conf <= hi)
        if sel.any():
            total += sel.mean() * abs((pred[sel] == y[sel]).mean() - conf[sel].mean())
    return total


@pytest.mark.parametrize("k", [1, 2, 3])
def test_auc_accuracy_ece_match_references(k):
    g = torch.Generator().manual_seed(k)
    n = 200
    logits = torch.randn(n, k, generator=g) * 2
    y = torch.randint(0, max(k, 2), (n,), generator=g)
    p = class_probabilities(logits).numpy()
    assert p.shape == (n, max(k, 2)) and np.allclose(p.sum(1), 1, atol=1e-6)
    if k == 1:
        assert np.allclose(p[:, 1], torch.sigmoid(logits[:, 0]).numpy(), atol=1e-6)
        ref_auc = roc_auc_score(y.numpy(), p[:, 1])
    elif k == 2:
        ref_auc = roc_auc_score(y.numpy(), p[:, 1])
    else:
        ref_auc = roc_auc_score(y.numpy(), p, multi_class="ovr")
    assert roc_auc(logits, y) == pytest.approx(ref_auc, abs=1e-6)
    assert accuracy(logits, y) == pytest.approx(float((p.argmax(1) == y.numpy()).mean()))
    assert expected_calibration_error(logits, y, num_bins=10) == pytest.approx(_ece_reference(p, y.numpy(), 10), abs=1e-5)
    m = classification_metrics(logits, y)
    assert set(m) == {"n", "accuracy", "auc", "ece"} and m["n"] == n


def test_perfectly_calibrated_and_overconfident():
    # confidence 1.0 and always right: ECE 0; confidence ~1 and right half the time: ECE ~0.5
    logits = torch.tensor([[0.0, 50.0], [50.0, 0.0]] * 10)
    assert expected_calibration_error(logits, torch.tensor([1, 0] * 10)) == pytest.approx(0.0, abs=1e-6)
    assert expected_calibration_error(logits, torch.tensor([1, 1] * 10)) == pytest.approx(0.5, abs=1e-6)
    assert np.isnan(roc_auc(logits, torch.ones(20, dtype=torch.long)))


def test_bad_inputs():
    with pytest.raises(ValueError, match="class indices"):
        accuracy(torch.zeros(3, 2), torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="labels for"):
        roc_auc(torch.zeros(3, 2), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="num_bins"):
        expected_calibration_error(torch.zeros(3, 2), torch.tensor([0, 1, 0]), num_bins=0)


@pytest.mark.parametrize("seed", [0, 1])
def test_binary_auc_matches_sklearn_with_ties(seed):
    from medrobust.core.metrics.classification import binary_auc

    rng = np.random.default_rng(seed)
    scores, labels = rng.integers(0, 4, 40).astype(float), rng.integers(0, 2, 40)  # many ties
    assert binary_auc(scores, labels) == pytest.approx(roc_auc_score(labels, scores), abs=1e-9)
    assert np.isnan(binary_auc(scores, np.ones(40)))
    with pytest.raises(ValueError, match="positive must hold binary"):
        binary_auc(scores, labels * 2)
    with pytest.raises(ValueError, match="must match"):
        binary_auc(scores[:3], labels)
