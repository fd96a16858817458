"""Whole-run cases of scripts/bench.py: start-up and tail of a real `bigtrain +experiment=gpt_stdlib`.

Each repeat runs, one after the other in an order that alternates between repeats:
  python -c "import torch"                the interpreter and torch: the unit of the ratio;
  python -c "import pytorch_lightning"    what any Lightning program imports first: seconds from
                                          launch to the end of that import (reported);
  python -m bigtrain +experiment=gpt_stdlib trainer.max_steps=STEPS
                                          the run as users type it, with its default callbacks
                                          and loggers, in a fresh folder.
Start-up is the run's own `timing.first_step_s` in results.json: seconds from the process's
launch (the OS's start time of the process) to the end of the first optimizer step. The tail is
the wall time of the whole command, measured here, minus `timing.last_step_s`: everything after
the last optimizer step (the last validation, checkpoints, testing the best checkpoint, samples,
plots, results, loggers, the interpreter's exit). With STEPS = 87 the run ends as the experiment
does: its last step is a validation step (val_check_interval 0.1 of 878 steps = 87).
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

STEPS = 87
TARGETS = {"startup": 3.5, "tail": 2.0}  # seconds, on the 2-core CPU of docs/performance.md


def wall(cmd: list[str], cwd: Path) -> float:
    """Seconds from launch to exit of `cmd`, which must succeed."""
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"bench: `{' '.join(cmd)}` exited {proc.returncode}: {proc.stderr[-2000:]}")
    return seconds


def age_after_lightning_import(cwd: Path) -> float:
    """Seconds from launch to the end of `import pytorch_lightning` (its exit not counted)."""
    code = (
        "import pytorch_lightning\nfrom bigtrain.callbacks.meter import process_age_s\nprint(process_age_s())"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, check=True)
    return float(proc.stdout.strip().splitlines()[-1])


def one_run(workdir: Path, n: int, steps: int) -> dict:
    """One bigtrain run: (wall, first step, last step) seconds since its launch."""
    run_dir = workdir / f"run{n}"
    cmd = [sys.executable, "-m", "bigtrain", "+experiment=gpt_stdlib", f"trainer.max_steps={steps}"]
    seconds = wall([*cmd, f"hydra.run.dir={run_dir}"], workdir)
    timing = json.loads((run_dir / "results.json").read_text())["timing"]
    return {"wall": seconds, "first_step": timing["first_step_s"], "last_step": timing["last_step_s"]}


def measure(reps: int, workdir: Path, steps: int = STEPS) -> list[dict]:
    """`reps` rounds of the three commands, the order reversed every other round."""
    torch_cmd = [sys.executable, "-c", "import torch"]
    rounds = []
    for n in range(reps):
        got: dict = {}
        order = ["torch", "lightning", "bigtrain"]
        for name in order if n % 2 == 0 else order[::-1]:
            if name == "bigtrain":
                got.update(one_run(workdir, n, steps))
            elif name == "torch":
                got[name] = wall(torch_cmd, workdir)
            else:
                got[name] = age_after_lightning_import(workdir)
        rounds.append(got)
    return rounds


def _stat(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def rows(rounds: list[dict], cases: list[str]) -> list[dict]:
    """The startup and tail rows (seconds, and start-up as a ratio to importing torch)."""
    torch_s = [r["torch"] for r in rounds]
    out = []
    if "startup" in cases:
        startup = [r["first_step"] for r in rounds]
        own = [r["first_step"] - r["lightning"] for r in rounds]
        out.append(
            {
                "case": "startup",
                "unit": "s",
                "title": "launch to first optimizer step, +experiment=gpt_stdlib",
                "seconds": _stat(startup),
                "target": TARGETS["startup"],
                "over_import_torch": _stat([s / t for s, t in zip(startup, torch_s, strict=True)]),
                "import_torch": _stat(torch_s),
                "import_pytorch_lightning": _stat([r["lightning"] for r in rounds]),
                "after_lightning_import": _stat(own),
                "reps": len(rounds),
            }
        )
    if "tail" in cases:
        tail = [r["wall"] - r["last_step"] for r in rounds]
        out.append(
            {
                "case": "tail",
                "unit": "s",
                "title": "last optimizer step to exit, +experiment=gpt_stdlib",
                "seconds": _stat(tail),
                "target": TARGETS["tail"],
                "reps": len(rounds),
            }
        )
    return out


def markdown(rows_: list[dict]) -> list[str]:
    """Table lines for the startup and tail rows."""
    out = [
        "| case | target | median (repeats) | min-max | also measured (medians) |",
        "|---|---|---|---|---|",
    ]
    for r in rows_:
        s, t = r["seconds"], r["target"]
        verdict = "met" if s["median"] <= t else "MISSED"
        extra = ""
        if r["case"] == "startup":
            extra = (
                f"{r['over_import_torch']['median']:.2f}x `import torch` ({r['import_torch']['median']:.2f} s); "
                f"`import pytorch_lightning` {r['import_pytorch_lightning']['median']:.2f} s; "
                f"after that import {r['after_lightning_import']['median']:.2f} s"
            )
        out.append(
            f"| {r['title']} | <= {t:.1f} s: {verdict} | **{s['median']:.2f} s** ({r['reps']}) "
            f"| {s['min']:.2f}-{s['max']:.2f} s | {extra} |"
        )
    return out
