"""Robustness metrics: Fisher information, intrinsic robustness, flatness, probabilistic robustness,
attribution, saliency, purification, registration, reconstruction and classification."""
