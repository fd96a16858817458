"""One run composes its config once and validates it once, Hydra's own composition counted."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

# Counts every composition (bigtrain's and Hydra's: both go through Hydra.compose_config) and
# every validation, then runs the command as `bigtrain ARGS` would.
PROBE = """
import json, sys
import hydra._internal.hydra as hydra_impl
import bigtrain.runs.validate
from bigtrain.cli import main

counts = {"compose": 0, "validate": 0}
compose_config, validate = hydra_impl.Hydra.compose_config, bigtrain.runs.validate.validate

def counted_compose(self, *args, **kwargs):
    counts["compose"] += 1
    return compose_config(self, *args, **kwargs)

def counted_validate(cfg):
    counts["validate"] += 1
    return validate(cfg)

hydra_impl.Hydra.compose_config = counted_compose
bigtrain.runs.validate.validate = counted_validate
main(sys.argv[1:])
print("COUNTS", json.dumps(counts))
"""


def _counts(tmp_path, *args: str) -> tuple[dict, str]:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, *args, "hydra.run.dir=run"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    line = next(ln for ln in out.stdout.splitlines() if ln.startswith("COUNTS "))
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["status"] == "completed", results
    assert (tmp_path / "run" / ".hydra" / "config.yaml").is_file()
    return json.loads(line.split(" ", 1)[1]), out.stdout


@pytest.mark.parametrize(
    "args",
    [
        ("trainer.max_steps=2",),
        ("+experiment=gpt_stdlib", "trainer.max_steps=2", "data.max_bytes=20000", "test_after_fit=false"),
    ],
    ids=["default", "gpt_stdlib"],
)
def test_a_run_composes_and_validates_its_config_once(tmp_path, args):
    counts, printed = _counts(tmp_path, *args)
    assert counts == {"compose": 1, "validate": 1}
    # The config tree at the start lists what the experiment and the command line set.
    assert "trainer.max_steps: 2" in printed
    if "+experiment=gpt_stdlib" in args:
        assert "experiment: gpt_stdlib" in printed and "optim.lr: 0.003" in printed


def test_a_language_model_on_implied_data_composes_once_more(tmp_path):
    """model=gpt/tiny alone implies data=stdlib_text and metrics=lm (groups): one composition
    finds the family, one composes the implied groups; the window is set without a third."""
    counts, _ = _counts(
        tmp_path,
        "model=gpt/tiny",
        "model.max_seq_len=64",
        "trainer.max_steps=2",
        "test_after_fit=false",
    )
    assert counts == {"compose": 2, "validate": 1}
    overrides = (tmp_path / "run" / ".hydra" / "overrides.yaml").read_text()
    assert "data.seq_len=64" in overrides and "data=stdlib_text" in overrides
