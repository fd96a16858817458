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


# --------------------------------------------------------------------------- the peers case
# bigtrain's gpt_stdlib run against a minimal Lightning script and a hand-written loop training
# the same GPT (startup_peers.py), each a fresh process, in the order rotated every round.
PEERS = ("bigtrain", "lightning", "hand")
PEER_TARGETS = {"first_step": 1.3, "peak_rss": 1.15, "tokens_per_s": 0.98}
# Seconds of bigtrain's tail beyond its validation and test batches (results.json
# timing.eval_batches_after_last_step_s): the test pass's setup, samples, plots, results, exit.
TAIL_BEYOND_FORWARDS_TARGET = 1.0


def measured(cmd: list[str], cwd: Path, env: dict | None = None) -> dict:
    """Run `cmd` to its end: wall seconds, peak resident memory in MiB (the rusage os.wait4
    returns for that one child), the boot-clock time just before its launch, and its stdout."""
    import os
    import tempfile

    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        launched = time.clock_gettime(time.CLOCK_BOOTTIME)
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=cwd, stdout=out, stderr=err, text=True, env=env)
        _, status, usage = os.wait4(proc.pid, 0)  # reaped here, so that its rusage is its own
        seconds = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0), err.seek(0)
        stdout, stderr = out.read(), err.read()
    if proc.returncode != 0:
        raise SystemExit(f"bench: `{' '.join(cmd)}` exited {proc.returncode}: {stderr[-2000:]}")
    return {"wall": seconds, "launched": launched, "stdout": stdout, "rss_mib": usage.ru_maxrss / 1024}


def peer_round(workdir: Path, n: int, steps: int, env: dict | None) -> dict:
    """One round: each competitor once, in an order that rotates with `n`."""
    here = Path(__file__).resolve().parent
    got: dict = {}
    for name in PEERS[n % 3 :] + PEERS[: n % 3]:
        if name == "bigtrain":
            run_dir = workdir / f"peers{n}"
            cmd = [sys.executable, "-m", "bigtrain", "+experiment=gpt_stdlib", f"trainer.max_steps={steps}"]
            m = measured([*cmd, f"hydra.run.dir={run_dir}"], workdir, env)
            results = json.loads((run_dir / "results.json").read_text())
            first, last = results["timing"]["first_step_s"], results["timing"]["last_step_s"]
            tokens = results["throughput"]["tokens_per_s"]
            forwards = results["timing"]["eval_batches_after_last_step_s"]
        else:
            m = measured([sys.executable, str(here / "startup_peers.py"), name, str(steps)], workdir, env)
            line = json.loads(m["stdout"].strip().splitlines()[-1])
            first, last = line["first_step_boot"] - m["launched"], line["last_step_boot"] - m["launched"]
            tokens, forwards = line["tokens_per_s"], 0.0  # no validation or test pass
        tail = m["wall"] - last
        got[name] = {
            "first_step": first,
            "tail": tail,
            "tail_beyond_forwards": tail - forwards,
            "peak_rss": m["rss_mib"],
            "tokens_per_s": tokens,
        }
    return got


def measure_peers(reps: int, workdir: Path, steps: int = STEPS, threads: int | None = None) -> list[dict]:
    """`reps` rounds of the three competitors; `threads` sets OMP_NUM_THREADS for all of them."""
    import os

    env = {**os.environ, "OMP_NUM_THREADS": str(threads)} if threads else None
    return [peer_round(workdir, n, steps, env) for n in range(reps)]


def peer_rows(rounds: list[dict]) -> list[dict]:
    """One row per measure: each competitor's median (min-max), and bigtrain's ratio to its peer
    (the Lightning script for start-up and memory, the hand loop for tokens/s)."""
    out = []
    for key, unit, peer in (
        ("first_step", "s", "lightning"),
        ("tail", "s", "lightning"),
        ("tail_beyond_forwards", "s", "lightning"),
        ("peak_rss", "MiB", "lightning"),
        ("tokens_per_s", "tokens/s", "hand"),
    ):
        ratios = [r["bigtrain"][key] / r[peer][key] for r in rounds]
        out.append(
            {
                "case": "peers",
                "unit": unit,
                "measure": key,
                "peer": peer,
                **{name: _stat([r[name][key] for r in rounds]) for name in PEERS},
                "ratio": _stat(ratios),
                "target": PEER_TARGETS.get(key),
                "seconds_target": TAIL_BEYOND_FORWARDS_TARGET if key == "tail_beyond_forwards" else None,
                "reps": len(rounds),
            }
        )
    return out


def peer_markdown(rows_: list[dict]) -> list[str]:
    """The peers' table."""
    out = [
        "| case | bigtrain | minimal Lightning script | hand-written loop | bigtrain / peer: median (min-max) | target |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows_:
        cells = [f"{r[n]['median']:,.2f} {r['unit']} ({r[n]['min']:,.2f}-{r[n]['max']:,.2f})" for n in PEERS]
        t, ratio = r["target"], r["ratio"]
        if r["seconds_target"] is not None:
            own = r["bigtrain"]["median"]
            verdict = (
                f"bigtrain <= {r['seconds_target']} s: {'met' if own <= r['seconds_target'] else 'MISSED'}"
            )
        elif t is None:
            verdict = "reported"
        else:
            met = ratio["median"] >= t if r["measure"] == "tokens_per_s" else ratio["median"] <= t
            verdict = f"{'>=' if r['measure'] == 'tokens_per_s' else '<='} {t}: {'met' if met else 'MISSED'}"
        out.append(
            f"| {r['measure'].replace('_', ' ')}, {r['reps']} rounds | {' | '.join(cells)} "
            f"| **{ratio['median']:.3f}** ({ratio['min']:.3f}-{ratio['max']:.3f}) vs {r['peer']} | {verdict} |"
        )
    return out
