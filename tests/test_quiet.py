"""Every way in shows bigtrain's lines only: a quiet API run prints nothing on stdout or stderr,
`eval` and `predict` print their result and no library notice, and `compose` raises ConfigError."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from sklearn.datasets import load_digits

import bigtrain
from conftest import bigtrain_cmd

# Lightning's and libraries' notices that a training run keeps in bigtrain.log only.
NOISE = ("GPU available", "TPU available", "litlogger", "LeafSpec", "srun", "Warning", "deprecated")

QUIET_RUN = """
import bigtrain
results = bigtrain.train(["+debug=fast"], run_dir="run", quiet=True)
assert results["status"] == "completed", results["status"]
"""


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """The default run, trained by a quiet API call in a fresh interpreter (no warning was shown
    before it), with what it printed on each stream."""
    cwd = tmp_path_factory.mktemp("quiet")
    out = subprocess.run(
        [sys.executable, "-c", QUIET_RUN], cwd=cwd, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return cwd / "run", out


def test_a_quiet_api_call_prints_nothing_and_logs_the_notices(run_dir):
    run, out = run_dir
    assert out.stdout == "" and out.stderr == "", (out.stdout + out.stderr)[:1000]
    log = (run / "bigtrain.log").read_text()
    assert "GPU available" in log  # Lightning's info line went to the run's log, as the command's


def test_eval_and_predict_print_their_result_only(run_dir, tmp_path):
    run, _ = run_dir
    out = bigtrain_cmd("eval", str(run), cwd=tmp_path)
    assert out.returncode == 0 and out.stderr == "", out.stderr[:1000]
    assert out.stdout.startswith("bigtrain eval: checkpoints/") and "acc" in out.stdout
    assert not any(noise in out.stdout for noise in NOISE), out.stdout

    digits = load_digits()
    image = (digits.images[list(digits.target).index(3)] * 255 / 16).astype(np.uint8)
    Image.fromarray(image, mode="L").save(tmp_path / "digit.png")
    out = bigtrain_cmd("predict", str(run), "digit.png", "--out", "digit.csv", cwd=tmp_path)
    assert out.returncode == 0 and out.stderr == "", out.stderr[:1000]
    assert out.stdout.startswith("1 prediction(s) written to digit.csv (digit.png: ")
    assert (tmp_path / "digit.csv").is_file()


@pytest.mark.parametrize(
    ("override", "fragment"),
    [
        ("optim.lr=abc", "optim.lr"),
        ("optim.lrr=1", "unknown key 'optim.lrr'"),
        ("trainer.max_epochs=-1", "trainer.max_epochs"),
    ],
)
def test_compose_raises_config_error_for_bad_input(override, fragment):
    with pytest.raises(bigtrain.ConfigError, match=fragment):
        bigtrain.compose([override])
