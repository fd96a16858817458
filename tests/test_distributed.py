"""Real multi-process runs: 2 CPU processes over gloo, launched by Lightning from the CLI."""

from __future__ import annotations

import pytest

from conftest import FAST, bigtrain_cmd, read_results

pytestmark = pytest.mark.distributed


def test_ddp_on_two_cpu_processes_uses_one_run_directory(tmp_path):
    out = bigtrain_cmd(
        "strategy=ddp", "trainer.accelerator=cpu", "trainer.devices=2", *FAST, cwd=tmp_path, timeout=600
    )
    assert out.returncode == 0, out.stderr[-4000:]
    runs = list((tmp_path / "outputs" / "default").iterdir())
    assert len(runs) == 1, runs  # the second rank did not create a directory of its own
    results = read_results(runs[0])
    assert results["status"] == "completed" and results["global_step"] == 3
    assert results["test"]["acc"] > 0
