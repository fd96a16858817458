"""Run-time guarantees under real faults, each through the real command in a subprocess (`slow`):
one owner per run directory, last.ckpt after every epoch and at the end, checkpoints that prove
their bytes, a failed resume that keeps a completed run's results, a moved run directory, SIGTERM
and SIGINT, a full and a read-only file system in the middle of a run. The faults are real: a
second process, a signal sent from here, a tmpfs filled or remounted read-only while the run
waits at a chosen step (tests/fault_callbacks.py holds it there).

The fast tests at the end hold the same mechanisms without training: the lock against another
process, the digest against a flipped byte and a kill between its two renames, and the re-rooted
checkpoint state."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bigtrain.runs.checkpointing import inspect_checkpoint
from bigtrain.training.checkpoint_files import PARTIAL_SUFFIX, save_atomic
from conftest import QUIET, bigtrain_cmd, read_results
from fault_callbacks import fill, gate_at, release, start_run, wait_at_gate

TESTS = Path(__file__).parent
# 5 optimizer steps an epoch, 3 epochs; a step checkpoint every 3 steps. `mode=max` on val/loss
# keeps the best checkpoint at epoch 0 (the loss falls), so last.ckpt and the best differ.
RUN = [
    *QUIET,
    "model=mlp/tiny",
    "sched=constant",
    "callbacks.plots=false",
    "logger=csv",
    "trainer.max_epochs=3",
    "trainer.limit_train_batches=5",
    "trainer.limit_val_batches=2",
    "trainer.limit_test_batches=2",
    "callbacks.checkpoint.every_n_train_steps=3",
    "callbacks.checkpoint.mode=max",
]
# One torch thread (the same kernels, the same bits, in every process); tests/ for the callbacks.
ENV = {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(TESTS)}


def _cmd(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return bigtrain_cmd(*args, cwd=cwd, env=ENV)


def start(args: list[str], cwd: Path) -> subprocess.Popen:
    """The command in the background; its stderr is kept for the one line."""
    return start_run(args, cwd, ENV)


def _files(run_dir: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run_dir)): p.read_bytes() for p in sorted(run_dir.rglob("*")) if p.is_file()}


def _weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]


def _assert_same_end(run_dir: Path, reference: tuple[dict, Path]) -> None:
    ours, theirs = _weights(run_dir), _weights(reference[1])
    assert ours.keys() == theirs.keys()
    for key in theirs:
        assert torch.equal(ours[key], theirs[key]), key
    results = read_results(run_dir)
    assert results["status"] == "completed" and results["global_step"] == reference[0]["global_step"]
    assert results["test"] == reference[0]["test"] and results["val"] == reference[0]["val"]
    assert results["best_checkpoint"] == reference[0]["best_checkpoint"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> tuple[dict, Path]:
    """The uninterrupted run every resumed one must end like."""
    cwd = tmp_path_factory.mktemp("reference")
    out = _cmd(*RUN, "hydra.run.dir=run", cwd=cwd)
    assert out.returncode == 0, out.stderr[-3000:]
    results = read_results(cwd / "run")
    assert results["best_checkpoint"] == "checkpoints/epoch000-step000005.ckpt"  # not the last epoch
    return results, cwd / "run"


@pytest.fixture(scope="module")
def two_epochs(tmp_path_factory) -> Path:
    """A completed run of the first 2 of the reference's 3 epochs (each test copies it)."""
    cwd = tmp_path_factory.mktemp("two_epochs")
    out = _cmd(*RUN, "trainer.max_epochs=2", "hydra.run.dir=run", cwd=cwd)
    assert out.returncode == 0, out.stderr[-3000:]
    return cwd / "run"


# --------------------------------------------------------------------------- one owner


@pytest.mark.slow
@pytest.mark.parametrize("second", ["new_run", "resume"])
def test_a_live_run_directory_refuses_a_second_run_and_a_resume(second, tmp_path):
    gate = tmp_path / "gate"
    first = start([*RUN, "hydra.run.dir=run", gate_at(3, gate)], tmp_path)
    wait_at_gate(first, gate)
    before = _files(tmp_path / "run")
    holder = f"in use by PID {first.pid} on host {socket.gethostname()}"
    # The run uses this test's own callback (code outside bigtrain): its resume types trust_code.
    args = [*RUN, "hydra.run.dir=run"] if second == "new_run" else ["resume=run", "trust_code=true"]
    out = _cmd(*args, cwd=tmp_path)  # refused before Hydra writes anything
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2 and len(lines) == 1, out.stderr[-3000:]
    assert lines[0].startswith("bigtrain: error: run directory") and holder in lines[0]
    if second == "new_run":  # the run itself refuses too (a second run past the command's check)
        code = (
            "import sys; from bigtrain import compose; from bigtrain.runs.validate import validate\n"
            "from bigtrain.config import ConfigError; from bigtrain.runs.train import train\n"
            "try:\n    train(validate(compose(sys.argv[1:])), 'run')\n"
            "except ConfigError as e:\n    print(e); sys.exit(2)\n"
        )
        direct = subprocess.run(
            [sys.executable, "-c", code, *RUN], cwd=tmp_path, capture_output=True, text=True, timeout=300
        )
        assert direct.returncode == 2 and holder in direct.stdout, direct.stdout + direct.stderr[-3000:]
    assert _files(tmp_path / "run") == before  # nothing of the live run was touched
    code, err = release(first, gate)
    assert code == 0, err[-20:]
    results = read_results(tmp_path / "run")
    assert results["status"] == "completed" and results["global_step"] == 15


# --------------------------------------------------------------------------- last.ckpt


@pytest.mark.slow
def test_last_checkpoint_after_every_epoch_and_the_final_weights(reference, tmp_path):
    marker, final = tmp_path / "killed", tmp_path / "final.pt"
    extra = (
        f"callbacks.extra=[{{_target_: fault_callbacks.KillAtEpochStart, epoch: 2, marker: '{marker}'}},"
        f"{{_target_: fault_callbacks.SaveFinalWeights, path: '{final}'}}]"
    )
    killed = _cmd(*RUN, "hydra.run.dir=run", extra, cwd=tmp_path)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    ckpts = tmp_path / "run" / "checkpoints"
    # Killed as epoch 2 began: last.ckpt is epoch 1's end; the best (monitored) one is epoch 0.
    assert inspect_checkpoint(ckpts / "last.ckpt")["global_step"] == 10
    assert inspect_checkpoint(ckpts / "epoch000-step000005.ckpt")["global_step"] == 5
    assert not list(ckpts.glob("epoch001*"))
    resumed = _cmd("resume=run", "trust_code=true", cwd=tmp_path)  # the test's own callbacks
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"continuing from {ckpts / 'last.ckpt'}" in resumed.stdout
    weights = torch.load(final, weights_only=True)
    last = _weights(tmp_path / "run")
    assert weights.keys() == last.keys() and all(torch.equal(weights[k], last[k]) for k in weights)
    _assert_same_end(tmp_path / "run", reference)


# --------------------------------------------------------------------------- verified checkpoints


def _copy(run: Path, tmp_path: Path) -> Path:
    shutil.copytree(run, tmp_path / "run")
    return tmp_path / "run"


@pytest.mark.slow
def test_a_flipped_byte_in_the_newest_checkpoint_is_named_and_skipped(two_epochs, reference, tmp_path):
    run = _copy(two_epochs, tmp_path)
    last = run / "checkpoints" / "last.ckpt"
    weight = max(torch.load(last, weights_only=True)["state_dict"].values(), key=torch.numel)
    raw = bytearray(last.read_bytes())
    at = raw.find(weight.numpy().tobytes())
    assert at > 0
    raw[at + weight.numel() * 2] ^= 0x10  # one bit of one weight, in the middle of the file
    last.write_bytes(bytes(raw))
    torch.load(last, weights_only=True)  # still loads: only the digest can tell
    out = _cmd("resume=run", "trainer.max_epochs=3", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "skipping checkpoint last.ckpt does not match its digest in last.ckpt.sha256" in out.stdout
    assert f"continuing from {run / 'checkpoints' / 'step000009.ckpt'}" in out.stdout
    _assert_same_end(run, reference)


@pytest.mark.slow
def test_checkpoints_of_another_model_or_without_optimizer_state_are_skipped(two_epochs, reference, tmp_path):
    run = _copy(two_epochs, tmp_path)
    ckpts = run / "checkpoints"
    good = torch.load(ckpts / "last.ckpt", weights_only=True)
    wrong = {**good, "global_step": 99, "state_dict": dict(good["state_dict"])}
    name = next(k for k, v in wrong["state_dict"].items() if v.dim() == 2)
    wrong["state_dict"][name] = torch.zeros(3, 3)
    save_atomic(wrong, ckpts / "zz-other-model.ckpt")  # a valid digest: skipped for its contents
    save_atomic(
        {k: v for k, v in {**good, "global_step": 99}.items() if k != "optimizer_states"},
        ckpts / "zz-weights.ckpt",
    )
    out = _cmd("resume=run", "trainer.max_epochs=3", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert f"skipping checkpoint zz-other-model.ckpt does not fit the model: {name}" in out.stdout
    assert (
        "skipping checkpoint zz-weights.ckpt cannot continue a run: it has no optimizer_states" in out.stdout
    )
    assert f"continuing from {ckpts / 'last.ckpt'}" in out.stdout
    _assert_same_end(run, reference)


@pytest.mark.slow
def test_a_failed_resume_keeps_the_completed_results(two_epochs, tmp_path):
    run = _copy(two_epochs, tmp_path)
    last = run / "checkpoints" / "last.ckpt"
    ckpt = torch.load(last, weights_only=True)
    groups = ckpt["optimizer_states"][0]["param_groups"]
    groups.append({**groups[0], "params": []})  # a checkpoint of another optimizer setup
    save_atomic(ckpt, last)  # intact and of this model: only Lightning's restore fails
    results, metrics = (run / "results.json").read_bytes(), (run / "metrics.csv").read_bytes()
    out = _cmd("resume=run", "trainer.max_epochs=3", cwd=tmp_path)
    assert out.returncode != 0
    assert (run / "results.json").read_bytes() == results and (run / "metrics.csv").read_bytes() == metrics
    error = json.loads((run / "resume_error.json").read_text())
    assert error["status"] == "failed" and "parameter groups" in error["error"]


@pytest.mark.slow
def test_a_moved_run_directory_resumes_to_the_same_best_checkpoint(two_epochs, reference, tmp_path):
    (tmp_path / "moved").mkdir()
    run = _copy(two_epochs, tmp_path).rename(tmp_path / "moved" / "here")
    out = _cmd("resume=moved/here", "trainer.max_epochs=3", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "dirpath has changed" not in (run / "bigtrain.log").read_text() + out.stderr
    _assert_same_end(run, reference)  # the same best checkpoint (epoch 0) and its test metrics
    state = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["callbacks"]
    assert str(tmp_path) not in repr(state)  # paths relative to the checkpoint folder


# --------------------------------------------------------------------------- signals


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_mid_epoch_checkpoints_that_step_then_resume_ends_like_uninterrupted(
    signum, reference, tmp_path
):
    gate = tmp_path / "gate"
    proc = start([*RUN, "hydra.run.dir=run", gate_at(7, gate)], tmp_path)  # epoch 1, batch 2 of 5
    wait_at_gate(proc, gate)
    proc.send_signal(signum)
    code, err = release(proc, gate)
    run = tmp_path / "run"
    name = signal.Signals(signum).name
    assert code == 128 + signum, err[-20:]
    assert err[-1] == (
        f"bigtrain: interrupted by {name} at step 7: saved checkpoints/last.ckpt; "
        f"continue with: bigtrain resume={run}"
    )
    results = read_results(run)
    assert results["status"] == "interrupted" and results["signal"] == name and results["global_step"] == 7
    assert inspect_checkpoint(run / "checkpoints" / "last.ckpt")["global_step"] == 7
    if signum == signal.SIGINT:
        return  # the same path as SIGTERM from here on
    out = _cmd("resume=run", "trust_code=true", cwd=tmp_path)  # the test's own callback
    assert out.returncode == 0, out.stderr[-3000:]
    assert f"continuing from {run / 'checkpoints' / 'last.ckpt'}" in out.stdout
    _assert_same_end(run, reference)


# --------------------------------------------------------------------------- storage faults


@pytest.fixture
def small_tmpfs(tmp_path):
    """A real 24 MiB tmpfs (needs mount rights; skipped where the test cannot mount)."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(mnt)], capture_output=True
    )
    if mounted.returncode:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.decode().strip()}")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=True)


def _assert_one_line_naming(err: list[str], what: str, run: Path) -> None:
    assert not any("Traceback" in line for line in err), "\n".join(err[-30:])
    assert [line for line in err if line.startswith("bigtrain:")] == [err[-1]]
    assert err[-1].startswith(f"bigtrain: the run stopped at step 9: {what}"), err[-1]
    assert "the last good checkpoint is checkpoints/last.ckpt (step 6)" in err[-1]
    assert f"then continue with: bigtrain resume={run}" in err[-1]
    assert inspect_checkpoint(run / "checkpoints" / "last.ckpt")["global_step"] == 6  # intact, verified
    assert not list((run / "checkpoints").glob(f".*{PARTIAL_SUFFIX}"))


@pytest.mark.slow
def test_a_full_disk_mid_run_ends_with_one_line_and_resumes(small_tmpfs, reference, tmp_path):
    gate, run = tmp_path / "gate", small_tmpfs / "run"
    proc = start([*RUN, f"hydra.run.dir={run}", gate_at(7, gate)], tmp_path)
    wait_at_gate(proc, gate)
    filler = fill(small_tmpfs)  # the step checkpoint at step 9 finds no room
    code, err = release(proc, gate)
    assert code == 1
    _assert_one_line_naming(err, "its file system is full (No space left on device writing checkpoints/", run)
    filler.unlink()
    if (run / "results.json").exists():
        results = read_results(run)
        assert results["status"] == "failed" and "No space left on device" in results["error"]
    else:
        assert "results.json could not be written either (No space left on device)" in err[-1]
    out = _cmd(f"resume={run}", "trust_code=true", cwd=tmp_path)  # the test's own callback
    assert out.returncode == 0, out.stderr[-3000:]
    _assert_same_end(run, reference)


@pytest.mark.slow
def test_a_run_directory_made_read_only_mid_run_ends_with_one_line(small_tmpfs, tmp_path):
    gate, run = tmp_path / "gate", small_tmpfs / "run"
    # Hydra's log file stays open for writing, and an open file blocks a read-only remount.
    log = f"hydra.job_logging.handlers.file.filename={tmp_path / 'bigtrain.log'}"
    proc = start([*RUN, f"hydra.run.dir={run}", log, gate_at(7, gate)], tmp_path)
    wait_at_gate(proc, gate)
    ro = subprocess.run(["mount", "-o", "remount,ro", str(small_tmpfs)], capture_output=True, text=True)
    if ro.returncode:
        release(proc, gate)
        pytest.skip(f"cannot remount the tmpfs read-only: {ro.stderr.strip()}")
    try:
        code, err = release(proc, gate)
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(small_tmpfs)], check=True)
    assert code == 1
    _assert_one_line_naming(err, "its file system became read-only (Read-only file system writing", run)
    assert "results.json could not be written either (Read-only file system)" in err[-1]
    assert not (run / "results.json").exists()


# --------------------------------------------------------------------------- the mechanisms, fast

HOLDER = (
    "import sys; from bigtrain.runs.lock import hold\n"
    "with hold(sys.argv[1]):\n    print('held', flush=True); sys.stdin.read()\n"
)


def test_the_lock_refuses_while_its_process_lives_and_frees_when_it_is_killed(tmp_path, monkeypatch):
    from bigtrain.runs.lock import LOCK_FILE, RunDirBusy, check_free, hold

    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(tmp_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        expected = f"in use by PID {holder.pid} on host {socket.gethostname()}"
        with pytest.raises(RunDirBusy, match=expected):
            check_free(tmp_path)
        with pytest.raises(RunDirBusy, match=expected), hold(tmp_path):
            pass
        monkeypatch.setenv("LOCAL_RANK", "1")  # a rank above zero joins: it takes no lock
        with hold(tmp_path):
            check_free(tmp_path)
        monkeypatch.delenv("LOCAL_RANK")
    finally:
        holder.kill()
        holder.wait()
    check_free(tmp_path)  # SIGKILL freed it: no stale lock
    with hold(tmp_path):
        assert (tmp_path / LOCK_FILE).read_text().split()[0] == str(os.getpid())
    check_free(tmp_path)


def test_the_digest_survives_a_kill_between_its_renames_and_catches_a_flipped_byte(tmp_path):
    from bigtrain.training.checkpoint_files import CheckpointError, check_digest, digest_path, write_digests

    path = tmp_path / "last.ckpt"
    save_atomic({"w": torch.zeros(1000)}, path)
    first = digest_path(path).read_text()
    second = save_atomic({"w": torch.ones(1000)}, path)
    assert check_digest(path) and digest_path(path).read_text().split()[0] == second
    assert first.split()[1] == "last.ckpt" and first != digest_path(path).read_text()
    # A kill after the digest file got both digests and before the new file got its name:
    old = first.split()[0]
    write_digests(path, ["0" * 64, old])
    save_atomic({"w": torch.zeros(1000)}, tmp_path / "zeros.ckpt")
    (tmp_path / "zeros.ckpt").replace(path)  # the file still in place is the one of `old`
    assert check_digest(path)
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    path.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="does not match its digest in last.ckpt.sha256"):
        check_digest(path)


def test_checkpoint_state_is_relative_and_rerooted_in_the_folder_it_is_loaded_from(tmp_path):
    from bigtrain.callbacks.checkpoints import RunModelCheckpoint

    old_dir, new_dir = tmp_path / "old" / "checkpoints", tmp_path / "new" / "checkpoints"
    saver = RunModelCheckpoint(dirpath=old_dir, monitor="val/loss")
    saver.best_model_path = str(old_dir.resolve() / "epoch000.ckpt")
    saver.best_k_models = {saver.best_model_path: torch.tensor(1.0)}
    saver.best_model_score = torch.tensor(1.0)
    state = saver.state_dict()
    assert state["best_model_path"] == "epoch000.ckpt" and list(state["best_k_models"]) == ["epoch000.ckpt"]
    assert saver.state_key.startswith("ModelCheckpoint{")  # Lightning's key: older checkpoints load
    new_dir.mkdir(parents=True)
    (new_dir / "epoch000.ckpt").touch()
    for saved in (
        state,
        {**state, "dirpath": str(old_dir.resolve()), "best_model_path": saver.best_model_path},
    ):
        loader = RunModelCheckpoint(dirpath=new_dir, monitor="val/loss")
        loader.load_state_dict(saved)
        assert loader.best_model_path == str(new_dir.resolve() / "epoch000.ckpt")
        assert loader.best_model_score == 1.0
    elsewhere = RunModelCheckpoint(dirpath=tmp_path / "third", monitor="val/loss")
    elsewhere.load_state_dict(state)  # another run's state: its best file is not here
    assert elsewhere.best_model_path == "" and elsewhere.best_model_score is None
