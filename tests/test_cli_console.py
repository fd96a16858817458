"""The command as a new user meets it: what it prints, what it completes, what it fills in, and
the Python API's errors and quiet mode."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

import bigtrain
from bigtrain.build import build_trainer
from conftest import FAST, bigtrain_cmd, make_cfg, read_results


def test_help_into_a_closed_pipe_ends_quietly(tmp_path):
    out = subprocess.run(
        f"{sys.executable} -m bigtrain --help | head -3",
        shell=True,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.stdout.splitlines()[0].startswith("bigtrain: configuration-driven")
    assert "Traceback" not in out.stderr and "BrokenPipe" not in out.stderr


def _complete(line: str, tmp_path) -> list[str]:
    env = {**os.environ, "COMP_LINE": line}
    out = bigtrain_cmd("-sc", "query=bash", cwd=tmp_path, env=env)
    assert out.returncode == 0, out.stderr
    return out.stdout.split()


def test_group_completion_offers_the_presets(tmp_path):
    got = _complete("bigtrain model=", tmp_path)
    assert {"model=mlp/small", "model=gpt/125m", "model=llama/7b", "model=cnn/tiny"} <= set(got)
    assert not any(w.count("=") > 1 for w in got)  # not keys of the chosen option (model=activation=)
    assert _complete("bigtrain model=gpt/1", tmp_path) == [
        "model=gpt/1.3b",
        "model=gpt/125m",
        "model=gpt/13b",
        "model=gpt/175b",
    ]
    assert "optim.lr=" in _complete("bigtrain optim.l", tmp_path)  # keys: Hydra's own completion


def test_a_language_model_picks_its_data_and_metrics_in_one_try(tmp_path):
    out = bigtrain_cmd("dry_run=true", "model=gpt/1.3b", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "added data=stdlib_text metrics=lm" in out.stdout and "1,315,723,264" in out.stdout
    # A window longer than the model's context is shortened when the user did not choose it...
    out = bigtrain_cmd(
        "dry_run=true", "model=gpt/tiny", "model.max_seq_len=64", "data=stdlib_text", cwd=tmp_path
    )
    assert out.returncode == 0, out.stderr
    assert "added metrics=lm data.seq_len=64" in out.stdout
    # ... and kept, with one line naming the fix, when the user did.
    out = bigtrain_cmd(
        "dry_run=true", "model=gpt/tiny", "data=stdlib_text", "data.seq_len=4096", cwd=tmp_path
    )
    assert out.returncode == 2 and "lower data.seq_len" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def test_several_processes_without_a_gpu_name_the_cpu_switch(tmp_path):
    out = bigtrain_cmd("strategy=fsdp", "trainer.devices=8", cwd=tmp_path)
    assert out.returncode == 2
    (line,) = out.stderr.strip().splitlines()
    assert "trainer.accelerator=cpu" in line and "GPU" in line
    assert not (tmp_path / "outputs").exists()


def test_tags_exist_and_the_plus_hint_leads_somewhere(tmp_path):
    assert make_cfg(["tags=[baseline,lr]"]).tags == ["baseline", "lr"]
    out = bigtrain_cmd("+tags=[a,b]", "dry_run=true", cwd=tmp_path)  # with or without the +
    assert out.returncode == 0 and "tags:\n" in out.stdout.replace("│", "").replace(" ", ""), out.stderr
    out = bigtrain_cmd("optim.lrr=1", cwd=tmp_path)
    assert "did you mean optim.lr?" in out.stderr and "+optim" not in out.stderr
    out = bigtrain_cmd("trainer.callbacks=[]", cwd=tmp_path)  # a Trainer argument bigtrain builds
    assert out.returncode == 2 and "callbacks.extra" in out.stderr
    out = bigtrain_cmd("+trainer.callbacks=[]", cwd=tmp_path)
    assert out.returncode == 2 and "callbacks.extra" in out.stderr


def test_trainer_arguments_pass_through_to_lightning(tmp_path):
    cfg = make_cfg(["+trainer.num_sanity_val_steps=0", "+trainer.max_time=00:00:05:00"])
    assert cfg.trainer.lightning == {"num_sanity_val_steps": 0, "max_time": "00:00:05:00"}
    trainer = build_trainer(cfg, tmp_path, [], [])
    assert trainer.num_sanity_val_steps == 0
    with pytest.raises(bigtrain.ConfigError, match="unknown key 'trainer.max_tim'"):
        make_cfg(["+trainer.max_tim=1"])


def test_api_raises_config_error_and_takes_a_composed_config(tmp_path, capsys):
    with pytest.raises(bigtrain.ConfigError, match="unknown key 'optim.lrr'"):
        bigtrain.train(["optim.lrr=1"], run_dir=tmp_path / "bad")
    assert not (tmp_path / "bad").exists()
    cfg = bigtrain.compose([*FAST])
    capsys.readouterr()
    results = bigtrain.train(cfg, run_dir=tmp_path / "run", quiet=True)
    printed = capsys.readouterr()
    assert results["status"] == "completed" and read_results(tmp_path / "run")["global_step"] == 3
    assert printed.out == "", printed.out[:500]


@pytest.mark.slow
def test_the_default_run_prints_a_short_honest_console(tmp_path):
    out = bigtrain_cmd("hydra.run.dir=run", cwd=tmp_path, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = (out.stdout + out.stderr).splitlines()
    assert len(lines) <= 60, "\n".join(lines)
    for noise in (
        "GPU available",
        "litlogger",
        "Loading `train_dataloader`",
        "Restoring states",
        "deprecated",
    ):
        assert noise not in out.stdout + out.stderr, noise
    assert "stage_metrics" not in out.stdout and "FLOPs  " not in out.stdout  # the model, not metrics
    log = (tmp_path / "run" / "bigtrain.log").read_text()
    assert "GPU available" in log and "plan" in log and "data: digits" in log and "(completed)" in log
    assert read_results(tmp_path / "run")["status"] == "completed"
