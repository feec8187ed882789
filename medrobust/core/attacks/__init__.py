"""Task-agnostic adversarial attacks for 2-D and 3-D medical images.

A tensor-native functional core with thin classes on top (:mod:`.classes`). Every attack is
called as ``attack(model, x, y=None, *, <settings>, bounds=(0, 1), mask=None) ->
AttackResult(x_adv, success, info)`` with keyword-only settings; the randomised ones (``pgd``,
``fgsm``, ``fgm``, ``square``, ``sparse_pso``) also take ``generator=``. The gradient and
score-based attacks (``pgd``, ``fgsm``, ``fgm``, ``square``) serve any task through ``loss_fn``
(:mod:`.losses`: classification, segmentation, regression, registration, reconstruction);
``cw_l2``, ``deepfool`` and ``sparse_pso`` are for classifiers. All are untargeted by default
except ``sparse_pso`` (targeted, as in its paper).

One input contract (:mod:`medrobust.core.validation`): ``x`` must be a finite batch
``(B, C, *spatial)`` with at least 2 spatial dims, ``y`` one entry per sample (class indices in
``[0, K)`` for classifiers), settings finite and in range; anything else raises a
``ValueError``/``TypeError`` naming the argument. An ``nn.Module`` model is attacked in eval mode
(BatchNorm statistics untouched) and the caller's train/eval flags are restored afterwards.

- :func:`fgsm` / :func:`fgm`, :func:`pgd` (L-inf, L2; random start, restarts, schedules) -- :mod:`.gradient`
- :func:`cw_l2` (:mod:`.cw`), :func:`deepfool` (:mod:`.deepfool`): minimal-perturbation, classifiers
- :func:`square` (:mod:`.square`): score-based black-box L-inf, the gradient-masking check
- :func:`sparse_pso` (:mod:`.sparse`): the customised sparse mFI-PSO attack

Example:
    >>> import torch
    >>> from medrobust.core.attacks import pgd
    >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 2))
    >>> x_adv, success, info = pgd(net, torch.rand(2, 1, 8, 8), torch.tensor([0, 1]), eps=2 / 255)
"""

from medrobust.core.attacks.base import AttackResult
from medrobust.core.attacks.classes import FGM, FGSM, PGD, Attack, CarliniWagnerL2, DeepFool, SparsePSO, Square
from medrobust.core.attacks.cw import cw_l2
from medrobust.core.attacks.deepfool import deepfool
from medrobust.core.attacks.fnaf import fnaf, kspace_pgd
from medrobust.core.attacks.gradient import fgm, fgsm, pgd
from medrobust.core.attacks.losses import (
    AttackObjective,
    LossIncrease,
    classification_objective,
    reconstruction_objective,
    registration_objective,
    regression_objective,
    segmentation_objective,
)
from medrobust.core.attacks.sparse import sparse_pso
from medrobust.core.attacks.square import square

__all__ = [
    "AttackResult",
    "AttackObjective",
    "LossIncrease",
    "pgd",
    "fgsm",
    "fgm",
    "cw_l2",
    "deepfool",
    "fnaf",
    "kspace_pgd",
    "square",
    "sparse_pso",
    "classification_objective",
    "segmentation_objective",
    "regression_objective",
    "reconstruction_objective",
    "registration_objective",
    "Attack",
    "FGSM",
    "FGM",
    "PGD",
    "CarliniWagnerL2",
    "DeepFool",
    "Square",
    "SparsePSO",
]
