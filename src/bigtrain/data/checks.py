"""Config checks of the data: the split fractions, windows against the model's context, the
source's own checks (its record's: files, columns, images, tokenizers), and one global batch of
training samples.

Each check takes the RunConfig and yields one line per problem, naming the fix (runs/validate.py
runs them in order). A source's checks live in its record (data/<name>_record.py).
"""

from __future__ import annotations

from collections.abc import Iterator

from bigtrain.config import RunConfig
from bigtrain.data import source


def check_fractions(cfg: RunConfig) -> Iterator[str]:
    """The held-out fractions must leave a training split."""
    d = cfg.data
    val, test = getattr(d, "val_fraction", None), getattr(d, "test_fraction", None)
    if val is not None and test is not None and val + test >= 1.0:
        yield (
            f"data.val_fraction={val} + data.test_fraction={test} = {val + test:g} leaves no training "
            "data: lower them so that they sum below 1 (0.1 each is usual)"
        )


def check_seq_len(cfg: RunConfig) -> Iterator[str]:
    """Training windows must fit the model's context. Needs matching families (check_families)."""
    d, m = cfg.data, cfg.model
    if source(d.name).inputs(d.name) == "tokens" and d.seq_len > m.max_seq_len:
        yield f"data.seq_len={d.seq_len} is longer than model.max_seq_len={m.max_seq_len}: lower data.seq_len"


def check_source(cfg: RunConfig) -> Iterator[str]:
    """The source record's own checks, in its order: the first that reports stops the rest (a
    file must exist before it is read). Needs fractions that leave a training split."""
    for check in source(cfg.data.name).checks:
        problems = list(check(cfg))
        if problems:
            yield from problems
            return


def check_train_batches(cfg: RunConfig) -> Iterator[str]:
    """A training split smaller than one global batch would never train a full step (none at all
    with data.drop_last), and a trainer.limit_train_batches fraction that keeps no batch of the
    epoch none at all: refused where the source knows its split size now (a scikit-learn set's
    fractions, a table's rows, an image folder's listing). Needs an even batch split and a
    source whose checks passed (check_batch_split, check_source). Limits of zero epochs or
    steps are check_stopping's (training/checks.py)."""
    from bigtrain.data.batches import limit_keeps_nothing, too_few_samples, train_split_size

    samples = train_split_size(cfg)
    if samples is None:
        return
    line = too_few_samples(cfg, samples) or limit_keeps_nothing(cfg, samples)
    if line is not None:
        yield line
