"""Every logger: a short run logs to each, and the logged metrics and hyperparameters are read
back through each library's public interfaces (MLflow's client, TensorBoard's event reader, the
W&B run object), never by parsing a library's private files. metrics.csv across resumes and new
columns. Secrets never reach a logger."""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import pytorch_lightning as pl

import bigtrain
from bigtrain.config import ConfigError, as_dict
from bigtrain.config.secrets import strip_secrets
from conftest import FAST, QUIET, bigtrain_cmd, make_cfg

# The last word of a key that names a secret (max_new_tokens and tokenizer are not secrets).
SECRET_KEYS = ("token", "password", "secret", "apikey", "credential", "credentials")


def _no_secret_keys(keys) -> None:
    for key in keys:
        for part in re.split(r"[/.]", key):
            words = re.split(r"[_\-\s]+", part.lower())
            assert words[-1] not in SECRET_KEYS and words[-2:] != ["api", "key"], key


def test_strip_secrets_removes_secret_looking_keys_at_any_depth():
    logged = as_dict(make_cfg())
    logged["logger"]["wandb"] = {"project": "p", "api_key": "abc123", "API-KEY": "x"}
    logged["cluster"] = {"hf_token": "hf_xyz", "db": [{"password": "pw", "host": "h"}], "client_secret": "s"}
    clean = strip_secrets(logged)
    text = json.dumps(clean)
    for value in ("abc123", "hf_xyz", '"pw"', '"s"', '"x"'):
        assert value not in text
    assert clean["cluster"]["db"] == [{"host": "h"}]
    assert clean["logger"]["wandb"] == {"project": "p"}
    assert clean["optim"] == logged["optim"]  # everything else is kept


def _docs_snippet(first_line: str) -> str:
    """The Python block of docs/logging.md that starts with `first_line`, as written there."""
    text = (Path(__file__).resolve().parents[1] / "docs" / "logging.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    (block,) = [b for b in blocks if b.startswith(first_line)]
    return block


def test_mlflow_runs_share_one_store_that_the_documented_snippet_reads(tmp_path, monkeypatch):
    """Two runs log to outputs/mlflow.db under the directory they ran in, with tags, params,
    metrics and artifacts; the docs' read-back snippet runs as written and lists them."""
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    monkeypatch.chdir(tmp_path)
    results = {}
    for lr in ("1e-3", "3e-2"):
        results[lr] = bigtrain.train(
            [
                *QUIET,
                *FAST,
                "callbacks.plots=true",
                "logger=mlflow",
                "trainer.log_every_n_steps=1",
                f"optim.lr={lr}",
                "tags=[baseline,try2]",
            ],
            run_dir=tmp_path / "outputs" / f"lr{lr}",
        )
    client = MlflowClient(tracking_uri="sqlite:///outputs/mlflow.db")
    experiment = client.get_experiment_by_name("default")
    logged = {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])}
    assert set(logged) == {"lr1e-3", "lr3e-2"}
    for lr, run in logged.items():
        tags = run.data.tags  # the run's tags reach the tracker as MLflow tags
        assert tags["baseline"] == tags["try2"] == "true" and tags["bigtrain.tags"] == "baseline,try2"
        metrics, params = run.data.metrics, run.data.params
        assert metrics["test/acc"] == pytest.approx(results[lr[2:]]["test"]["acc"], abs=1e-6)
        assert params["optim/lr"] == str(float(lr[2:]))
        assert params["model/family"] == "mlp" and params["data/name"] == "digits"
        assert len(client.get_metric_history(run.info.run_id, "train/loss")) == 3  # 3 steps, every step
        files = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"results.json", "plots"} <= files
        _no_secret_keys(params)
    out = subprocess.run(
        [sys.executable, "-c", _docs_snippet("from mlflow.tracking import MlflowClient")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.strip().splitlines()
    assert {line.split()[0] for line in lines[:2]} == {"lr1e-3", "lr3e-2"}
    assert "results.json" in lines[-1] and "plots" in lines[-1]


def test_mlflow_run_from_the_command_line_keeps_mlflow_lines_in_the_log(tmp_path):
    """MLflow's own info lines (database tables created, the experiment created) are in the
    run's bigtrain.log, not on the console."""
    pytest.importorskip("mlflow")
    out = bigtrain_cmd("logger=mlflow", "+debug=fast", "hydra.run.dir=outputs/m1", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    console = out.stdout + out.stderr
    assert "INFO" not in console and "Creating it" not in console, console[-2000:]
    assert "(completed)" in out.stdout and (tmp_path / "outputs" / "mlflow.db").is_file()
    log = (tmp_path / "outputs" / "m1" / "bigtrain.log").read_text()
    assert "mlflow" in log and "Creating it" in log


class WandbRunProbe(pl.Callback):
    """Reads the W&B run through wandb's public `Run` object while it is still open: its `config`
    and `summary`. (wandb 0.19+ writes an offline run only as its internal transaction log,
    `run-*.wandb`, whose format is wandb's own business, and no `wandb-summary.json`; the run
    object is the public view of what was logged.)"""

    def __init__(self) -> None:
        self.seen: dict = {}

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        from pytorch_lightning.loggers import WandbLogger

        (logger,) = [lg for lg in trainer.loggers if isinstance(lg, WandbLogger)]
        run = logger.experiment
        self.seen = {
            "offline": run.offline,
            "dir": Path(run.dir),
            "config": json.loads(json.dumps(dict(run.config))),
            "summary": {k: run.summary.get(k) for k in ("train/loss", "val/loss", "test/acc")},
        }


def test_wandb_offline_run_holds_the_metrics_and_config(run, monkeypatch):
    """What a W&B run received, through public interfaces only: the run object's config and
    summary (WandbRunProbe), the history rows handed to wandb's public `Run.log`, and how often
    Lightning's `WandbLogger.log_hyperparams` sent the hyperparameters."""
    wandb = pytest.importorskip("wandb")
    from pytorch_lightning.loggers import WandbLogger

    logged, hparams_calls = [], []
    real_log, real_hparams = wandb.Run.log, WandbLogger.log_hyperparams

    def log(self, data, *args, **kwargs):
        logged.append(dict(data))
        return real_log(self, data, *args, **kwargs)

    def log_hyperparams(self, params, *args, **kwargs):
        hparams_calls.append(params)
        return real_hparams(self, params, *args, **kwargs)

    monkeypatch.setattr(wandb.Run, "log", log)
    monkeypatch.setattr(WandbLogger, "log_hyperparams", log_hyperparams)
    probe = WandbRunProbe()
    monkeypatch.setattr("bigtrain.build.extra_callbacks", lambda cfg: [probe])
    results, run_dir = run([*FAST, "logger=wandb", "trainer.log_every_n_steps=1"])

    (offline,) = (run_dir / "wandb").glob("offline-run-*")
    assert probe.seen["offline"] and probe.seen["dir"].is_relative_to(offline)
    losses = [row["train/loss"] for row in logged if "train/loss" in row]
    assert len(losses) == 3  # +debug=fast: 3 training steps, logged every step
    assert [row["test/acc"] for row in logged if "test/acc" in row] == [
        pytest.approx(results["test"]["acc"], abs=1e-6)
    ]
    summary = probe.seen["summary"]
    assert summary["test/acc"] == pytest.approx(results["test"]["acc"], abs=1e-6)
    assert summary["train/loss"] == pytest.approx(losses[-1])
    config = probe.seen["config"]
    assert config["optim"]["lr"] == make_cfg().optim.lr and config["model"]["family"] == "mlp"
    assert len(hparams_calls) == 1  # sent once per run, not again for the test stage
    _no_secret_keys(json.dumps(config).split('"'))


def test_tensorboard_events_hold_the_scalars_and_the_hparams_tab(run):
    """Read back with TensorBoard's own EventAccumulator and hparams plugin parsers: the scalars
    of every step and epoch, and the hyperparameters together with the final val/test metrics
    that the HPARAMS tab shows (log_final_hparams)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import metadata

    results, run_dir = run([*FAST, "logger=default", "trainer.log_every_n_steps=1"])
    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0, "tensors": 0})
    events.Reload()
    scalars = set(events.Tags()["scalars"])
    assert {"train/loss", "val/loss", "lr/pg1", "test/acc"} <= scalars
    assert [e.step for e in events.Scalars("train/loss")] == [0, 1, 2]
    assert events.Scalars("val/loss")[-1].value == pytest.approx(results["val"]["loss"], rel=1e-6)
    final = events.Scalars("hp/test_acc")
    assert final[-1].value == pytest.approx(results["test"]["acc"], rel=1e-6)
    assert final[-1].step == results["global_step"]

    content = events.PluginTagToContent(metadata.PLUGIN_NAME)  # "hparams"
    assert metadata.PLUGIN_NAME == "hparams"
    experiment = metadata.parse_experiment_plugin_data(content[metadata.EXPERIMENT_TAG])
    shown = {m.name.tag for m in experiment.metric_infos}
    assert {"hp/val_loss", "hp/val_acc", "hp/test_loss", "hp/test_acc"} <= shown
    start = metadata.parse_session_start_info_plugin_data(content[metadata.SESSION_START_INFO_TAG])
    assert start.hparams["optim/lr"].number_value == pytest.approx(make_cfg().optim.lr)
    assert start.hparams["model/family"].string_value == "mlp"
    _no_secret_keys(start.hparams)
    assert metadata.SESSION_END_INFO_TAG in content


# --------------------------------------------------------------------------- metrics.csv


def _rows(path: Path) -> tuple[list[str], list[dict]]:
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames or []), list(reader)


def test_csv_logger_widens_the_header_without_losing_rows(tmp_path):
    from bigtrain.runs.csv_log import RunCSVLogger

    logger = RunCSVLogger(tmp_path, flush_every=1)
    logger.log_metrics({"train/loss": 1.0}, step=0)
    logger.log_metrics({"train/loss": 0.5}, step=1)
    assert _rows(tmp_path / "metrics.csv")[0] == ["step", "train/loss"]
    logger.log_metrics({"val/acc": 0.75, "val/loss": 0.9}, step=1)  # new columns, later
    logger.log_metrics({"train/loss": 0.25}, step=2)
    logger.finalize("success")
    header, rows = _rows(tmp_path / "metrics.csv")
    assert header == ["step", "train/loss", "val/acc", "val/loss"]
    assert [(r["step"], r["train/loss"], r["val/acc"]) for r in rows] == [
        ("0", "1.0", ""),
        ("1", "0.5", ""),
        ("1", "", "0.75"),
        ("2", "0.25", ""),
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.csv"]  # no temporary file left


def test_csv_logger_of_a_resumed_run_appends_and_a_new_run_starts_afresh(tmp_path):
    from bigtrain.runs.csv_log import RunCSVLogger

    first = RunCSVLogger(tmp_path)
    first.log_metrics({"train/loss": 1.0}, step=0)
    first.finalize("success")
    resumed = RunCSVLogger(tmp_path, append=True)
    resumed.log_metrics({"train/loss": 0.5}, step=1)
    resumed.log_metrics({"lr/pg1": 0.1, "train/loss": 0.25}, step=2)  # a column the file lacks
    resumed.finalize("success")
    header, rows = _rows(tmp_path / "metrics.csv")
    assert header == ["lr/pg1", "step", "train/loss"]
    assert [(r["step"], r["train/loss"], r["lr/pg1"]) for r in rows] == [
        ("0", "1.0", ""),
        ("1", "0.5", ""),
        ("2", "0.25", "0.1"),
    ]
    fresh = RunCSVLogger(tmp_path)  # not resuming: the old file is replaced at the first save
    fresh.log_metrics({"train/loss": 2.0}, step=0)
    fresh.finalize("success")
    assert [r["train/loss"] for r in _rows(tmp_path / "metrics.csv")[1]] == ["2.0"]


def test_resumed_run_keeps_the_rows_of_metrics_csv(tmp_path):
    import bigtrain

    run_dir = tmp_path / "run"
    overrides = [*FAST, "logger=csv", "trainer.log_every_n_steps=1", "callbacks.plots=false"]
    bigtrain.train([*overrides, "trainer.max_epochs=1"], run_dir=run_dir)
    before = _rows(run_dir / "metrics.csv")[1]
    bigtrain.resume(run_dir, ["trainer.max_epochs=2"])
    after = _rows(run_dir / "metrics.csv")[1]
    assert after[: len(before)] == before  # the first run's rows, unchanged
    steps = [int(r["step"]) for r in after if r.get("train/loss")]
    assert steps == [0, 1, 2, 3, 4, 5]


def test_missing_logger_package_is_a_config_error(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a)
    )
    with pytest.raises(ConfigError, match=r"pip install 'bigtrain\[mlflow\]'"):
        make_cfg(["logger=mlflow"])
