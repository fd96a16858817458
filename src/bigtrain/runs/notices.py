"""Libraries' notices off the console: Lightning's info lines and warnings to a log file, or nowhere.

The command's training runs get this from conf/hydra/default.yaml (the console shows warnings
and errors, `<run dir>/bigtrain.log` everything). The Python API and `bigtrain eval` / `predict`
run outside Hydra's logging, so they enter `library_notices` instead: while it is open,
Lightning's and MLflow's loggers and `warnings.warn()` calls (deprecations of a library's own
dependencies, Lightning's hints such as the `srun` one) are written to `log_file` (appended), or
dropped where there is none. bigtrain's own lines are printed, not logged, and are not affected.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path

# The loggers of the libraries whose info lines a training run keeps in its log file only.
LIBRARY_LOGGERS = ("pytorch_lightning", "lightning_fabric", "lightning", "mlflow", "py.warnings")


@contextlib.contextmanager
def library_notices(log_file: str | Path | None) -> Iterator[None]:
    """Route the libraries' loggers and `warnings.warn()` to `log_file` (None: drop them) while
    open; every logger's handlers, level and propagation are restored on exit."""
    # Imported first: on import, each adds a console handler of its own where the root logger has
    # none, which would otherwise join the handlers set here.
    import lightning_fabric  # noqa: F401
    import pytorch_lightning  # noqa: F401

    handler: logging.Handler
    if log_file is None:
        handler = logging.NullHandler()
    else:
        handler = logging.FileHandler(log_file, encoding="utf-8")
        handler.setFormatter(logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"))
    saved = []
    for name in LIBRARY_LOGGERS:
        lg = logging.getLogger(name)
        saved.append((lg, lg.handlers[:], lg.propagate))
        lg.handlers = [handler]
        lg.propagate = False
    try:
        with warnings.catch_warnings():  # restores warnings.showwarning on exit
            warnings.showwarning = _to_log
            yield
    finally:
        for lg, handlers, propagate in saved:
            lg.handlers = handlers
            lg.propagate = propagate
        handler.close()


def _to_log(message, category, filename, lineno, file=None, line=None) -> None:
    """warnings.showwarning: the warning, formatted as Python prints it, to the py.warnings logger."""
    text = warnings.formatwarning(message, category, filename, lineno, line).rstrip()
    logging.getLogger("py.warnings").warning(text)
