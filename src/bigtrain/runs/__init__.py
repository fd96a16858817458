"""Runs: the run directory, checkpoints, the plan, results.json, loggers and export."""
