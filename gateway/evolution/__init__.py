"""Prompt evolution: analysis of recent samples, evolvers, A/B decisions, the evolution job."""
