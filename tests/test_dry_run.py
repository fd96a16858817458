"""`dry_run=true`: the plan of any size, from the command line, without Lightning or weights."""

from __future__ import annotations

import json
import subprocess
import sys

LLAMA_7B = [
    "dry_run=true",
    "model=llama/7b",
    "data=stdlib_text",
    "metrics=lm",
    "data.seq_len=4096",
    "data.batch_size=1024",
    "trainer.accumulate_grad_batches=128",
    "callbacks.print_config=false",
]

PROBE = """
import sys
from bigtrain.cli import main
main(sys.argv[1:])
heavy = [m for m in ("pytorch_lightning", "lightning", "torchmetrics", "sklearn") if m in sys.modules]
print("HEAVY", heavy)
"""


def test_dry_run_of_a_7b_preset_plans_without_lightning(tmp_path):
    out = subprocess.run(
        [sys.executable, "-c", PROBE, *LLAMA_7B, "hydra.run.dir=plan"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "HEAVY []" in out.stdout  # the plan imports torch only
    plan = json.loads((tmp_path / "plan" / "plan.json").read_text())
    assert plan["params"]["total"] == 6_738_415_616  # LLaMA-2 7B as released
    assert plan["batch"]["micro_batch_size"] == 8
    assert plan["memory_per_device_bytes"]["total"] > plan["memory_per_device_bytes"]["weights"]
    assert not (tmp_path / "plan" / "results.json").exists()  # nothing was trained
