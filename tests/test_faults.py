"""Whole runs under faults: the real command, killed with SIGKILL at random steps and once in the
middle of a checkpoint write, resumed each time, must end with the weights of a run that was
never interrupted; and a long run must keep its memory flat."""

from __future__ import annotations

import mmap
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import bigtrain
from bigtrain.training.checkpoint_files import PARTIAL_SUFFIX
from conftest import QUIET, bigtrain_cmd, read_results

# 20 steps an epoch (1257 training samples: 19 of 64 and one of 41), 8 epochs = 160 steps, a
# checkpoint every 4 steps; the default cosine schedule (the config does not change on resume).
RUN = [
    *QUIET,
    "model=mlp/tiny",
    "callbacks.plots=false",
    "trainer.max_epochs=8",
    "trainer.limit_val_batches=2",
    "trainer.limit_test_batches=2",
    "callbacks.checkpoint.every_n_train_steps=4",
]


# One torch thread: a 2,410-parameter model gains nothing from more, and on a busy 2-core
# machine threads spinning for tiny kernels make each step ten times slower.
ONE_THREAD = {"OMP_NUM_THREADS": "1"}


FAULT_LAUNCH = Path(__file__).parent / "fault_launch.py"


def _start(args: list[str], cwd: Path, kill_in_save: int | None = None) -> subprocess.Popen:
    full_env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    full_env.update(ONE_THREAD)
    # With kill_in_save=N, the tests' launcher kills the process half-way through its Nth save.
    launch = [] if kill_in_save is None else [str(FAULT_LAUNCH), str(kill_in_save)]
    return subprocess.Popen(
        [sys.executable, *launch, "-m", "bigtrain", *args],
        cwd=cwd,
        env=full_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def _kill_after_first_checkpoint(proc: subprocess.Popen, ckpt_dir: Path, rng: random.Random) -> bool:
    """SIGKILL `proc` at a random moment after it has written a new checkpoint; False if it ended first."""
    before = {p: p.stat().st_mtime_ns for p in ckpt_dir.glob("*.ckpt")} if ckpt_dir.is_dir() else {}
    deadline = time.monotonic() + 240
    while proc.poll() is None and time.monotonic() < deadline:
        now = {p: p.stat().st_mtime_ns for p in ckpt_dir.glob("*.ckpt")} if ckpt_dir.is_dir() else {}
        if now != before:
            time.sleep(rng.uniform(0.0, 0.3))  # somewhere in the following steps (or saves)
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                return True
            break
        time.sleep(0.02)
    proc.wait()
    return False


@pytest.mark.slow
def test_sigkill_at_random_steps_and_mid_save_then_resume_equals_uninterrupted(tmp_path):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in the killed processes: the same kernels, the same bits
    try:
        reference = bigtrain.train(RUN, run_dir=tmp_path / "reference")
    finally:
        torch.set_num_threads(threads)
    rng = random.Random(int(time.time()))
    run_dir = tmp_path / "run"
    ckpt_dir = run_dir / "checkpoints"

    # 1. A kill inside a checkpoint write: the 3rd save of the process dies half-written.
    proc = _start([*RUN, f"hydra.run.dir={run_dir}"], tmp_path, kill_in_save=3)
    proc.wait(timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read()[-2000:]
    assert list(ckpt_dir.glob(f".*{PARTIAL_SUFFIX}")), "the interrupted save left its partial file"
    steps = [torch.load(p, weights_only=True)["global_step"] for p in ckpt_dir.glob("*.ckpt")]
    assert steps and max(steps) > 0  # the complete checkpoints before it are intact

    # 2. Kills at random moments of training, each followed by a resume.
    kills = attempts = 0
    while kills < 2 and attempts < 4:
        attempts += 1
        proc = _start(["resume=run"], tmp_path)
        if not _kill_after_first_checkpoint(proc, ckpt_dir, rng):
            break  # it finished before the kill
        kills += 1
    assert kills >= 1

    # 3. The last resume runs to the end.
    done = bigtrain_cmd("resume=run", cwd=tmp_path, env=ONE_THREAD)
    assert done.returncode == 0, done.stderr[-3000:]
    results = read_results(run_dir)
    assert results["status"] == "completed" and results["resumed"] == kills + 1  # kills, then the last
    assert results["global_step"] == reference["global_step"] == 160
    ours = torch.load(ckpt_dir / "last.ckpt", weights_only=True)["state_dict"]
    theirs = torch.load(tmp_path / "reference" / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    for key in theirs:
        assert torch.equal(ours[key], theirs[key]), key
    assert results["test"] == reference["test"]
    assert not list(ckpt_dir.glob(f".*{PARTIAL_SUFFIX}"))


@pytest.mark.slow
def test_ten_thousand_steps_keep_resident_memory_flat(tmp_path):
    """10,000 optimizer steps of the tiny MLP (global batch 8: 157 steps an epoch, 64 epochs
    with a short validation and two checkpoint writes each); RSS after warm-up (10% of the
    steps) must grow by less than 5%. Training metrics and the logger are off to keep the run
    short; validation, checkpointing, the loops and the data position are all exercised."""
    out = bigtrain_cmd(
        *QUIET,
        "model=mlp/tiny",
        "data.batch_size=8",
        "trainer.max_steps=10000",
        "trainer.max_epochs=-1",
        "trainer.limit_val_batches=1",
        "trainer.limit_test_batches=1",
        "trainer.log_every_n_steps=50",
        "callbacks.plots=false",
        "metrics.train=false",
        "logger=none",
        "callbacks.lr_monitor=false",
        "hydra.run.dir=run",
        cwd=tmp_path,
        env=ONE_THREAD,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    results = read_results(tmp_path / "run")
    mem = results["memory"]
    # Sampled at the end of the first training batch at or after step 1000.
    assert results["global_step"] == 10000 and mem["warm_step"] == 1000
    growth = (mem["rss_mb_after_warm_max"] - mem["rss_mb_warm"]) / mem["rss_mb_warm"]
    print(
        f"RSS warm {mem['rss_mb_warm']} MiB, largest after {mem['rss_mb_after_warm_max']}, "
        f"last {mem['rss_mb_last']}, process peak {mem['rss_mb_peak']}: +{growth:.2%}"
    )
    # The OS's high-water mark includes every moment, the largest sample only batch ends.
    assert mem["rss_mb_peak"] >= mem["rss_mb_after_warm_max"] - 1
    assert growth < 0.05, mem


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="needs /proc")
def test_rss_reading_follows_this_process_and_a_forked_child():
    """The memory watch's RSS agrees with the kernel's VmRSS, sees 64 MiB being touched, and a
    forked child reads its own memory, not the parent's through an inherited descriptor."""
    from bigtrain.callbacks.memory import rss_mb

    def vm_rss() -> float:
        line = next(x for x in Path("/proc/self/status").read_text().splitlines() if x.startswith("VmRSS:"))
        return int(line.split()[1]) / 1024

    before = rss_mb()
    assert abs(before - vm_rss()) < 2
    # 64 MiB of fresh pages, written so every page is resident (a fresh mapping: memory that
    # earlier tests freed may still be resident in the allocator, and reusing it adds nothing)
    block = mmap.mmap(-1, 64 * 2**20)
    block.write(b"\x01" * (64 * 2**20))
    assert rss_mb() - before > 60
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its own pages grow by 128 MiB, the parent's do not
        try:
            start = rss_mb()
            extra = b"\x01" * (128 * 2**20)  # no torch here: its thread pool does not survive a fork
            os.write(write, f"{start} {rss_mb()} {vm_rss()} {extra[-1]}".encode())
        finally:
            os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    start, grown, kernel, _ = map(float, os.read(read, 200).split())
    assert grown - start > 120 and abs(grown - kernel) < 2
    assert rss_mb() - before < 80  # the parent did not see the child's pages
    block.close()
