"""Seeded synthetic sample data for medrobust demos and tests.

Run from the repository root: ``python -m sample_data.generate --out sample_data/generated``.
Generators: :mod:`sample_data.mammograms` (DICOM MG + ROI masks + labels) and, when present,
``sample_data.mrus`` (paired MR/TRUS volumes).
"""
