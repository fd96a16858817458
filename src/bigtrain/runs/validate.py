"""validate(cfg): a composed config through the schema, then every feature's checks, in one order.

The schema (bigtrain.config) checks each value on its own. The checks across groups live with
the feature that owns them, in a `checks.py` of its package; each one yields one line per
problem, naming the override that fixes it. `validate` runs all of them in the order of CHECKS
and raises one ConfigError with every line, so a config with several mistakes reports them all.

The order goes from cheap to costly: the config against itself first, then files and installed
packages, then what needs torch (a GPU request, a checkpoint to inspect), and last the plan's
memory against the machine's, which runs only when every other check passed. A check that reads
another's result names it in `needs` and is skipped when that one failed. Nothing heavy is
imported here: a check imports torch itself, and only when the config asks for it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from bigtrain.config import ConfigError, RunConfig, config_error, parse
from bigtrain.data import checks as data
from bigtrain.distributed import checks as distributed
from bigtrain.models import checks as models
from bigtrain.runs import checks as runs
from bigtrain.training import checks as training

CheckFn = Callable[[RunConfig], Iterable[str]]


@dataclass(frozen=True)
class Check:
    """One check, and the checks whose success it relies on (it is skipped if one failed)."""

    run: CheckFn
    needs: tuple[CheckFn, ...] = ()


BEFORE_PLAN: tuple[Check, ...] = (
    # The config against itself: no files, no imports.
    Check(distributed.check_parallel),  # tensor-parallel sizes, FSDP groups, hybrid sharding
    Check(distributed.check_processes),  # ddp needs several processes; several CPUs need ddp
    Check(distributed.check_batch_split, needs=(distributed.check_parallel,)),
    Check(models.check_shapes),  # the model family's own: heads, widths, patches and depth vs images
    Check(models.check_families),  # token data with a language model, images with an image model
    Check(data.check_fractions),  # val + test fractions leave a training split
    Check(data.check_seq_len, needs=(models.check_families,)),
    Check(training.check_stopping),
    Check(training.check_metrics),
    Check(training.check_checkpoint_monitor),
    Check(training.check_schedule),
    Check(training.check_optimizer),
    Check(training.check_averaging),
    Check(training.check_nonfinite),
    Check(training.check_finders),
    Check(training.check_extra_callbacks),
    Check(runs.check_resume),
    Check(runs.check_run_paths),  # name is a folder name; resume= is not empty
    # Files and installed packages (looked up, not imported).
    # The data source's own (data/<name>_record.py): text and token files, tokenizers, image
    # folders (every header probed), tables (read and encoded); a data module of yours is
    # imported, checked against its signature and built.
    Check(data.check_source, needs=(data.check_fractions,)),
    Check(
        data.check_train_batches,  # at least one global batch of training samples
        needs=(
            distributed.check_parallel,
            distributed.check_batch_split,
            data.check_source,
            data.check_fractions,
        ),
    ),
    Check(runs.check_logger_packages),
    Check(runs.check_ckpt_path),
    # Your own pieces (_target_): their modules are imported, and torch with them.
    Check(models.check_model_target),
    Check(training.check_callback_targets, needs=(training.check_extra_callbacks,)),
    Check(distributed.check_parallel_packages),  # DeepSpeed: imports torch to find a GPU
    # torch, only where the config asks for it.
    Check(distributed.check_hardware),  # GPU, MPS, fp16
    Check(runs.check_checkpoint_contents, needs=(runs.check_ckpt_path, runs.check_resume)),
)
# Last, the plan's memory against the machine's: the plan builds the model on the meta device,
# which needs a config that passed every check above.
CHECKS: tuple[Check, ...] = (
    *BEFORE_PLAN,
    Check(runs.check_memory, needs=tuple(c.run for c in BEFORE_PLAN)),
)

# The checks of a finished run's config that `eval` uses: not those about training it. The data
# source's own checks split and encode the data as training would (classes in the train split,
# a split of at least one global batch); eval reads new data through the run's saved
# preprocessing, which refuses what it cannot use in one line (runs/evaluate.py). The training
# plan's memory is not held against this machine (a run trained on a larger one is tested here).
EVAL_CHECKS: tuple[Check, ...] = tuple(
    c for c in CHECKS if c.run not in (data.check_source, data.check_train_batches, runs.check_memory)
)


def _lines(check: CheckFn, cfg: RunConfig) -> list[str]:
    """What `check` reports: the lines it yields, and those of a ConfigError it raises."""
    found: list[str] = []
    try:
        for line in check(cfg):
            found.append(line)
    except ConfigError as e:
        found.extend(e.lines)
    return found


def run_checks(cfg: RunConfig, checks: Iterable[Check] = CHECKS) -> list[str]:
    """Every problem that `checks` find in `cfg`, in their order."""
    errors: list[str] = []
    failed: set[CheckFn] = set()
    for check in checks:
        if any(need in failed for need in check.needs):
            continue
        found = _lines(check.run, cfg)
        if found:
            failed.add(check.run)
            errors.extend(found)
    return errors


def validate(cfg: Any, checks: Iterable[Check] = CHECKS) -> RunConfig:
    """The typed RunConfig of a composed Hydra config, or one ConfigError with every mistake.

    The schema first (every unknown key, wrong type and out-of-range value); if it converts,
    every check of `checks` (CHECKS: those of a run to train)."""
    run = parse(cfg)
    errors = run_checks(run, checks)
    if errors:
        raise config_error(errors)
    return run
