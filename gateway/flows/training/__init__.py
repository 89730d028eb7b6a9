"""Training uploads (``POST /api/enhance/train``), split by concern: ``uploads`` (the checks),
``rendering`` (suggestions, render requests, the paid-call guard, the A/B arms),
``candidates`` (active learning and reward-model scoring), ``records`` (stored objects and
rows), ``reply`` (the answer) and ``flow`` (the steps in order). ``gateway.flows.enhance``
uses the same pieces."""

from __future__ import annotations

from gateway.flows.training.deps import ActivePolicy, TrainingDeps
from gateway.flows.training.flow import train

__all__ = ["ActivePolicy", "TrainingDeps", "train"]
