"""An Optuna sweep that resumes: `hparams_search=optuna` (conf/hparams_search/optuna.yaml).

The study lives in SQLite inside the sweep folder. Hydra's Optuna sweeper reopens an existing
study but would run n_trials more and number its jobs from 0 again, overwriting the folders of
the first trials. This sweeper counts the trials already finished, runs only the rest, numbers
new jobs after the old ones, and marks trials left running by the interrupted sweep as failed
(the sampler then ignores them). Rerun the same command with hydra.sweep.dir set to the
interrupted sweep's folder (inside a SLURM job the folder is named after the job id, so a
requeued sweep finds it by itself).

Hydra finds plugins by scanning the hydra_plugins namespace, which an editable install does not
expose to that scan; the config therefore also names `Register` as a Hydra callback, which
registers the sweeper when Hydra builds it (before the sweeper).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra.core.plugins import Plugins
from hydra.experimental.callback import Callback
from hydra_plugins.hydra_optuna_sweeper.optuna_sweeper import OptunaSweeper


class ResumableOptunaSweeper(OptunaSweeper):
    def sweep(self, arguments: list[str]) -> None:
        import optuna

        impl = self.sweeper
        # SQLite creates the file, not its folder; the launcher makes the folder only later.
        Path(str(impl.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        if impl.storage is not None:
            try:
                study = optuna.load_study(study_name=impl.study_name, storage=impl.storage)
            except KeyError:  # no such study yet: a fresh sweep
                study = None
            if study is not None:
                finished = [t for t in study.trials if t.state.is_finished()]
                for t in study.trials:
                    if t.state == optuna.trial.TrialState.RUNNING:
                        study.tell(t.number, state=optuna.trial.TrialState.FAIL)
                impl.n_trials = max(0, impl.n_trials - len(finished))
                impl.job_idx = len(study.trials)
                # A sampler seeded as in the first run would propose the first run's random
                # start-up points again.
                if study.trials and hasattr(impl.sampler, "reseed_rng"):
                    impl.sampler.reseed_rng()
        return super().sweep(arguments)


class Register(Callback):
    """Registers ResumableOptunaSweeper with Hydra; Hydra builds its callbacks before the sweeper.

    Not at import: Hydra's own plugin scan imports this module (in an installed wheel) while it
    builds the registry, and registering from inside that scan would recurse."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__()
        Plugins.instance().register(ResumableOptunaSweeper)
