"""Every CPU strategy on real processes with the default callbacks: progress bar, config tree,
model summary, plots, loggers, learning-rate monitor (and text samples for a language model).

Nothing is switched off: the only overrides limit how long a run takes, as a user shortening
the README's command would.
"""

from __future__ import annotations

import pytest

from conftest import bigtrain_cmd, read_results

pytestmark = pytest.mark.distributed

SHORT = ["trainer.max_epochs=1"]


def _only_run_dir(cwd, name: str = "default"):
    runs = list((cwd / "outputs" / name).iterdir())
    assert len(runs) == 1, runs  # ranks above zero did not create run directories of their own
    return runs[0]


@pytest.mark.parametrize(("strategy", "devices"), [("ddp", 2), ("fsdp", 2), ("tp", 2), ("fsdp_tp", 4)])
def test_strategy_with_default_callbacks(tmp_path, strategy, devices):
    args = [f"strategy={strategy}", "trainer.accelerator=cpu", f"trainer.devices={devices}", *SHORT]
    out = bigtrain_cmd(*args, cwd=tmp_path, timeout=900)
    assert out.returncode == 0, out.stderr[-4000:]
    run_dir = _only_run_dir(tmp_path)
    results = read_results(run_dir)
    assert results["status"] == "completed" and results["global_step"] == 20 and results["epochs"] == 1
    assert results["test"]["acc"] > 0.5
    for plot in ("loss.png", "metrics.png", "roc.png", "confusion_matrix.png"):
        assert (run_dir / "plots" / plot).stat().st_size > 0, plot
    assert (run_dir / "metrics.csv").is_file() and any((run_dir / "tensorboard").iterdir())
    # The config tree, the model summary and the progress bar were printed (by rank zero).
    assert "config" in out.stdout and "parameters:" in out.stdout and "Epoch 0/0" in out.stdout
    assert "Traceback" not in out.stderr


def test_tensor_parallel_language_model_with_clipping_and_samples(tmp_path):
    """gpt_stdlib clips gradients at 1.0; under tensor parallel some gradients are sharded
    DTensors and some plain tensors, and the clipping must take the norm of both. Samples are
    generated after validation: every rank takes part in the sharded forward passes."""
    args = [
        "+experiment=gpt_stdlib",
        "strategy=tp",
        "trainer.accelerator=cpu",
        "trainer.devices=2",
        "trainer.max_steps=20",
        "trainer.val_check_interval=20",
        "trainer.limit_val_batches=2",
        "trainer.limit_test_batches=2",
        "data.max_bytes=300000",
    ]
    out = bigtrain_cmd(*args, cwd=tmp_path, timeout=900)
    assert out.returncode == 0, out.stderr[-4000:]
    results = read_results(_only_run_dir(tmp_path, "gpt_stdlib"))
    assert results["status"] == "completed" and results["global_step"] == 20
    assert results["samples"] and "sample at step 20" in out.stdout
