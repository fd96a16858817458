"""Run identity under SLURM (resolvers, resume point), launcher configs and the sweep summary.

Fast: no SLURM needed. The environment variables are the ones SLURM sets in a job.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from bigtrain.cli import compose
from bigtrain.cluster.slurm import job_id, newest_hpc_checkpoint, run_id
from bigtrain.cluster.sweep import collect
from bigtrain.runs.train import start_checkpoint
from conftest import FAST, bigtrain_cmd, make_cfg

SLURM_JOB = {"SLURM_JOB_ID": "4242", "SLURM_JOB_NAME": "bigtrain", "SLURM_NTASKS": "1"}


@pytest.fixture
def in_job(monkeypatch):
    for key in ("SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID"):
        monkeypatch.delenv(key, raising=False)
    for key, value in SLURM_JOB.items():
        monkeypatch.setenv(key, value)
    return monkeypatch


def test_run_id_names_the_job_and_array_task(in_job):
    assert run_id() == "slurm-4242"
    in_job.setenv("SLURM_ARRAY_JOB_ID", "4240")
    in_job.setenv("SLURM_ARRAY_TASK_ID", "2")
    assert job_id() == "4240_2" and run_id() == "slurm-4240_2"
    # An interactive shell inside an allocation is not a job of its own: a timestamp.
    in_job.setenv("SLURM_JOB_NAME", "bash")
    assert run_id()[:2] == "20"


def test_run_dir_under_slurm_is_the_same_for_every_task(in_job):
    cfg = compose(["name=exp"], with_hydra=True)
    assert cfg.hydra.run.dir == "outputs/exp/slurm-4242"
    assert cfg.hydra.sweep.dir == "outputs/exp/multirun/slurm-4242"


def test_start_checkpoint_in_a_job_is_the_newest_hpc_checkpoint(in_job, tmp_path):
    cfg = make_cfg(FAST)
    assert start_checkpoint(cfg, tmp_path) is None  # nothing left by an earlier attempt
    for n in (1, 2, 10):
        (tmp_path / f"hpc_ckpt_{n}.ckpt").write_bytes(b"x")
    assert newest_hpc_checkpoint(tmp_path) == (tmp_path / "hpc_ckpt_10.ckpt", 10)
    assert start_checkpoint(cfg, tmp_path) == str(tmp_path / "hpc_ckpt_10.ckpt")
    # Outside SLURM a leftover checkpoint never resumes a run by itself.
    in_job.delenv("SLURM_JOB_ID")
    assert start_checkpoint(cfg, tmp_path) is None


@pytest.mark.parametrize(("accelerator", "gpus"), [("cpu", None), ("gpu", 4), ("auto", 4)])
def test_slurm_launcher_matches_trainer_devices(accelerator, gpus):
    cfg = compose(
        [
            "hydra/launcher=slurm",
            f"trainer.accelerator={accelerator}",
            "trainer.devices=4",
            "trainer.num_nodes=2",
        ],
        with_hydra=True,
    )
    launcher = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    assert launcher["_target_"].endswith("SlurmLauncher")
    assert launcher["tasks_per_node"] == 4 and launcher["nodes"] == 2
    assert launcher["gpus_per_node"] == gpus
    assert launcher["signal_delay_s"] < launcher["timeout_min"] * 60


def test_local_launcher_is_joblib():
    cfg = compose(["hydra/launcher=local"], with_hydra=True)
    assert cfg.hydra.launcher._target_.endswith("JoblibLauncher") and cfg.hydra.launcher.n_jobs == 2


def _job(sweep: Path, num: int, overrides: list[str], results: dict | None) -> None:
    (sweep / str(num) / ".hydra").mkdir(parents=True)
    (sweep / str(num) / ".hydra" / "overrides.yaml").write_text(OmegaConf.to_yaml(overrides))
    if results is not None:
        (sweep / str(num) / "results.json").write_text(json.dumps(results))


def test_collect_orders_best_first_and_keeps_jobs_without_results(tmp_path):
    _job(tmp_path, 0, ["optim.lr=0.1"], {"status": "completed", "val": {"acc": 0.7}, "global_step": 5})
    _job(tmp_path, 1, ["optim.lr=0.01"], {"status": "completed", "val": {"acc": 0.9}, "resumed": 2})
    _job(tmp_path, 2, ["optim.lr=1.0"], None)
    _job(tmp_path, 10, ["optim.lr=0.001"], {"status": "failed", "val": {}})
    rows = collect(tmp_path, "val/acc", "max")
    assert [r["job"] for r in rows] == ["1", "0", "2", "10"]
    assert [r["status"] for r in rows] == ["completed", "completed", "missing", "failed"]
    assert rows[0]["resumed"] == 2 and rows[0]["val/acc"] == 0.9
    assert [r["job"] for r in collect(tmp_path, "val/acc", "min")][:2] == ["0", "1"]


def test_multirun_with_basic_launcher_writes_summary(tmp_path):
    proc = bigtrain_cmd("--multirun", "hydra.sweep.dir=sweep", "optim.lr=1e-3,1e-1", *FAST, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = list(csv.DictReader((tmp_path / "sweep" / "summary.csv").open()))
    assert len(rows) == 2 and {r["status"] for r in rows} == {"completed"}
    by_job = {r["job"]: r for r in rows}
    for job, row in by_job.items():
        results = json.loads((tmp_path / "sweep" / job / "results.json").read_text())
        assert float(row["val/loss"]) == pytest.approx(results["val"]["loss"])
    assert float(rows[0]["val/loss"]) <= float(rows[1]["val/loss"])
    assert "val/loss first" in proc.stdout


@pytest.mark.slow
def test_multirun_with_local_launcher_runs_jobs_in_parallel_processes(tmp_path):
    proc = bigtrain_cmd(
        "--multirun",
        "hydra/launcher=local",
        "hydra.sweep.dir=sweep",
        "optim.lr=1e-3,1e-1",
        *FAST,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = list(csv.DictReader((tmp_path / "sweep" / "summary.csv").open()))
    assert len(rows) == 2 and {r["status"] for r in rows} == {"completed"}
    # joblib's loky workers ran the two jobs at the same time: each job's config was written
    # (its start) before either wrote results.json (its end). The basic launcher runs them in turn.
    spans = []
    for row in rows:
        run = tmp_path / "sweep" / row["job"]
        results = json.loads((run / "results.json").read_text())
        assert results["status"] == "completed" and results["global_step"] > 0
        spans.append((run / ".hydra" / "config.yaml").stat().st_mtime)
        spans.append((run / "results.json").stat().st_mtime)
    assert max(spans[0], spans[2]) < min(spans[1], spans[3]), spans


@pytest.mark.slow
def test_optuna_search_resumes_from_its_sqlite_study(tmp_path):
    import optuna

    args = ["--multirun", "hparams_search=optuna", "hydra.sweep.dir=sweep", *FAST]
    first = bigtrain_cmd(*args, "hydra.sweeper.n_trials=2", cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    # The same sweep again, now asked for 3 trials: only the third runs, in a new folder.
    again = bigtrain_cmd(*args, "hydra.sweeper.n_trials=3", cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]
    study = optuna.load_study(study_name="default", storage=f"sqlite:///{tmp_path}/sweep/optuna.db")
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 3
    assert len({tuple(sorted(t.params.items())) for t in study.trials}) == 3
    rows = list(csv.DictReader((tmp_path / "sweep" / "summary.csv").open()))
    assert sorted(r["job"] for r in rows) == ["0", "1", "2"]
    values = sorted(t.value for t in study.trials)
    assert [float(r["val/loss"]) for r in rows] == pytest.approx(values)


def test_unknown_launcher_and_missing_plugin_are_one_line_errors(tmp_path):
    proc = bigtrain_cmd("--multirun", "hydra/launcher=slurmm", "optim.lr=1e-3,1e-2", cwd=tmp_path)
    assert proc.returncode == 2 and not (tmp_path / "outputs").exists()
    assert proc.stderr.strip() == (
        "bigtrain: error: unknown option hydra/launcher=slurmm: did you mean hydra/launcher=slurm? "
        "choose one of basic, joblib, local, slurm, submitit_local, submitit_slurm"
    )
    # The submitit plugin made unimportable (a package of that name that fails first on the path):
    # Hydra then lacks its configs, as when the slurm extra is not installed.
    hidden = tmp_path / "hide" / "hydra_plugins" / "hydra_submitit_launcher"
    hidden.mkdir(parents=True)
    (hidden / "__init__.py").write_text("raise ImportError('not installed')\n")
    proc = bigtrain_cmd(
        "--multirun",
        "hydra/launcher=slurm",
        "optim.lr=1e-3,1e-2",
        cwd=tmp_path,
        env={"PYTHONPATH": str(tmp_path / "hide")},
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1] == (
        "bigtrain: error: hydra/launcher/submitit_slurm comes from the package hydra-submitit-launcher, "
        "which is not installed: pip install 'bigtrain[slurm]'"
    )


def test_the_summary_table_folds_long_values_and_never_cuts_them(monkeypatch, capsys):
    from bigtrain.cluster.sweep import print_table

    monkeypatch.setenv("COLUMNS", "60")  # a narrow terminal, or a log file's default width
    lrs = ["0.0015702938475610293", "0.031415926535897934"]
    rows = [
        {"job": str(i), "overrides": f"optim.lr={lr} +debug=fast", "status": "completed",
         "resumed": 0, "global_step": 3, "val/loss": 0.5 + i}
        for i, lr in enumerate(lrs)
    ]  # fmt: skip
    print_table(rows, "val/loss", "val/loss first")
    out = capsys.readouterr().out
    assert "…" not in out
    # Every digit is shown: the cells' pieces, read down the overrides column, give the values.
    cells = "".join(line.split("│")[3].strip() for line in out.splitlines() if line.count("│") >= 7)
    for lr in lrs:
        assert f"optim.lr={lr}" in cells, cells
