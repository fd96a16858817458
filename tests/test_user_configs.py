"""Users keep their own experiments and presets in their own folder (--config-dir)."""

from __future__ import annotations

from conftest import FAST, bigtrain_cmd, make_cfg, read_results

USER_EXPERIMENT = """\
# @package _global_
defaults:
  - override /data: breast_cancer
  - override /model: mlp/wide

name: my_wide_mlp
optim:
  lr: 2e-3
"""
USER_PRESET = """\
family: mlp
hidden: [48, 48]
activation: gelu
dropout: 0.0
norm: layer
"""


def _user_dir(tmp_path):
    conf = tmp_path / "myconf"
    (conf / "experiment").mkdir(parents=True)
    (conf / "model" / "mlp").mkdir(parents=True)
    (conf / "experiment" / "mine.yaml").write_text(USER_EXPERIMENT)
    (conf / "model" / "mlp" / "wide.yaml").write_text(USER_PRESET)
    return conf


def test_user_experiment_composes_with_shipped_groups(tmp_path):
    cfg = make_cfg(["+experiment=mine"], config_dir=str(_user_dir(tmp_path)))
    assert cfg.name == "my_wide_mlp"
    assert cfg.model.hidden == [48, 48] and cfg.model.norm == "layer"  # the user's preset
    assert cfg.data.name == "breast_cancer" and cfg.optim.name == "adamw"  # shipped groups
    assert cfg.optim.lr == 2e-3


def test_user_experiment_runs_from_the_command_line(tmp_path):
    conf = _user_dir(tmp_path)
    out = bigtrain_cmd(
        "--config-dir", str(conf), "+experiment=mine", *FAST, "hydra.run.dir=run", cwd=tmp_path
    )
    assert out.returncode == 0, out.stderr[-3000:]
    results = read_results(tmp_path / "run")
    assert results["experiment"] == "my_wide_mlp" and results["status"] == "completed"


def test_shipped_experiments_still_listed_with_a_user_dir(tmp_path):
    out = bigtrain_cmd("--config-dir", str(_user_dir(tmp_path)), "--help", cwd=tmp_path)
    assert "mine" in out.stdout and "seed" in out.stdout and "wide" in out.stdout


def test_missing_user_dir_is_one_line(tmp_path):
    out = bigtrain_cmd("--config-dir", str(tmp_path / "nope"), cwd=tmp_path)
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0 and "is not a directory" in out.stderr
