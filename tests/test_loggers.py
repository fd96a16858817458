"""MLflow and Weights & Biases (offline): a short run logs to each, and the logged metrics and
hyperparameters are read back with the library's own readers. Secrets never reach a logger."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bigtrain.config import ConfigError, as_dict, strip_secrets
from conftest import FAST, make_cfg

SECRET_KEYS = ("token", "password", "secret", "api_key", "apikey", "credential")


def _no_secret_keys(keys) -> None:
    for key in keys:
        assert not any(word in key.lower() for word in SECRET_KEYS), key


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


def test_mlflow_logs_metrics_and_params_to_a_file_store(run):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    results, run_dir = run([*FAST, "logger=mlflow", "trainer.log_every_n_steps=1", "name=mlf"])
    store = run_dir / "mlruns"
    client = MlflowClient(tracking_uri=store.resolve().as_uri())
    experiment = client.get_experiment_by_name("mlf")
    (logged,) = client.search_runs([experiment.experiment_id])
    assert logged.info.run_name == run_dir.name
    metrics, params = logged.data.metrics, logged.data.params
    assert metrics["test/acc"] == pytest.approx(results["test"]["acc"], abs=1e-6)
    assert metrics["val/loss"] == pytest.approx(results["val"]["loss"], abs=1e-6)
    history = client.get_metric_history(logged.info.run_id, "train/loss")
    assert len(history) == 3  # +debug=fast: 3 training steps, logged every step
    assert params["optim/lr"] == str(make_cfg().optim.lr)
    assert params["model/family"] == "mlp" and params["data/name"] == "digits"
    _no_secret_keys(params)


def _leveldb_log_records(data: bytes) -> list[bytes]:
    """The records of a W&B transaction log (a .wandb file): a 7-byte file header (':W&B', magic,
    version), then LevelDB's log format: 32 KiB blocks of chunks, each with a 7-byte header
    (crc32c, little-endian length, type 1 full / 2 first / 3 middle / 4 last). wandb 0.19+ writes it
    from its Go core and ships no Python reader, so the framing is read here and the records are
    decoded with wandb's own protobuf schema."""
    assert data[:4] == b":W&B", "not a W&B transaction log"
    block, records, pending, pos = 32768, [], b"", 7
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # too little room left for a chunk header: the block is padded
            pos += block - pos % block
            continue
        length = int.from_bytes(data[pos + 4 : pos + 6], "little")
        kind = data[pos + 6]
        chunk = data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind == 0 and length == 0:
            pos += block - pos % block if pos % block else 0
            continue
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):
            records.append(pending)
            pending = b""
    return records


def _wandb_records(run_file: Path) -> tuple[list[dict], dict, int]:
    """History rows and config of an offline run, and how many config updates sent `optim`."""
    from wandb.proto import wandb_internal_pb2

    history, config, optim_updates = [], {}, 0
    for data in _leveldb_log_records(run_file.read_bytes()):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(data)
        kind = record.WhichOneof("record_type")
        if kind == "history":
            history.append(
                {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in record.history.item}
            )
        elif kind in ("config", "run"):
            updates = record.config.update if kind == "config" else record.run.config.update
            config.update({i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in updates})
            optim_updates += any(i.key == "optim" for i in updates)
    return history, config, optim_updates


def test_wandb_offline_run_holds_the_metrics_and_config(run):
    pytest.importorskip("wandb")
    results, run_dir = run([*FAST, "logger=wandb", "trainer.log_every_n_steps=1"])
    (offline,) = (run_dir / "wandb").glob("offline-run-*")
    (run_file,) = offline.glob("run-*.wandb")
    history, config, optim_updates = _wandb_records(run_file)
    losses = [row["train/loss"] for row in history if "train/loss" in row]
    assert len(losses) == 3
    test_acc = [row["test/acc"] for row in history if "test/acc" in row]
    assert test_acc == [pytest.approx(results["test"]["acc"], abs=1e-6)]
    assert config["optim"]["lr"] == make_cfg().optim.lr and config["model"]["family"] == "mlp"
    assert optim_updates == 1  # hyperparameters are sent once per run, not again for the test stage
    _no_secret_keys(json.dumps(config).split('"'))


def test_missing_logger_package_is_a_config_error(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a)
    )
    with pytest.raises(ConfigError, match=r"pip install 'bigtrain\[mlflow\]'"):
        make_cfg(["logger=mlflow"])
