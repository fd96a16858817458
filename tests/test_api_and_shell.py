"""The Python API, `python -m bigtrain`, Hydra's bash completion, and the published metadata."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
from omegaconf import DictConfig

import bigtrain
from bigtrain.cli import UsageError
from conftest import FAST, QUIET, bigtrain_cmd, read_results

BIN = Path(sys.executable).parent


def test_compose_returns_the_config_the_command_would_run():
    cfg = bigtrain.compose(["+experiment=seed", "optim.lr=0.003"])
    assert isinstance(cfg, DictConfig) and "hydra" not in cfg
    assert cfg.model.hidden == [256, 128, 64, 32, 16, 8] and cfg.optim.lr == 0.003
    with pytest.raises(UsageError, match="did you mean model=mlp/seed"):
        bigtrain.compose(["model=mlp/sed"])


def test_train_returns_the_results_it_writes(tmp_path):
    results = bigtrain.train([*QUIET, *FAST, "model=mlp/tiny"], run_dir=tmp_path / "nb")
    assert results["status"] == "completed" and results["global_step"] == 3
    assert read_results(tmp_path / "nb") == results


def test_python_dash_m_is_the_command(tmp_path):
    module = bigtrain_cmd("--cfg", "job", "model=mlp/tiny", cwd=tmp_path)
    script = subprocess.run(
        [str(BIN / "bigtrain"), "--cfg", "job", "model=mlp/tiny"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert module.returncode == script.returncode == 0
    assert module.stdout == script.stdout and "hidden:\n  - 32" in module.stdout


def _complete_in_bash(line: str, tmp_path: Path) -> list[str]:
    """Install the completion script in a real bash and complete `line` as bash would on TAB."""
    words = line.split(" ")
    script = (
        'eval "$(bigtrain -sc install=bash)"\n'
        f'COMP_LINE="{line}"; COMP_POINT={len(line)}; COMP_WORDS=({line}); COMP_CWORD={len(words) - 1}\n'
        "hydra_bash_completion\n"
        'printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    proc = subprocess.run(
        ["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.split()


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_bash_completion_of_partial_overrides(tmp_path):
    install = subprocess.run([str(BIN / "bigtrain"), "-sc", "install=bash"], capture_output=True, text=True)
    assert (
        install.returncode == 0
        and "complete -o nospace -o default -F hydra_bash_completion bigtrain" in install.stdout
    )
    assert _complete_in_bash("bigtrain data=i", tmp_path) == ["data=image_folder"]
    logger = set(_complete_in_bash("bigtrain logger=", tmp_path))
    assert {"logger=mlflow", "logger=wandb", "logger=default"} <= logger
    assert _complete_in_bash("bigtrain optim.l", tmp_path) == ["optim.lr="]
    assert _complete_in_bash("bigtrain data=csv data.tar", tmp_path) == ["data.target="]
    assert _complete_in_bash("bigtrain +experiment=se", tmp_path) == ["+experiment=seed"]


def test_package_metadata_and_extras():
    meta = metadata.metadata("bigtrain")
    assert meta["Version"] == bigtrain.__version__
    extras = set(meta.get_all("Provides-Extra"))
    assert {"parquet", "mlflow", "wandb", "deepspeed", "optuna", "dev"} <= extras
    classifiers = meta.get_all("Classifier")
    assert "Programming Language :: Python :: 3.11" in classifiers
    root = Path(__file__).resolve().parents[1]
    assert f"## {bigtrain.__version__}" in (root / "CHANGELOG.md").read_text()
