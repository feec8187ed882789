"""Adversarial-training defenses as MONAI/ignite iteration functions (2-D and 3-D, any task loss).

Every defense is an :class:`AdversarialTrainingStep`: pass it as
``monai.engines.SupervisedTrainer(..., iteration_update=step)``. Adversarial examples come from
the one PGD implementation (:func:`medrobust.core.attacks.pgd`); the Fisher score from
:mod:`medrobust.core.metrics.fisher`.

- :class:`PGDAdversarialTraining` (Madry), :class:`FastFGSMTraining` (+ :class:`CatastrophicOverfittingStop`),
  :class:`FGMTraining` -- :mod:`.pgd_at`
- :class:`TRADES` -- :mod:`.trades`; :class:`MART` -- :mod:`.mart`
- :class:`AWP` (wraps AT / TRADES / MART) -- :mod:`.awp`
- :class:`ADTEXP`, :class:`ADTEXPAM` -- :mod:`.adt`
- :class:`FisherTargetedTraining` -- :mod:`.fisher_targeted`
- :class:`IGNorm`, :class:`IGSumNorm` (stable explanations) -- :mod:`.stable_explanations`
- :class:`SAL` (stable adversarial learning, learned per-feature costs) -- :mod:`.sal`
- :func:`build_defense` (name + flat options, for bundle configs) -- :mod:`.factory`
- :class:`AdversarialEvaluationStep`, :func:`robustness_metrics` (clean + PGD evaluation) -- :mod:`.evaluation`
- :func:`inject_noise` (PNI / CNI), :class:`NoiseInjectionTraining` -- :mod:`.noise_injection`;
  :func:`bayesian_last_layer` -- :mod:`.bayesian`; :class:`SIDPTraining`, :func:`make_dp_sgd`,
  :func:`dp_epsilon` -- :mod:`.sidp`; :func:`randomized_robustness` (one-draw / EOT / transfer) --
  :mod:`.randomized_evaluation`

Example:
    >>> from medrobust.core.defenses import build_defense
    >>> build_defense("trades", eps=2 / 255, beta=6.0)
    TRADES(eps=0.00784314, beta=6, steps=10, alpha=0.00196078)
"""

from medrobust.core.defenses.adt import ADTEXP, ADTEXPAM, default_adt_generator, tanh_gaussian_sample
from medrobust.core.defenses.awp import AWP, awp_directions
from medrobust.core.defenses.bayesian import BayesianLinear, LastLayerPosterior, bayesian_last_layer, elbo_loss
from medrobust.core.defenses.base import AdversarialTrainingStep, class_indices, eval_mode, kl_per_sample
from medrobust.core.defenses.evaluation import AdversarialEvaluationStep, adv_key, eps_tag, robustness_metrics
from medrobust.core.defenses.factory import DEFENSES, build_defense, defense_names
from medrobust.core.defenses.fisher_targeted import FisherSelection, FisherTargetedTraining
from medrobust.core.defenses.fnaf import FNAFTraining
from medrobust.core.defenses.mart import MART, mart_loss
from medrobust.core.defenses.noise_injection import (
    NoiseInjectionTraining,
    NoisyLayer,
    inject_noise,
    noise_disabled,
    noise_parameter_groups,
    set_noise_generator,
)
from medrobust.core.defenses.pgd_at import CatastrophicOverfittingStop, FastFGSMTraining, FGMTraining, PGDAdversarialTraining
from medrobust.core.defenses.sal import SAL
from medrobust.core.defenses.stable_explanations import IGNorm, IGSumNorm
from medrobust.core.defenses.randomized_evaluation import randomized_robustness
from medrobust.core.defenses.sidp import SIDPTraining, dp_epsilon, make_dp_sgd, non_affine_normalization, opacus_compatible
from medrobust.core.defenses.trades import TRADES, trades_kl_objective

__all__ = [
    "AdversarialTrainingStep",
    "PGDAdversarialTraining",
    "FastFGSMTraining",
    "FGMTraining",
    "CatastrophicOverfittingStop",
    "TRADES",
    "MART",
    "AWP",
    "ADTEXP",
    "ADTEXPAM",
    "FisherTargetedTraining",
    "FisherSelection",
    "IGNorm",
    "IGSumNorm",
    "SAL",
    "FNAFTraining",
    "NoisyLayer",
    "inject_noise",
    "noise_disabled",
    "set_noise_generator",
    "noise_parameter_groups",
    "NoiseInjectionTraining",
    "BayesianLinear",
    "bayesian_last_layer",
    "elbo_loss",
    "LastLayerPosterior",
    "SIDPTraining",
    "non_affine_normalization",
    "opacus_compatible",
    "make_dp_sgd",
    "dp_epsilon",
    "randomized_robustness",
    "AdversarialEvaluationStep",
    "robustness_metrics",
    "build_defense",
    "defense_names",
    "DEFENSES",
    "eps_tag",
    "adv_key",
    "mart_loss",
    "trades_kl_objective",
    "awp_directions",
    "tanh_gaussian_sample",
    "default_adt_generator",
    "class_indices",
    "kl_per_sample",
    "eval_mode",
]
