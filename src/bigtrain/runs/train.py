"""One run: plan, fit, test the best checkpoint, and results.json (also on failure or interrupt).

The run owns its directory from its first write to its end (runs/lock.py). SIGTERM and SIGINT
stop it at the next optimizer step with a checkpoint (callbacks/signals.py); a full or read-only
file system ends it with one line naming the last good checkpoint (RunFailed). results.json says
how it ended, except that a resumed run that does not complete leaves the results.json of the
completed run it continued as it was and writes resume_error.json beside it.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.utilities import rank_zero_only

from bigtrain.build import (
    RunCallbacks,
    build_callbacks,
    build_module,
    build_trainer,
    epochs_for_steps,
    trick_results,
)
from bigtrain.callbacks.signals import RunInterrupted, SignalStop
from bigtrain.cluster.slurm import in_slurm_job, job_id, newest_hpc_checkpoint, requeue
from bigtrain.config import ConfigError, RunConfig
from bigtrain.data import build_datamodule
from bigtrain.data.batches import check_loaded
from bigtrain.runs.lock import hold
from bigtrain.runs.loggers import build_loggers, close_loggers, log_final_hparams, log_run_files
from bigtrain.runs.paths import quote_value
from bigtrain.runs.plan import run_plan
from bigtrain.runs.results import (
    RESULTS_FILE,
    Results,
    echo,
    print_summary,
    read_json,
    strip_stage,
)
from bigtrain.runs.rundir import RunDirError
from bigtrain.training.checkpoint_files import checkpoint_folder, child, is_url, shown
from bigtrain.training.module import BigtrainModule
from bigtrain.util import write_json_atomic

__all__ = ["RunFailed", "RunInterrupted", "start_checkpoint", "train"]

RESUME_ERROR_FILE = "resume_error.json"
EXIT_RUN_FAILED = 1
# The run's own storage failing: what happened, and what to do before resuming. EACCES, EPERM and
# EIO count only for files inside the run directory (elsewhere they are the data's, not a fault).
STORAGE_FAULTS = {
    errno.ENOSPC: ("its file system is full", "free space"),
    errno.EDQUOT: ("its disk quota is used up", "free space or raise the quota"),
    errno.EROFS: ("its file system became read-only", "make it writable"),
    errno.EACCES: ("writing into it was refused", "make it writable"),
    errno.EPERM: ("writing into it was refused", "make it writable"),
    errno.EIO: ("its disk reported an I/O error", "check the disk"),
}
ANYWHERE = (errno.ENOSPC, errno.EDQUOT, errno.EROFS)


class RunFailed(Exception):
    """A run ended by its storage (full, read-only); str() is the one line the command prints."""

    exit_code = EXIT_RUN_FAILED


@dataclass
class Parts:
    """What a run has built so far (a failure can come before any of it exists)."""

    dm: Any = None
    module: BigtrainModule | None = None
    ckpt_path: str | None = None
    callbacks: RunCallbacks | None = None
    loggers: list | None = None
    trainer: pl.Trainer | None = None


@rank_zero_only
def _print_data(dm) -> None:
    """The data's sizes on the console and in bigtrain.log."""
    line = dm.describe() if hasattr(dm, "describe") else None
    if line is not None:
        echo(line)
        return
    sizes, balance = dm.sizes(), dm.class_balance()
    classes = len(next(iter(balance.values()), []))
    echo(f"data: {dm.cfg.name}: " + ", ".join(f"{k} {n}" for k, n in sizes.items()) + f"; {classes} classes")
    # Samples per class in each split: the log keeps them, the console one line.
    logging.getLogger("bigtrain").info("samples per class: %s", balance)


def _save_preprocessing(dm, run_dir: Path) -> dict | None:
    """preprocessing.json (and the tokenizer file) in the run directory, written by rank zero:
    what `bigtrain predict`, `eval` and `bigtrain.load` need besides the weights."""
    if not hasattr(dm, "preprocessing"):  # a user's data module
        return None
    import json
    import shutil

    from bigtrain.data.preprocess import FILE, with_spec
    from bigtrain.util import write_text_atomic

    prep = with_spec(dm)
    source = prep.pop("tokenizer_source", None)  # where the tokenizer came from: not saved
    if rank_zero_only.rank == 0:
        if prep.get("tokenizer"):
            shutil.copyfile(source, run_dir / prep["tokenizer"])
        write_text_atomic(run_dir / FILE, json.dumps(prep, indent=1))
    return prep


def _best_val(module: BigtrainModule, ckpt_cb, monitor: str) -> dict:
    """The validation metrics of the epoch whose checkpoint is the best one."""
    best = ckpt_cb.best_model_score if ckpt_cb is not None else None
    rows = [h for h in module.history if monitor in h]
    if best is not None:
        match = [h for h in rows if h[monitor] == float(best)]
        rows = match or rows
    return strip_stage(rows[-1], "val") if rows else {}


def start_checkpoint(cfg: RunConfig, run_dir: Path, expected: dict[str, tuple] | None = None) -> str | None:
    """Where fit starts: ckpt_path; or, for `resume=` and inside a SLURM job that already left
    checkpoints in its run directory (a requeue), the newest intact checkpoint of the run that
    fits the `expected` parameter shapes. The checkpoints are in `checkpoint_dir` when it is set
    (a local folder or a URL), else in the run directory's checkpoints/."""
    from bigtrain.runs.checkpointing import has_checkpoints, newest_intact

    ckpt_dir = checkpoint_folder(cfg.checkpoint_dir, run_dir)
    if in_slurm_job() and cfg.resume is None:
        # The run directory is named after the job id: a checkpoint in it was left by this same
        # job before a requeue. Lightning's hpc checkpoint (a preemption) is the newest state.
        hpc, _ = newest_hpc_checkpoint(run_dir)
        if hpc is not None:
            return str(hpc)
        if not has_checkpoints(ckpt_dir):
            return cfg.ckpt_path
    elif cfg.resume is None:
        return cfg.ckpt_path
    say = rank_zero_only(lambda msg: print(f"resume: {msg}", flush=True))
    found = newest_intact(
        ckpt_dir, cfg.trust_checkpoint, say, clean=rank_zero_only.rank == 0, expected=expected
    )
    if found is None and has_checkpoints(ckpt_dir):
        raise ConfigError(
            f"resume={cfg.resume}: no checkpoint in {ckpt_dir} is usable (see above): restore them from a "
            "copy of the run, or start a new run"
        )
    say(f"continuing from {found}" if found else "no checkpoint was written yet: starting from step 0")
    return str(found) if found else None


def _check_checkpoint_dir(cfg: RunConfig) -> None:
    """A new run does not start in a checkpoint_dir that holds an earlier run's checkpoints
    (runs/checks.checkpoint_dir_taken); rank zero asks, before anything is written there."""
    from bigtrain.runs.checks import checkpoint_dir_taken

    if rank_zero_only.rank == 0 and (line := checkpoint_dir_taken(cfg)) is not None:
        raise ConfigError(line)


def _check_output(cfg: RunConfig, run_dir: Path, plan: dict) -> None:
    """Before training: the run directory takes files, and the checkpoint folder (the run
    directory's, or a local checkpoint_dir) has room for the checkpoints. A remote checkpoint_dir
    tells nobody its free space."""
    from bigtrain.runs.rundir import RunDirError, check_writable

    # A checkpoint holds weights and two Adam moments (fp32: 12 bytes a parameter); a save needs
    # room for the new file while the old one still exists, and best and last are kept.
    need = 12 * plan["params"]["total"] * 3
    folder = checkpoint_folder(cfg.checkpoint_dir, run_dir)
    elsewhere = cfg.checkpoint_dir is not None
    try:
        check_writable(run_dir, what="run directory", need=0 if elsewhere else need)
        if elsewhere and isinstance(folder, Path):
            check_writable(folder, what="checkpoint_dir", need=need)
    except RunDirError as e:
        raise ConfigError(str(e)) from e


def _fit_and_test(cfg: RunConfig, run_dir: Path, parts: Parts, results: Results) -> None:
    """fit, then (unless a requeue was asked for) test the best checkpoint, filling `results`."""
    trainer, module, dm, requeue_cb = parts.trainer, parts.module, parts.dm, parts.callbacks.requeue
    trainer.fit(module, datamodule=dm, ckpt_path=parts.ckpt_path)
    # Hyperparameters went to the loggers when fit started; testing would send them again.
    trainer.enable_autolog_hparams = False
    swa = cfg.tricks.swa.enabled
    if swa:  # the average exists only now, after fit: save it and test it
        trainer.save_checkpoint(child(checkpoint_folder(cfg.checkpoint_dir, run_dir), "swa.ckpt"))
    if requeue_cb is not None and requeue_cb.requeue_requested:
        results.status = "requeued"
        return
    if cfg.test_after_fit:
        ckpt_cb = trainer.checkpoint_callback
        best = ckpt_cb.best_model_path if ckpt_cb is not None and ckpt_cb.best_model_path else None
        tested = trainer.test(module, datamodule=dm, ckpt_path=None if swa else best, verbose=False)
        results.test = strip_stage(tested[0] if tested else {}, "test")
        if "confusion_matrix" in module.test_artifacts:
            results.confusion_matrix = module.test_artifacts["confusion_matrix"].tolist()
    results.status = "interrupted" if trainer.interrupted else "completed"


def _collect(
    cfg, run_dir: Path, trainer, module, callbacks: RunCallbacks, results: Results, start: float
) -> None:
    """The results.json blocks that exist whatever way fit ended."""
    ckpt_cb = trainer.checkpoint_callback
    results.global_step = trainer.global_step
    results.epochs = trainer.current_epoch
    results.val = _best_val(module, ckpt_cb, cfg.callbacks.checkpoint.monitor)
    if ckpt_cb is not None and ckpt_cb.best_model_path:
        best = ckpt_cb.best_model_path  # a checkpoint_dir elsewhere: in full (an absolute path, a URL)
        inside = cfg.checkpoint_dir is None
        results.best_checkpoint = os.path.relpath(best, run_dir) if inside else shown(best, run_dir)
    results.throughput = callbacks.meter.summary()
    for key, block in trick_results(cfg, callbacks).items():
        setattr(results, key, block)
    results.resumed = module.resumed
    results.memory = callbacks.meter.memory_summary()
    if callbacks.samples is not None:
        results.samples = callbacks.samples.last
    results.wall_seconds = round(time.perf_counter() - start, 3)
    results.timing = callbacks.meter.timing_summary()


def train(cfg: RunConfig, run_dir: str | Path) -> dict:
    """Plan, fit, test the best checkpoint, and write results.json in `run_dir`. Returns the results.

    Raises ConfigError (one line) when `run_dir` belongs to a live run, RunInterrupted after
    SIGTERM or SIGINT, RunFailed when the run's storage fails."""
    start = time.perf_counter()
    run_dir = Path(run_dir)
    with contextlib.ExitStack() as stack:
        try:  # before anything is written: a second run in the directory leaves it untouched
            stack.enter_context(hold(run_dir))
        except RunDirError as e:
            raise ConfigError(str(e)) from e
        _check_checkpoint_dir(cfg)
        stop = stack.enter_context(SignalStop(checkpoint_folder(cfg.checkpoint_dir, run_dir)))
        pl.seed_everything(cfg.seed, workers=True, verbose=False)
        spec, plan = run_plan(cfg, run_dir, rank_zero_only.rank)
        if cfg.dry_run:
            return {"status": "planned", "plan": plan}
        _check_output(cfg, run_dir, plan)
        return _run(cfg, run_dir, spec, plan, stop, start)


def _run(cfg: RunConfig, run_dir: Path, spec, plan: dict, stop: SignalStop, start: float) -> dict:
    """Build, fit and test; results.json however that ends; then the one-line outcome, if any."""
    results = Results(
        experiment=cfg.name,
        params=plan["params"]["total"],
        slurm_job_id=job_id() if in_slurm_job() else None,
        tags=list(cfg.tags),
    )
    previous = _previous_results(cfg, run_dir)
    parts = Parts()
    failure: BaseException | None = None
    try:
        _build(cfg, run_dir, spec, plan, stop, results, parts)
        _fit_and_test(cfg, run_dir, parts, results)
    except BaseException as e:
        if parts.trainer is None and isinstance(e, ConfigError):
            raise  # found before training (no usable checkpoint...): nothing is written
        failure = e
        _record_failure(results, e, stop, run_dir)
    continuing = cfg.resume is not None or (parts.ckpt_path is not None and cfg.ckpt_path is None)
    note = _finish(cfg, run_dir, results, previous if continuing else None, parts, start)
    if failure is not None:
        outcome = _outcome(failure, stop, run_dir, parts, note, cfg.checkpoint_dir)
        if outcome is failure:
            raise failure
        raise outcome from failure
    if parts.trainer.is_global_zero:
        print_summary(results.as_json(), run_dir)
        if results.status == "requeued":
            # Last: SLURM stops this job right away and starts it again with the same id.
            requeue()
    return results.as_json()


def _build(
    cfg: RunConfig, run_dir: Path, spec, plan: dict, stop: SignalStop, results: Results, parts: Parts
) -> None:
    """Data, module, start checkpoint, callbacks, loggers and Trainer, into `parts`."""
    inputs = _check_inputs(cfg, run_dir)
    dm = parts.dm = build_datamodule(cfg)
    dm.setup("fit")
    check_loaded(cfg, dm)  # a training split smaller than one global batch: no step would train
    _print_data(dm)
    stats = getattr(dm, "stats", {})
    if stats:
        results.data = stats
    module = parts.module = build_module(cfg, spec, stats.get("bytes_per_token", 1.0))
    module.preprocessing = _save_preprocessing(dm, run_dir)
    if rank_zero_only.rank == 0:
        from bigtrain.runs.fingerprints import record

        record(run_dir, cfg.data, inputs)  # inputs.json: what this run trains on
    shapes = {k: tuple(v.shape) for k, v in module.state_dict().items() if hasattr(v, "shape")}
    parts.ckpt_path = start_checkpoint(cfg, run_dir, shapes)
    if cfg.tricks.finders.lr.enabled or cfg.tricks.finders.batch_size.enabled:
        from bigtrain.callbacks.finders import run_finders

        results.finders = run_finders(module, dm, cfg, run_dir / "plots")
    parts.callbacks = build_callbacks(cfg, run_dir, module, plan)
    parts.loggers = build_loggers(cfg, run_dir, resuming=parts.ckpt_path is not None)
    # SignalStop last: Lightning runs checkpoint callbacks in their order, after all the others.
    parts.trainer = build_trainer(
        cfg, run_dir, [*parts.callbacks.all, stop], parts.loggers, max_epochs=epochs_for_steps(cfg, dm)
    )


def _check_inputs(cfg: RunConfig, run_dir: Path) -> dict | None:
    """A resume, before any data is read: ConfigError (one line) for a data file that is not the
    one the run trained on (runs/fingerprints.py), unless accept_changed_data=true. Returns the
    fingerprints it computed (None when it compared nothing)."""
    if cfg.resume is None or cfg.accept_changed_data:
        return None
    from bigtrain.runs.fingerprints import check

    return check(run_dir, cfg.data)


def _previous_results(cfg: RunConfig, run_dir: Path) -> dict | None:
    """results.json of the run this one continues; a damaged one is named in one warning line
    (nothing is computed from it: the run writes a new one)."""
    path = run_dir / RESULTS_FILE
    previous = read_json(path)
    if previous is None and cfg.resume is not None and path.exists() and rank_zero_only.rank == 0:
        sys.stderr.write(
            f"bigtrain: warning: {path} is not a JSON object of results: the resumed run writes a new one\n"
        )
    return previous


def _signal_of(e: BaseException, stop: SignalStop) -> int | None:
    """The signal that ended the run, if one did (Lightning's own SIGTERM stop is a SystemExit)."""
    if isinstance(e, RunInterrupted):
        return e.signum
    return stop.signum if isinstance(e, (KeyboardInterrupt, SystemExit)) else None


def _record_failure(results: Results, e: BaseException, stop: SignalStop, run_dir: Path) -> None:
    signum = _signal_of(e, stop)
    if signum is not None or isinstance(e, (KeyboardInterrupt, SystemExit)):
        results.status = "interrupted"
        if signum is not None:
            results.signal = RunInterrupted(signum).signal_name
        return
    results.status = "failed"
    fault = storage_fault(e, run_dir)
    results.error = f"{type(fault or e).__name__}: {fault or e}"


def storage_fault(e: BaseException | None, run_dir: Path) -> OSError | None:
    """The OSError of the run's storage (full, read-only...) that `e` came from, if any: the
    first one (the deepest in its chain: Lightning's cleanup after it often fails the same way)
    that names its file, else the first one."""
    seen: set[int] = set()
    root = str(run_dir.absolute())
    found: list[OSError] = []
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in STORAGE_FAULTS:
            inside = e.filename is None or str(Path(str(e.filename)).absolute()).startswith(root)
            if e.errno in ANYWHERE or inside:
                found.append(e)
        e = e.__cause__ or e.__context__
    named = [f for f in found if f.filename is not None]
    return (named or found or [None])[-1]


def _finish(
    cfg, run_dir: Path, results: Results, continued: dict | None, parts: Parts, start: float
) -> str | None:
    """Collect and write the results (rank zero), close the loggers. Returns a note when the
    results file could not be written."""
    if parts.trainer is not None:
        _collect(cfg, run_dir, parts.trainer, parts.module, parts.callbacks, results, start)
    else:
        results.wall_seconds = round(time.perf_counter() - start, 3)
    zero = parts.trainer.is_global_zero if parts.trainer is not None else rank_zero_only.rank == 0
    note = None
    if zero:
        # A resume that did not complete keeps the completed run's results.json as it was.
        keep = continued is not None and continued.get("status") == "completed"
        target = run_dir / (RESUME_ERROR_FILE if keep and results.status != "completed" else RESULTS_FILE)
        try:
            write_json_atomic(target, results.as_json())
            if target.name == RESULTS_FILE:
                (run_dir / RESUME_ERROR_FILE).unlink(missing_ok=True)  # an earlier failed attempt's
            if parts.loggers and parts.module is not None:
                log_final_hparams(parts.loggers, parts.module.hparams, results.as_json())
                log_run_files(parts.loggers, run_dir)
        except OSError as e:
            note = f"{target.name} could not be written either ({e.strerror or e})"
    with contextlib.suppress(OSError):
        close_loggers(parts.loggers or [])
    return note


def _outcome(
    failure: BaseException,
    stop: SignalStop,
    run_dir: Path,
    parts: Parts,
    note: str | None,
    checkpoint_dir: str | None = None,
):
    """What to raise: RunInterrupted or RunFailed with their one line (empty on ranks other than
    zero: one process says it), or the failure itself. `checkpoint_dir`: the run's (the resume
    command names it: a resume asks for it typed again)."""
    ckpt_dir = checkpoint_folder(checkpoint_dir, run_dir)
    signum = _signal_of(failure, stop)
    zero = parts.trainer.is_global_zero if parts.trainer is not None else rank_zero_only.rank == 0
    step = parts.trainer.global_step if parts.trainer is not None else 0
    again = f" checkpoint_dir={quote_value(checkpoint_dir)}" if checkpoint_dir is not None else ""
    resume = f"continue with: bigtrain resume={run_dir}{again}" + (f"; {note}" if note else "")
    if signum is not None:
        e = failure if isinstance(failure, RunInterrupted) else RunInterrupted(signum, step)
        step = e.step if e.step is not None else step
        if not zero:
            e.line = ""
        elif e.saved is not None:
            e.line = (
                f"interrupted by {e.signal_name} at step {step}: saved {_rel(e.saved, run_dir)}; {resume}"
            )
        else:
            e.line = f"interrupted by {e.signal_name} at step {step}: no new checkpoint; {_last_good(run_dir, ckpt_dir)}; {resume}"
        return e
    fault = storage_fault(failure, run_dir)
    if fault is not None:
        if not zero:
            return RunFailed("")
        what, fix = STORAGE_FAULTS[fault.errno]
        where = f" writing {_rel(fault.filename, run_dir)}" if fault.filename else ""
        return RunFailed(
            f"the run stopped at step {step}: {what} ({fault.strerror}{where}); {_last_good(run_dir, ckpt_dir)}; "
            f"{fix}, then {resume}"
        )
    if note:
        sys.stderr.write(f"bigtrain: {note}\n")
    return failure


def _rel(path: str | os.PathLike, run_dir: Path) -> str:
    if is_url(path):
        return str(path)
    rel = os.path.relpath(Path(path).absolute(), run_dir.absolute())
    return str(path) if rel.startswith("..") else rel


def _last_good(run_dir: Path, ckpt_dir) -> str:
    """'the last good checkpoint is checkpoints/x.ckpt (step N)', from what is in the checkpoint
    folder `ckpt_dir` now."""
    from bigtrain.runs.checkpointing import inspect_checkpoint, newest_intact
    from bigtrain.training.checkpoint_files import CheckpointError

    try:
        found = newest_intact(ckpt_dir, trust=False, report=lambda _: None, clean=False)
        if found is not None:
            step = inspect_checkpoint(found, verify=False)["global_step"]
            return f"the last good checkpoint is {_rel(found, run_dir)} (step {step})"
    except (OSError, CheckpointError):
        pass
    return "no checkpoint was written yet (a resume starts again from step 0)"
