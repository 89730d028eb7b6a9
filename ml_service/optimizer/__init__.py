"""Bayesian optimisation: the GP core, its dict facade, the GP worker queue, and the flows over
them (suggest, record observations, best, studies, health)."""
