"""bigtrain on a real SLURM controller and node (scripts/slurm/local_cluster.sh start).

Jobs run the shipped sbatch script and the submitit launcher on CPUs; the module is skipped
when no controller answers `sinfo`. About 3 minutes on 2 cores: two 10-epoch jobs side by side
(one preempted and requeued, one not), a 2-task DDP job and a two-job submitit multirun.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import QUIET, bigtrain_cmd

pytestmark = pytest.mark.slurm

ROOT = Path(__file__).resolve().parents[1]
SBATCH_1NODE = ROOT / "scripts" / "slurm" / "train_1node.sbatch"
# Long enough (10 epochs) that the signal sent after the first epoch lands before the last one;
# dropout so that a resume that lost the random state would not match.
PREEMPT_RUN = [
    *QUIET,
    "trainer.accelerator=cpu",
    "model=mlp/tiny",
    "model.dropout=0.2",
    "trainer.max_epochs=10",
    "callbacks.plots=false",
]


def _slurm(*args: str, timeout: float = 30) -> str:
    return subprocess.run(args, check=True, capture_output=True, text=True, timeout=timeout).stdout.strip()


@pytest.fixture(scope="module", autouse=True)
def cluster():
    if shutil.which("sinfo") is None:
        pytest.skip("no SLURM client (sinfo); start a local cluster: scripts/slurm/local_cluster.sh start")
    try:
        _slurm("sinfo", "-h", timeout=10)
    except (subprocess.SubprocessError, OSError):
        pytest.skip("sinfo reaches no SLURM controller; start one: scripts/slurm/local_cluster.sh start")


def _job_env() -> dict[str, str]:
    """The submitting environment (sbatch exports it), with this interpreter's bigtrain."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["BIGTRAIN"] = f"{sys.executable} -m bigtrain"
    return env


def submit(cwd: Path, *sbatch_args: str, overrides: list[str]) -> str:
    out = subprocess.run(
        ["sbatch", "--parsable", f"--chdir={cwd}", *sbatch_args, str(SBATCH_1NODE), *overrides],
        env=_job_env(),
        check=True,
        capture_output=True,
        text=True,
    )
    return out.stdout.strip().split(";")[0]


def state(job: str) -> str:
    fields = dict(f.split("=", 1) for f in _slurm("scontrol", "show", "job", job, "-o").split() if "=" in f)
    return fields.get("JobState", "UNKNOWN")


def wait_for(predicate, timeout: float, what: str, poll: float = 0.25):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def wait_done(job: str, log: Path, timeout: float = 240) -> str:
    final = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY")
    result = wait_for(lambda: state(job) in final and state(job), timeout, f"job {job}", poll=1)
    if result != "COMPLETED":
        pytest.fail(f"job {job} ended {result}:\n{log.read_text() if log.exists() else '(no log)'}")
    return result


@pytest.fixture(scope="module")
def preempted_and_reference(tmp_path_factory):
    """Two identical sbatch runs; the first gets USR1 after its first epoch and is requeued."""
    cwd = tmp_path_factory.mktemp("preempt")
    overrides = [*PREEMPT_RUN, "name=pre"]
    job = submit(cwd, overrides=overrides)
    ref = submit(cwd, overrides=overrides)
    run_dir, ref_dir = cwd / "outputs/pre" / f"slurm-{job}", cwd / "outputs/pre" / f"slurm-{ref}"
    # last.ckpt exists once the first validation ran: the signal handler is installed by then.
    wait_for(lambda: (run_dir / "checkpoints" / "last.ckpt").exists(), 180, "the first epoch")
    _slurm("scancel", "--signal=USR1", job)
    # The requeued job waits ~120 s for its BeginTime; release it sooner (below).
    wait_for(lambda: state(job) == "PENDING", 120, f"job {job} to be requeued")
    first_leg = json.loads((run_dir / "results.json").read_text())
    # The requeue revoked the first leg's job credential, and slurmd refuses ("Job credential
    # revoked", the job ends FAILED) a launch of the same job id whose credential is not newer
    # than that revocation, at one-second resolution. Real clusters hold a requeued job back by
    # ~120 s (BeginTime), which is why the sbatch script never sees this; releasing it early here,
    # wait out that second first.
    time.sleep(2.0)
    _slurm("scontrol", "update", f"JobId={job}", "StartTime=now")
    wait_done(job, cwd / f"bigtrain-{job}.out")
    wait_done(ref, cwd / f"bigtrain-{ref}.out")
    return cwd, job, run_dir, ref_dir, first_leg


def test_sbatch_script_trains_to_completion(preempted_and_reference):
    cwd, _, _, ref_dir, _ = preempted_and_reference
    results = json.loads((ref_dir / "results.json").read_text())
    assert results["status"] == "completed" and results["resumed"] == 0
    assert results["global_step"] == 10 * 20  # 1257 training samples = 19 steps of 64 and one of 41
    assert results["test"]["acc"] > 0.5
    assert results["slurm_job_id"] == ref_dir.name.removeprefix("slurm-")
    assert "bigtrain: job" in (cwd / f"bigtrain-{results['slurm_job_id']}.out").read_text()


def test_preempted_job_resumes_in_same_run_dir_to_same_result(preempted_and_reference):
    cwd, job, run_dir, ref_dir, first_leg = preempted_and_reference
    # The first leg stopped at an epoch end, saved hpc_ckpt_1 and requeued itself.
    assert first_leg["status"] == "requeued"
    assert 0 < first_leg["global_step"] < 10 * 20 and first_leg["global_step"] % 20 == 0
    assert (run_dir / "hpc_ckpt_1.ckpt").is_file()
    # One run directory for both legs; the log holds both legs (--open-mode=append).
    assert sorted(p.name for p in (cwd / "outputs/pre").iterdir()) == sorted([run_dir.name, ref_dir.name])
    assert (cwd / f"bigtrain-{job}.out").read_text().count("bigtrain: job") == 2
    done, ref = (json.loads((d / "results.json").read_text()) for d in (run_dir, ref_dir))
    assert done["status"] == "completed" and done["resumed"] == 1
    assert done["global_step"] == ref["global_step"] == 200
    for stage in ("val", "test"):
        for key, value in ref[stage].items():
            assert done[stage][key] == pytest.approx(value, rel=1e-6, abs=1e-7), f"{stage}/{key}"

    # The same logger version: metrics.csv holds the epochs of both legs, value for value.
    def epoch_losses(d: Path) -> dict[int, float]:
        rows = csv.DictReader((d / "metrics.csv").open())
        return {int(r["epoch"]): float(r["val/loss"]) for r in rows if r.get("val/loss")}

    assert sorted(epoch_losses(run_dir)) == list(range(10))
    assert epoch_losses(run_dir) == pytest.approx(epoch_losses(ref_dir), rel=1e-6)


def test_ddp_across_two_slurm_tasks(tmp_path):
    # Multi-process runs are tested with the default callbacks (progress bar, tree, summary).
    overrides = ["trainer.accelerator=cpu", "strategy=ddp", "+debug=fast", "name=ddp"]
    job = submit(tmp_path, "--ntasks-per-node=2", overrides=overrides)
    log = tmp_path / f"bigtrain-{job}.out"
    wait_done(job, log)
    # Both tasks resolved the same run directory; rank zero alone wrote results.
    (run_dir,) = (tmp_path / "outputs/ddp").iterdir()
    assert run_dir.name == f"slurm-{job}"
    plan = json.loads((run_dir / "plan.json").read_text())
    assert (
        plan["batch"]["devices"] == 2
        and plan["batch"]["micro_batch_size"] * 2 == plan["batch"]["global_batch_size"]
    )
    results = json.loads((run_dir / "results.json").read_text())
    assert results["status"] == "completed" and results["global_step"] == 3
    # Lightning's INFO lines go to each rank's log file (the console shows warnings and up):
    # rank one joined as the second member of the group.
    text = (run_dir / "bigtrain_rank1.log").read_text()
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in text, text[-3000:]
    assert "completed" in log.read_text()


def test_submitit_multirun_writes_summary(tmp_path):
    proc = bigtrain_cmd(
        "--multirun",
        "hydra/launcher=slurm",
        "hydra.launcher.timeout_min=3",
        "hydra.launcher.signal_delay_s=30",
        "hydra.sweep.dir=sweep",
        "trainer.accelerator=cpu",
        "optim.lr=1e-3,1e-2",
        *QUIET,
        "+debug=fast",
        cwd=tmp_path,
        env=_job_env(),
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = list(csv.DictReader((tmp_path / "sweep" / "summary.csv").open()))
    assert len(rows) == 2
    assert {r["status"] for r in rows} == {"completed"}
    assert sorted("optim.lr=0.001" in r["overrides"] for r in rows) == [False, True]
    losses = [float(r["val/loss"]) for r in rows]
    assert losses == sorted(losses)  # best (lowest val/loss) first
    # Each job ran as a SLURM array task and wrote into its own job folder.
    for r in rows:
        results = json.loads((tmp_path / "sweep" / r["job"] / "results.json").read_text())
        assert results["slurm_job_id"] and "_" in results["slurm_job_id"]
