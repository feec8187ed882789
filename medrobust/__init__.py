"""medrobust: robustness toolkit for medical-imaging models, built on MONAI.

Subpackages (import what you need; nothing heavy is imported here):

- :mod:`medrobust.data`: dataset discovery, DICOM/NIfTI/ITK/PNG loading, error records,
  de-identified case ids.
- :mod:`medrobust.perturbations`: natural and adversarial perturbation families + registry.
- :mod:`medrobust.sensitivity`: the batched, resumable perturbation-sensitivity sweep.
- :mod:`medrobust.core`: attacks, defenses, detectors and metrics.
- :mod:`medrobust.simulation`: finite-element motion simulation for registration.
"""

__version__ = "0.1.0"
