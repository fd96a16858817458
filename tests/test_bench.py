"""The benchmark scripts run: their cases compose, execute and report (no timing is asserted;
speed is measured with the scripts, see docs/performance.md)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def test_bench_reports_loader_and_cli_rows(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(SCRIPTS / "bench.py"),
            "--cases",
            "loader",
            "cli",
            "--reps",
            "1",
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = {r["case"]: r for r in json.loads(out.read_text())}
    loaders = [r for name, r in rows.items() if name.startswith("token loader")]
    assert len(loaders) == 2 and all(r["bigtrain"] > 0 and r["handwritten"] > 0 for r in loaders)
    for name in ("--help", "invalid override", "dry_run (default run)", "dry_run (+experiment=llama_7b)"):
        assert rows[f"CLI {name}"]["bigtrain"] > 0


def test_bench_mlp_rows_pair_runs_and_interleave_epochs(tmp_path):
    out = tmp_path / "bench.json"
    args = ["--cases", "mlp", "--reps", "1", "--epochs", "2", "--json", str(out)]
    args += ["--interleaved-epochs", "4", "--interleaved-runs", "2"]
    proc = subprocess.run(
        [sys.executable, str(SCRIPTS / "bench.py"), *args], capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    paired, interleaved = json.loads(out.read_text())
    assert paired["bigtrain"] > 0 and paired["handwritten"] > 0
    for key in ("ratio", "one_step_per_batch_ratio", "lightning_floor_ratio"):
        assert paired[key] > 0, key
    assert interleaved["pairs"] == 4  # 2 runs of 4 epochs, the first 2 of each are warm-up
    assert len(interleaved["run_ratios"]) == 2 and all(r > 0 for r in interleaved["run_ratios"])
    lo, hi = interleaved["ratio_iqr"]
    assert 0 < lo <= interleaved["ratio"] <= hi
    for key in ("ratio_of_means", "one_step_per_batch_ratio"):
        assert interleaved[key] > 0, key


def test_bench_gpu_cases_are_valid_configs_without_a_gpu():
    proc = subprocess.run(
        [sys.executable, str(SCRIPTS / "bench_gpu.py"), "--check", "--models", "gpt/125m"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr[-2000:]
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 4 and all(line.endswith(" ok") for line in lines), lines
