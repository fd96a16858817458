"""`bigtrain eval` and `bigtrain predict`: use a finished run's checkpoint (runs/evaluate.py,
runs/inference.py, runs/predict.py). Mistakes end in one `bigtrain: error:` line and exit 2."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

COMMANDS = ("eval", "predict")


def _parser(command: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=f"bigtrain {command}", epilog="See docs/using.md for examples.")
    p.add_argument("run_dir", help="the run directory of a finished run")
    p.add_argument("--checkpoint", help="a .ckpt file or sharded checkpoint folder (default: the run's best)")
    p.add_argument(
        "--trust-code",
        action="store_true",
        help="build a model, data module or callback of the run's config from outside bigtrain "
        "(`_target_`): only for runs you trust, since that runs their code",
    )
    if command == "eval":
        p.description = "Test a run's checkpoint on its test split or on other data (overrides)."
        p.add_argument("overrides", nargs="*", help="config overrides, e.g. data.path=new.csv")
        p.add_argument(
            "--config-dir",
            help="the --config-dir the run was trained with (a run directory cannot choose it)",
        )
        return p
    p.description = "Predict with a run's checkpoint: table rows, images, or text after a prompt."
    p.add_argument("input", help="a CSV/Parquet file, an image file or folder, or a text prompt")
    p.add_argument("--out", default="predictions.csv", help="where rows go (never overwritten)")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    return p


def _eval(args: argparse.Namespace) -> None:
    from rich.console import Console
    from rich.table import Table

    from bigtrain.runs.evaluate import evaluate

    result = evaluate(
        args.run_dir, args.overrides, args.checkpoint, args.trust_code, args.config_dir, flag="--trust-code"
    )
    print(f"bigtrain eval: {result['checkpoint']} on {result['data']}")
    table = Table()
    table.add_column("metric")
    table.add_column("test", justify="right")
    for key, value in result["test"].items():
        table.add_row(key, f"{value:.4f}")
    Console().print(table)
    print(f"written: {result['file']}")


def _predict(args: argparse.Namespace) -> None:
    from bigtrain.config.errors import ConfigError
    from bigtrain.runs.inference import load
    from bigtrain.runs.predict import write_csv

    trained = load(args.run_dir, args.checkpoint, args.trust_code, flag="--trust-code")
    if trained.kind == "text":
        if args.max_new_tokens < 1 or args.temperature < 0 or (args.top_k is not None and args.top_k < 1):
            raise ConfigError("--max-new-tokens and --top-k must be at least 1, --temperature at least 0")
        text = trained.predict(
            args.input,
            max_new_tokens=args.max_new_tokens,
            temperature=args.temperature,
            top_k=args.top_k,
            seed=args.seed,
        )
        print(args.input + text)
        return
    from pathlib import Path

    if Path(args.out).exists():  # checked before any work
        raise ConfigError(f"{args.out} already exists: give another --out or move it away")
    rows = trained.predict(args.input)
    out = write_csv(rows, args.out)
    shown = ", ".join(f"{r['input']}: {r['predicted']}" for r in rows[:3])
    print(f"{len(rows)} prediction(s) written to {out} ({shown}{', ...' if len(rows) > 3 else ''})")


def main(argv: Sequence[str]) -> None:
    """`bigtrain eval ...` or `bigtrain predict ...` (argv[0] is the command)."""
    from bigtrain.config.errors import ConfigError

    command, rest = argv[0], list(argv[1:])
    args = _parser(command).parse_args(rest)
    from bigtrain.runs.notices import library_notices

    try:
        with library_notices(None):  # bigtrain's lines only, as a training run's console
            (_eval if command == "eval" else _predict)(args)
    except ConfigError as e:
        sys.stderr.write(f"bigtrain: error: {e}\n")
        sys.exit(2)
