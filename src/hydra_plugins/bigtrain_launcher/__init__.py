"""The launcher of `hydra/launcher=slurm`: Hydra's submitit SLURM launcher, ending in one line where
SLURM cannot take the jobs, and planning a dry run here instead of submitting it.

What it does differently lives in bigtrain.cluster.submit. Hydra takes launchers only from the
hydra_plugins package; an editable install hides this package from Hydra's plugin scan, so the
sweep summary callback (bigtrain.cluster.sweep) registers it when a multirun starts, before Hydra
builds the launcher.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

try:
    from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher as SubmititSlurmLauncher
except ImportError:  # without the slurm extra, conf/hydra/launcher/slurm.yaml does not compose
    SubmititSlurmLauncher = None

if SubmititSlurmLauncher is not None:

    class SlurmLauncher(SubmititSlurmLauncher):
        """submitit's SLURM launcher; see bigtrain.cluster.submit for what it adds."""

        def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[Any]:
            from bigtrain.cluster.submit import all_dry_runs, plan_here, submit

            if all_dry_runs(self, job_overrides):
                return plan_here(self, job_overrides, initial_job_idx)
            parent = super().launch
            return submit(lambda: parent(job_overrides, initial_job_idx))
