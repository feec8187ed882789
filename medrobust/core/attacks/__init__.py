"""Task-agnostic adversarial attacks for 2-D and 3-D medical images.

A tensor-native functional core with thin classes on top (:mod:`.classes`). Every attack has the
shape ``attack(model, x, y=None, *, ..., bounds=(0, 1), mask=None, generator=None) ->
AttackResult(x_adv, success, info)``; tasks (classification, segmentation, regression,
registration, reconstruction) plug in through ``loss_fn`` (:mod:`.losses`).

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
