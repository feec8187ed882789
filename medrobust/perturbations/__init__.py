"""Natural and adversarial perturbation families, and their registry."""
