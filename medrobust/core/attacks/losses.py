"""Task losses and success criteria: how an attack sees classification, segmentation,
regression, registration and reconstruction models.

An :class:`AttackObjective` bundles

- ``loss(output, y) -> (B,)``: per-sample loss. Untargeted attacks *increase* it, targeted
  attacks *decrease* it (``y`` is then the target: a class, a mask, an output);
- ``success(output_adv, y, *, targeted, loss_adv, loss_clean) -> (B,) bool``;
- ``reference(x, output_clean) -> y``: the ``y`` used when the caller passes ``y=None``
  (the clean prediction: predicted class, predicted mask, clean output).

Every attack takes ``loss_fn=`` as an objective, a name (``"ce"``, ``"margin"``, ``"dice"``,
``"dicece"``, ``"mse"``, ``"nmse"``, ``"registration_dice"``, ``"registration_mse"``) or a
plain callable ``(output, y) -> (B,)`` (success then means "loss moved by more than 0").

Example:
    >>> import torch
    >>> obj = segmentation_objective("dice")
    >>> out = torch.randn(2, 3, 8, 8); y = out.argmax(1, keepdim=True)
    >>> obj.loss(out, y).shape
    torch.Size([2])
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from monai.losses import DiceLoss, LocalNormalizedCrossCorrelationLoss
from monai.networks.blocks import Warp

from medrobust.core.utils import class_logits
from medrobust.core.validation import check_labels, check_number

__all__ = [
    "AttackObjective",
    "LossIncrease",
    "class_logits",
    "cross_entropy_loss",
    "margin_loss",
    "classification_success",
    "labels_or_prediction",
    "check_class_targets",
    "classification_objective",
    "segmentation_objective",
    "regression_objective",
    "reconstruction_objective",
    "registration_objective",
    "nmse_loss",
    "per_sample",
    "resolve_objective",
]

SuccessFn = Callable[..., torch.Tensor]


def per_sample(val: torch.Tensor, batch: int, name: str = "loss_fn") -> torch.Tensor:
    """Reduce a loss to ``(B,)`` (mean over every non-batch dim); a reduced scalar is an error."""
    if not isinstance(val, torch.Tensor):
        raise TypeError(f"{name} must return a tensor, got {type(val).__name__}.")
    if val.ndim == 0 or val.shape[0] != batch:
        raise ValueError(
            f"{name} must return one loss per sample (shape ({batch}, ...)), got shape {tuple(val.shape)}; "
            "use reduction='none'."
        )
    return val.reshape(batch, -1).mean(dim=1)


@dataclass(frozen=True)
class LossIncrease:
    """Success when the loss moved by more than ``threshold`` (up if untargeted, down if targeted).

    Args:
        threshold: minimal change, in loss units (absolute) or as a fraction of the clean loss
            (``relative=True``).
        relative: measure the change relative to ``|loss_clean|``.
    """

    threshold: float = 0.0
    relative: bool = False

    def __call__(self, output: torch.Tensor, y: Any, *, targeted: bool, loss_adv: torch.Tensor,
                 loss_clean: torch.Tensor) -> torch.Tensor:
        change = loss_clean - loss_adv if targeted else loss_adv - loss_clean
        thr = self.threshold * loss_clean.abs() if self.relative else self.threshold
        return change > thr


@dataclass(frozen=True)
class AttackObjective:
    """A task as an attack sees it (see the module docstring).

    Args:
        loss: ``(output, y) -> (B,)``.
        success: ``(output_adv, y, *, targeted, loss_adv, loss_clean) -> (B,) bool``.
        reference: ``(x, output_clean) -> y`` used when ``y`` is ``None``.
        name: for logs and reports.
        is_classifier: the output is ``(B, K)`` logits or a single logit ``(B, 1)`` / ``(B,)``.
    """

    loss: Callable[[torch.Tensor, Any], torch.Tensor]
    success: SuccessFn = LossIncrease(0.0)
    reference: Callable[[torch.Tensor, torch.Tensor], Any] = lambda x, out: out.detach()
    name: str = "custom"
    is_classifier: bool = False

    def with_success(self, success: SuccessFn | None) -> AttackObjective:
        """A copy with ``success`` replaced (``None`` keeps the current one)."""
        if success is None:
            return self
        return AttackObjective(self.loss, success, self.reference, self.name, self.is_classifier)


# ----------------------------------------------------------------------------- classification
def cross_entropy_loss(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-sample cross-entropy ``(B,)``: softmax CE for ``(B, K)`` logits, BCE-with-logits for a
    single logit (``y`` in ``{0, 1}`` or a probability)."""
    y = torch.as_tensor(y, device=out.device)
    if out.ndim == 1 or (out.ndim == 2 and out.shape[1] == 1):
        z = out.reshape(-1)
        return F.binary_cross_entropy_with_logits(z, y.reshape(-1).to(z.dtype), reduction="none")
    return F.cross_entropy(class_logits(out), y.reshape(-1).long(), reduction="none")


def margin_loss(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Carlini-Wagner margin ``max_{k != y} z_k - z_y`` ``(B,)`` (positive once misclassified)."""
    z = class_logits(out)
    y = torch.as_tensor(y, device=z.device).reshape(-1).long()
    zy = z.gather(1, y[:, None])[:, 0]
    other = z.masked_fill(F.one_hot(y, z.shape[1]).bool(), float("-inf")).amax(dim=1)
    return other - zy


def classification_success(out: torch.Tensor, y: torch.Tensor, *, targeted: bool, **_: Any) -> torch.Tensor:
    """Untargeted: some other class scores strictly above ``y``; targeted: ``y`` scores strictly
    above every other class. Ties count as failures (``argmax`` would silently pick the first)."""
    marg = margin_loss(out, y.to(out.device))
    return marg < 0 if targeted else marg > 0


def labels_or_prediction(logits: torch.Tensor, y: Any, *, name: str = "y") -> torch.Tensor:
    """Class labels ``(B,)``: ``y`` checked against the clean ``logits`` ``(B, K)`` (or one logit),
    or their arg-max when ``y`` is ``None``; a single int applies to every sample.

    Raises:
        ValueError: ``y`` has the wrong length or a class outside ``[0, K)`` (named ``name``).
    """
    z = class_logits(logits)
    if y is None:
        return z.argmax(1).detach()
    return check_labels(y, batch=z.shape[0], num_classes=z.shape[1], name=name).to(z.device)


def check_class_targets(out: torch.Tensor, y: Any, *, name: str = "y") -> None:
    """``y`` fits a classifier output ``out``: class indices in ``[0, K)`` for ``(B, K >= 2)``
    logits, labels or probabilities in ``[0, 1]`` (one per sample) for a single logit.

    Raises:
        ValueError: wrong length or values outside that range (named ``name``).
    """
    if out.ndim == 1 or (out.ndim == 2 and out.shape[1] == 1):
        t = torch.as_tensor(y)
        if t.numel() not in (1, out.shape[0]):
            raise ValueError(f"{name} must hold one label per sample ({out.shape[0]}), got shape {tuple(t.shape)}; "
                             "if the input is a single image, add its batch dim.")
        check_number(name, t, low=0, high=1, hint="A single-logit model takes labels in {0, 1} or probabilities.")
        return
    labels_or_prediction(out, y, name=name)


def _predicted_class(x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    return class_logits(out).argmax(dim=1).detach()


def classification_objective(kind: str = "ce") -> AttackObjective:
    """Classification: ``kind="ce"`` (softmax CE, or BCE for a single logit) or ``"margin"`` (CW).

    ``y``: class indices ``(B,)``; with ``y=None`` the clean prediction is used.
    """
    fns = {"ce": cross_entropy_loss, "margin": margin_loss}
    if kind not in fns:
        raise ValueError(f"classification_objective: kind must be one of {sorted(fns)}, got {kind!r}.")
    return AttackObjective(fns[kind], classification_success, _predicted_class, f"classification-{kind}", True)


# ------------------------------------------------------------------------------- segmentation
class _SegLoss:
    """Per-sample Dice (MONAI ``DiceLoss``) or Dice + CE for segmentation logits ``(B, K, *spatial)``."""

    def __init__(self, with_ce: bool, include_background: bool) -> None:
        self.with_ce = with_ce
        kw = dict(include_background=include_background, reduction="none")
        self.dice_idx = DiceLoss(softmax=True, to_onehot_y=True, **kw)
        self.dice_hot = DiceLoss(softmax=True, **kw)
        self.dice_sig = DiceLoss(sigmoid=True, **kw)

    def __call__(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        b = out.shape[0]
        y = y.to(out.device)
        if out.shape[1] == 1:  # binary, sigmoid output
            yf = y.to(out.dtype)
            loss = per_sample(self.dice_sig(out, yf), b)
            if self.with_ce:
                loss = loss + per_sample(F.binary_cross_entropy_with_logits(out, yf, reduction="none"), b)
            return loss
        index = y.shape[1] == 1
        loss = per_sample((self.dice_idx if index else self.dice_hot)(out, y.to(out.dtype)), b)
        if self.with_ce:
            # MONAI's DiceCELoss has no reduction="none", so its CE half is computed here per sample.
            tgt = y[:, 0].long() if index else y.argmax(dim=1)
            loss = loss + per_sample(F.cross_entropy(out, tgt, reduction="none"), b)
        return loss


def _predicted_mask(x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    if out.shape[1] == 1:
        return (out > 0).to(out.dtype).detach()
    return out.argmax(dim=1, keepdim=True).detach()


def segmentation_objective(kind: str = "dice", *, include_background: bool = True,
                           threshold: float = 0.05) -> AttackObjective:
    """Segmentation logits ``(B, K, *spatial)`` (softmax) or ``(B, 1, *spatial)`` (sigmoid).

    Args:
        kind: ``"dice"`` (MONAI ``DiceLoss``) or ``"dicece"`` (Dice + cross-entropy).
        include_background: passed to ``DiceLoss``.
        threshold: success when the loss moves by more than this (Dice points).

    ``y``: label indices ``(B, 1, *spatial)`` or one-hot ``(B, K, *spatial)``; ``y=None``: the
    clean prediction.
    """
    if kind not in ("dice", "dicece"):
        raise ValueError(f"segmentation_objective: kind must be 'dice' or 'dicece', got {kind!r}.")
    return AttackObjective(_SegLoss(kind == "dicece", include_background), LossIncrease(threshold),
                           _predicted_mask, f"segmentation-{kind}")


# ------------------------------------------------------------------- regression / reconstruction
def _mse(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return per_sample((out - y.to(out)) ** 2, out.shape[0])


def nmse_loss(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-sample NMSE ``||y - out||^2 / ||y||^2`` (fastMRI's definition) ``(B,)``."""
    y = y.to(out)
    b = out.shape[0]
    num = ((out - y) ** 2).reshape(b, -1).sum(1)
    den = (y**2).reshape(b, -1).sum(1).clamp_min(torch.finfo(out.dtype).tiny)
    return num / den


def regression_objective(*, threshold: float = 0.0) -> AttackObjective:
    """Regression: per-sample MSE against ``y`` (any shape ``(B, ...)``); ``y=None``: the clean output."""
    return AttackObjective(_mse, LossIncrease(threshold), name="regression-mse")


def reconstruction_objective(*, threshold: float = 0.01) -> AttackObjective:
    """Reconstruction: per-sample NMSE against ``y`` (ground truth, or the clean reconstruction
    when ``y=None``); success when NMSE moves by more than ``threshold``."""
    return AttackObjective(nmse_loss, LossIncrease(threshold), name="reconstruction-nmse")


# ------------------------------------------------------------------------------- registration
class _RegistrationLoss:
    """Dissimilarity after warping: ``y = cat([moving, fixed], 1)``; the moving half is warped by
    the model's DDF ``(B, nd, *spatial)`` (voxel units, MONAI ``Warp``) and compared to the fixed half."""

    def __init__(self, similarity: str | Callable[[torch.Tensor, torch.Tensor], torch.Tensor], mode: str,
                 padding_mode: str) -> None:
        self.warp = Warp(mode=mode, padding_mode=padding_mode)
        self.similarity = similarity
        self._dice = DiceLoss(reduction="none")
        self._lncc: dict[int, LocalNormalizedCrossCorrelationLoss] = {}

    def __call__(self, ddf: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        nd = ddf.ndim - 2
        if ddf.shape[1] != nd:
            raise ValueError(f"registration model must return a DDF (B, {nd}, *spatial), got {tuple(ddf.shape)}.")
        if y.shape[1] % 2:
            raise ValueError(f"registration y must be cat([moving, fixed], dim=1) (even channels), got {tuple(y.shape)}.")
        y = y.to(ddf)
        m = y.shape[1] // 2
        warped = self.warp(y[:, :m], ddf)
        fixed = y[:, m:]
        b = ddf.shape[0]
        if callable(self.similarity):
            return per_sample(self.similarity(warped, fixed), b, "similarity")
        if self.similarity == "dice":
            return per_sample(self._dice(warped, fixed), b)
        if self.similarity == "mse":
            return _mse(warped, fixed)
        lncc = self._lncc.setdefault(nd, LocalNormalizedCrossCorrelationLoss(spatial_dims=nd, reduction="none"))
        return per_sample(lncc(warped, fixed), b)


def registration_objective(similarity: str | Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = "dice", *,
                           threshold: float = 0.05, mode: str = "bilinear",
                           padding_mode: str = "border") -> AttackObjective:
    """Registration: the model maps ``x`` (moving and fixed images on channels) to a DDF.

    Args:
        similarity: ``"dice"`` (labels: 1 - soft Dice), ``"mse"`` or ``"lncc"`` (images), or a
            callable ``(warped, fixed) -> (B, ...)`` dissimilarity.
        threshold: success when the dissimilarity rises by more than this.
        mode, padding_mode: MONAI ``Warp`` interpolation (keep it differentiable: bilinear).

    ``y``: ``cat([moving, fixed], dim=1)`` -- moving and fixed labels (``"dice"``) or images.
    With ``y=None`` the clean input ``x`` itself is used (image similarity of the pair).
    """
    if not callable(similarity) and similarity not in ("dice", "mse", "lncc"):
        raise ValueError(f"registration_objective: similarity must be 'dice', 'mse', 'lncc' or callable, got {similarity!r}.")
    name = similarity if isinstance(similarity, str) else "custom"
    return AttackObjective(_RegistrationLoss(similarity, mode, padding_mode), LossIncrease(threshold),
                           lambda x, out: x.detach(), f"registration-{name}")


_NAMED: dict[str, Callable[[], AttackObjective]] = {
    "ce": lambda: classification_objective("ce"),
    "bce": lambda: classification_objective("ce"),
    "margin": lambda: classification_objective("margin"),
    "dice": lambda: segmentation_objective("dice"),
    "dicece": lambda: segmentation_objective("dicece"),
    "mse": regression_objective,
    "nmse": reconstruction_objective,
    "registration_dice": lambda: registration_objective("dice"),
    "registration_mse": lambda: registration_objective("mse"),
    "registration_lncc": lambda: registration_objective("lncc"),
}


def resolve_objective(loss_fn: AttackObjective | str | Callable[[torch.Tensor, Any], torch.Tensor] | None,
                      success_fn: SuccessFn | None = None) -> AttackObjective:
    """The :class:`AttackObjective` for an attack's ``loss_fn`` argument (``None``: classification CE),
    with ``success_fn`` replacing its success criterion when given."""
    if loss_fn is None:
        obj = classification_objective("ce")
    elif isinstance(loss_fn, AttackObjective):
        obj = loss_fn
    elif isinstance(loss_fn, str):
        if loss_fn not in _NAMED:
            raise ValueError(f"loss_fn: unknown name {loss_fn!r}; known: {', '.join(sorted(_NAMED))}.")
        obj = _NAMED[loss_fn]()
    elif callable(loss_fn):
        obj = AttackObjective(loss_fn)
    else:
        raise TypeError(f"loss_fn must be an AttackObjective, a name or a callable, got {type(loss_fn).__name__}.")
    return obj.with_success(success_fn)
