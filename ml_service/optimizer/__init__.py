"""Bayesian optimisation: the GP core, its facade, the GP workers and the suggestion flows."""
