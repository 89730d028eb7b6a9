"""Benchmarks (``make bench``): figures printed as ratios against a baseline in the same run."""
