"""Bundle-local glue for ``mammogram_perturbation_sensitivity`` (everything else lives in medrobust).

``scripts.make_dataset`` writes the synthetic training set. Run it from the bundle root
(``python -m scripts.make_dataset``) or from anywhere as a file
(``python bundles/mammogram_perturbation_sensitivity/scripts/make_dataset.py``).
"""

from __future__ import annotations

__all__: list[str] = []
