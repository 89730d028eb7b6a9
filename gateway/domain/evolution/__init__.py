"""Prompt evolution's rules: the analysis of recent ratings, the complaint table, the offline
(heuristic) evolver, and the checks every proposed prompt passes."""
