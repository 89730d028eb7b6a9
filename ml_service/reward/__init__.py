"""Phase 2: the reward model and its flows (train, score, status)."""
