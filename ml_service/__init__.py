"""The ML service: Bayesian optimisation and the reward model behind a small HTTP API."""

__version__ = "0.1.0"
