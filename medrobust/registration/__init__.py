"""Label-driven (weakly supervised) deformable registration pieces for MONAI engines.

- :mod:`.losses`: multiscale Dice label loss, L2-gradient and bending-energy penalties (MONAI);
- :mod:`.adversarial`: the DDF discriminator and adversarial regulariser (FE simulations as real);
- :mod:`.transforms`: one random label channel per pair per step;
- :mod:`.engine`: ``iteration_update`` functions for ``SupervisedTrainer`` / ``SupervisedEvaluator``;
- :mod:`.evaluation`: per-case TRE (mm), Dice, HD95, folding, std log-J rows and files;
- :mod:`.inputs`: every pair has the inputs the network takes (moving gland label), checked up front;
- :mod:`.export`: NIfTI outputs and the DDF as an ITK displacement-field transform;
- :mod:`.robustness`: PGD on the fixed image (``medrobust.core.attacks``) and its effect on Dice/TRE;
- :mod:`.baselines`: no registration, the mean training translation, any DDF method scored per pair.

Submodules are imported explicitly (``from medrobust.registration.engine import ...``) so that
importing the package stays cheap.
"""
