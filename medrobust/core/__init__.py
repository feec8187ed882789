"""Shared robustness building blocks: attacks, defenses, detectors and metrics."""
