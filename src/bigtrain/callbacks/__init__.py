"""Callbacks Lightning does not have: throughput, and the run's PNG plots."""
