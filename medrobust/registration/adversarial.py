"""Adversarial deformation regularisation (Hu et al., MICCAI 2018): a discriminator on DDFs.

The discriminator ``D`` (MONAI ``PatchDiscriminator``) learns to tell DDFs predicted by the
registration network ("fake") from DDFs produced by finite-element simulations ("real"); the
registration network adds ``D``'s generator loss in place of a smoothness penalty. Options:
least-squares or BCE GAN loss (MONAI ``PatchAdversarialLoss``), a gradient penalty on
interpolates, conditioning on the fixed image (D sees ``[ddf, fixed]``), a D/G update ratio, and
removing each DDF's least-squares affine part before D sees it (``remove_affine``): when a global
affine stage absorbs the patient-to-patient offset, D should judge only the local deformation,
which is what the FE simulations model.

Real samples are drawn per case when possible: the FE bank holds simulations built from each
training patient's gland, so the conditioning image and the real DDF belong to the same patient.

Example:
    >>> import torch
    >>> bank = {"a": torch.zeros(4, 3, 16, 16, 16)}
    >>> adv = AdversarialRegulariser(bank, spatial_dims=3, channels=4, seed=0)
    >>> ddf = torch.zeros(2, 3, 16, 16, 16, requires_grad=True)
    >>> d_loss = adv.discriminator_step(ddf, None, ["a", "a"])
    >>> g_loss = adv.generator_loss(ddf, None)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from monai.losses import PatchAdversarialLoss
from monai.networks.nets import PatchDiscriminator

__all__ = ["affine_residual", "DDFDiscriminator", "AdversarialRegulariser"]


def affine_residual(ddf: torch.Tensor) -> torch.Tensor:
    """``ddf`` minus its least-squares affine fit ``u(x) ~ M [x; 1]`` over the grid (differentiable).

    Args:
        ddf: ``(B, N, *spatial)``.

    Returns:
        ``(B, N, *spatial)``; zero for an affine field.
    """
    n, spatial = ddf.shape[1], ddf.shape[2:]
    axes = [torch.linspace(-1.0, 1.0, s, dtype=ddf.dtype, device=ddf.device) for s in spatial]
    coords = torch.stack(torch.meshgrid(*axes, indexing="ij")).reshape(n, -1)
    design = torch.cat([coords, torch.ones_like(coords[:1])]).T  # (V, N + 1), centred so it is well conditioned
    flat = ddf.reshape(ddf.shape[0], n, -1)  # (B, N, V)
    coef = flat @ design @ torch.linalg.inv(design.T @ design)  # (B, N, N + 1)
    return (flat - coef @ design.T).reshape(ddf.shape)


class DDFDiscriminator(torch.nn.Module):
    """Patch discriminator on DDFs, optionally conditioned on an image: ``(B, N[+1], *spatial)`` -> logits.

    Args:
        spatial_dims: 2 or 3.
        conditional: input is ``[ddf, image]`` (N + 1 channels) instead of the DDF alone.
        channels: channels of the first layer (doubled per layer).
        num_layers: strided layers.
    """

    def __init__(self, spatial_dims: int = 3, *, conditional: bool = False, channels: int = 8, num_layers: int = 2) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}.")
        self.spatial_dims = spatial_dims
        self.conditional = conditional
        self.net = PatchDiscriminator(
            spatial_dims=spatial_dims,
            channels=channels,
            in_channels=spatial_dims + int(conditional),
            num_layers_d=num_layers,
            norm="INSTANCE",  # batch statistics would let D separate real and fake batches trivially
        )

    def forward(self, ddf: torch.Tensor, image: torch.Tensor | None = None) -> torch.Tensor:
        if ddf.shape[1] != self.spatial_dims:
            raise ValueError(f"ddf must have {self.spatial_dims} channels, got shape {tuple(ddf.shape)}.")
        if self.conditional:
            if image is None:
                raise ValueError("image: this discriminator is conditional and needs the fixed image.")
            ddf = torch.cat([ddf, image.to(ddf)], dim=1)
        return self.net(ddf)[-1]  # PatchDiscriminator returns intermediate features + the logits last


class AdversarialRegulariser:
    """Discriminator, its optimiser and losses; used by :class:`RegistrationIteration`.

    Args:
        bank: real DDFs: a tensor ``(M, N, *spatial)`` or a mapping ``case_id -> (M_k, N, *spatial)``.
        spatial_dims: 2 or 3.
        criterion: ``"least_squares"`` (LSGAN) or ``"bce"``.
        conditional: condition D on the fixed image.
        channels, num_layers: discriminator size.
        lr: Adam learning rate of D.
        d_steps: D updates per D round.
        d_every: one D round every ``d_every`` registration steps (D/G ratio = ``d_steps / d_every``).
        gradient_penalty: weight of ``(||grad D(x_hat)|| - 1)^2`` on real/fake interpolates (0: off).
        remove_affine: D sees real and predicted DDFs minus their least-squares affine part.
        seed: seeds the generator that draws real samples and interpolation weights.
        device: where D lives.
    """

    def __init__(
        self,
        bank: torch.Tensor | Mapping[str, torch.Tensor],
        *,
        spatial_dims: int = 3,
        criterion: str = "least_squares",
        conditional: bool = False,
        channels: int = 8,
        num_layers: int = 2,
        lr: float = 1e-4,
        d_steps: int = 1,
        d_every: int = 1,
        gradient_penalty: float = 0.0,
        remove_affine: bool = False,
        seed: int = 0,
        device: str | torch.device = "cpu",
    ) -> None:
        if criterion not in ("least_squares", "bce"):
            raise ValueError(f"criterion must be 'least_squares' or 'bce', got {criterion!r}.")
        if d_steps < 1 or d_every < 1:
            raise ValueError(f"d_steps and d_every must be >= 1, got {d_steps} and {d_every}.")
        if gradient_penalty < 0:
            raise ValueError(f"gradient_penalty must be >= 0, got {gradient_penalty}.")
        self.device = torch.device(device)
        self.bank = {k: v.float().to(self.device) for k, v in (bank.items() if isinstance(bank, Mapping) else {"*": bank}.items())}
        if not self.bank or any(v.ndim != spatial_dims + 2 or v.shape[0] == 0 for v in self.bank.values()):
            raise ValueError(f"bank must hold non-empty (M, {spatial_dims}, *spatial) tensors of real DDFs.")
        self._keys = sorted(self.bank)
        self.discriminator = DDFDiscriminator(spatial_dims, conditional=conditional, channels=channels, num_layers=num_layers).to(self.device)
        self.optimizer = torch.optim.Adam(self.discriminator.parameters(), lr=lr, betas=(0.5, 0.999))
        self.loss = PatchAdversarialLoss(criterion=criterion, no_activation_leastsq=True)
        self.d_steps, self.d_every, self.gradient_penalty = d_steps, d_every, gradient_penalty
        self.remove_affine = bool(remove_affine)
        self.generator = torch.Generator(device="cpu").manual_seed(seed)

    def _randint(self, high: int) -> int:
        return int(torch.randint(high, (1,), generator=self.generator))

    def sample_real(self, case_ids: Sequence[str] | None, batch: int) -> torch.Tensor:
        """``batch`` real DDFs; sample ``b`` from ``case_ids[b]``'s simulations when the bank has that case."""
        out = []
        for b in range(batch):
            key = case_ids[b] if case_ids is not None and case_ids[b] in self.bank else self._keys[self._randint(len(self._keys))]
            sims = self.bank[key]
            out.append(sims[self._randint(sims.shape[0])])
        return torch.stack(out)

    def _prepare(self, ddf: torch.Tensor) -> torch.Tensor:
        return affine_residual(ddf) if self.remove_affine else ddf

    def _penalty(self, real: torch.Tensor, fake: torch.Tensor, image: torch.Tensor | None) -> torch.Tensor:
        w = torch.rand((real.shape[0],) + (1,) * (real.ndim - 1), generator=self.generator).to(real)
        x_hat = (w * real + (1 - w) * fake).requires_grad_(True)
        (grad,) = torch.autograd.grad(self.discriminator(x_hat, image).sum(), x_hat, create_graph=True)
        return ((grad.flatten(1).norm(dim=1) - 1) ** 2).mean()

    def discriminator_step(self, fake_ddf: torch.Tensor, fixed_image: torch.Tensor | None, case_ids: Sequence[str] | None) -> float:
        """``d_steps`` updates of D on real FE DDFs vs ``fake_ddf`` (detached); returns the last D loss."""
        fake = self._prepare(fake_ddf.detach())
        image = None if fixed_image is None else fixed_image.detach()
        self.discriminator.train()
        value = 0.0
        for _ in range(self.d_steps):
            real = self._prepare(self.sample_real(case_ids, fake.shape[0]))
            loss = 0.5 * (
                self.loss(self.discriminator(real, image), target_is_real=True, for_discriminator=True)
                + self.loss(self.discriminator(fake, image), target_is_real=False, for_discriminator=True)
            )
            if self.gradient_penalty > 0:
                loss = loss + self.gradient_penalty * self._penalty(real, fake, image)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            value = float(loss.detach())
        return value

    def generator_loss(self, ddf: torch.Tensor, fixed_image: torch.Tensor | None) -> torch.Tensor:
        """D's generator loss on ``ddf`` (differentiable w.r.t. ``ddf``; D's own gradients are discarded)."""
        for p in self.discriminator.parameters():
            p.requires_grad_(False)
        try:
            logits = self.discriminator(self._prepare(ddf), None if fixed_image is None else fixed_image.detach())
            return self.loss(logits, target_is_real=True, for_discriminator=False)
        finally:
            for p in self.discriminator.parameters():
                p.requires_grad_(True)

    def state_dict(self) -> dict:
        return {"discriminator": self.discriminator.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.discriminator.load_state_dict(state["discriminator"])
        self.optimizer.load_state_dict(state["optimizer"])
