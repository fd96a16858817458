"""Clusters: SLURM run identity and requeue, and the multirun sweep summary."""
