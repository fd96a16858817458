"""Whole runs with the shipped settings and the installed wheel (marked slow; .ci/run runs them)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import QUIET, read_results

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]


def test_default_run_reaches_097_test_accuracy(run):
    results, _ = run([])
    assert results["status"] == "completed"
    assert results["test"]["acc"] >= 0.97, results["test"]


@pytest.mark.parametrize("experiment", ["breast_cancer_mlp", "seed"])
def test_binary_experiments_reach_098_auroc(run, experiment):
    results, _ = run([f"+experiment={experiment}"])
    assert results["test"]["auroc"] >= 0.98, results["test"]


def test_digits_cnn_learns(run):
    results, _ = run(["+experiment=digits_cnn"])
    assert results["test"]["acc"] >= 0.95, results["test"]


def test_wheel_ships_the_configs_and_runs_from_any_directory(tmp_path):
    wheels = tmp_path / "wheels"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(wheels),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = wheels.glob("bigtrain-*.whl")
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--target", str(target), str(wheel)],
        check=True,
        capture_output=True,
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(target)}
    where = subprocess.run(
        [sys.executable, "-c", "import bigtrain; print(bigtrain.__file__)"],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert where.stdout.startswith(str(target))  # the wheel, not the source tree
    out = subprocess.run(
        [sys.executable, "-m", "bigtrain", "+experiment=seed", *QUIET, "+debug=fast"],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    (run_dir,) = (elsewhere / "outputs" / "seed").iterdir()
    assert read_results(run_dir)["status"] == "completed"
