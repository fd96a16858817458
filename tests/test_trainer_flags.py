"""Lightning Trainer arguments that bigtrain's schema does not list, written as `trainer.NAME=value`
(config/trainer_args.py, runs/compose.trainer_flags): real runs whose Trainer got them, the saved
overrides that resume the same Trainer, the Python API, `+trainer.NAME` still working, and a
misspelt or bigtrain-built argument refused in one line before any run directory exists.

The runs record what their Trainer did with a callback of this module (given as a user's
callback, `callbacks.extra`, with tests/ on PYTHONPATH).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from omegaconf import OmegaConf
from pytorch_lightning.callbacks import Timer

import bigtrain
from bigtrain.build import build_trainer
from conftest import FAST, QUIET, bigtrain_cmd, make_cfg, read_results
from test_prerun_refusals import refused

TESTS = str(Path(__file__).parent)
RECORD = "rec.json"
RECORDER = f"callbacks.extra=[{{_target_: test_trainer_flags.RecordTrainer, path: {RECORD}}}]"


class RecordTrainer(pl.Callback):
    """Writes to `path`, when fit ends, what the Trainer was given and did: its
    num_sanity_val_steps, whether a sanity check ran, and the time its Timer (there only with
    max_time) had left when fit started."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)
        self.seen: dict = {}

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        timers = [c for c in trainer.callbacks if isinstance(c, Timer)]
        self.seen = {
            "num_sanity_val_steps": trainer.num_sanity_val_steps,
            "sanity_checked": False,
            "time_left_s": timers[0].time_remaining("train") if timers else None,
        }

    def on_sanity_check_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.seen["sanity_checked"] = True

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.path.write_text(json.dumps(self.seen))


def _cmd(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return bigtrain_cmd(*args, cwd=cwd, env={"PYTHONPATH": TESTS})


# --------------------------------------------------------------------------- the command line


def test_trainer_flags_reach_the_trainer_and_a_resume_builds_the_same_one(tmp_path):
    flags = ["trainer.max_time=00:00:20:00", "trainer.num_sanity_val_steps=0"]
    out = _cmd(
        *FAST, "model=mlp/tiny", *flags, RECORDER, "trust_code=true", "hydra.run.dir=run", cwd=tmp_path
    )
    assert out.returncode == 0, out.stderr[-3000:]
    run = tmp_path / "run"
    seen = json.loads((tmp_path / RECORD).read_text())
    assert seen["num_sanity_val_steps"] == 0 and not seen["sanity_checked"]
    assert 20 * 60 - 5 < seen["time_left_s"] <= 20 * 60  # Lightning's Timer for max_time
    assert "Timer" in torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["callbacks"]
    # Where +trainer.NAME puts it; the saved overrides add it the same way.
    saved = OmegaConf.load(run / ".hydra" / "config.yaml")
    assert saved.trainer.max_time == "00:00:20:00" and saved.trainer.num_sanity_val_steps == 0
    overrides = list(OmegaConf.load(run / ".hydra" / "overrides.yaml"))
    assert "++trainer.max_time=00:00:20:00" in overrides and "++trainer.num_sanity_val_steps=0" in overrides
    assert read_results(run)["status"] == "completed"

    (tmp_path / RECORD).unlink()
    out = _cmd("resume=run", "trainer.max_epochs=2", "trust_code=true", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "continuing from" in out.stdout
    again = json.loads((tmp_path / RECORD).read_text())
    assert again["num_sanity_val_steps"] == 0 and not again["sanity_checked"]
    assert again["time_left_s"] is not None and again["time_left_s"] <= seen["time_left_s"]
    assert read_results(run)["epochs"] == 2


def test_cfg_job_shows_a_trainer_flag_where_it_is_added(tmp_path):
    out = bigtrain_cmd(
        "trainer.max_time=00:00:20:00", "trainer.profiler=simple", "--cfg", "job", cwd=tmp_path
    )
    assert out.returncode == 0, out.stderr[-3000:]
    trainer = OmegaConf.create(out.stdout).trainer
    assert trainer.max_time == "00:00:20:00" and trainer.profiler == "simple"
    assert not (tmp_path / "outputs").exists()


@pytest.mark.parametrize(
    "override, want",
    [
        (
            "trainer.max_tme=00:00:20:00",
            "unknown key 'trainer.max_tme': did you mean trainer.max_time? (a Lightning Trainer argument)",
        ),
        (
            "trainer.callbacks=[]",
            "trainer.callbacks is built by bigtrain: add Lightning callbacks with callbacks.extra=[{_target_: ...}]",
        ),
        ("trainer.logger=false", "trainer.logger is built by bigtrain: choose loggers with logger=..."),
        ("trainer.strategy=ddp", "trainer.strategy is built by bigtrain: choose strategy=..."),
    ],
)
def test_a_misspelt_or_built_trainer_argument_is_one_line_before_any_run_directory(override, want, tmp_path):
    assert refused(tmp_path, override) == want


def test_plus_trainer_still_passes_through(tmp_path):
    out = _cmd(
        *FAST, "model=mlp/tiny", "+trainer.num_sanity_val_steps=0", RECORDER, "trust_code=true", cwd=tmp_path
    )
    assert out.returncode == 0, out.stderr[-3000:]
    seen = json.loads((tmp_path / RECORD).read_text())
    assert seen["num_sanity_val_steps"] == 0 and not seen["sanity_checked"] and seen["time_left_s"] is None


def test_configs_without_passed_arguments_do_not_import_lightning(tmp_path):
    """Lightning's argument list comes from importing it (inspect.signature): only for a config
    that passes an argument through."""
    script = (
        "import sys, bigtrain\n"
        "from bigtrain.runs.validate import validate\n"
        "validate(bigtrain.compose(sys.argv[1:]))\n"
        "print('pytorch_lightning' in sys.modules)\n"
    )

    def imports_lightning(*overrides: str) -> bool:
        out = subprocess.run(
            [sys.executable, "-c", script, *overrides],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert out.returncode == 0, out.stderr[-3000:]
        return out.stdout.strip() == "True"

    assert not imports_lightning("trainer.max_epochs=2", "trainer.deterministic=false")
    assert imports_lightning("trainer.max_time=00:00:01:00")


# --------------------------------------------------------------------------- the Python API


def test_the_python_api_takes_trainer_flags(tmp_path):
    cfg = bigtrain.compose(["trainer.num_sanity_val_steps=0", "trainer.detect_anomaly=true"])
    assert cfg.trainer.num_sanity_val_steps == 0 and cfg.trainer.detect_anomaly is True
    run = make_cfg(["trainer.num_sanity_val_steps=0", "+trainer.overfit_batches=2", "trainer.max_epochs=3"])
    assert run.trainer.max_epochs == 3
    assert run.trainer.lightning == {"num_sanity_val_steps": 0, "overfit_batches": 2}
    trainer = build_trainer(run, tmp_path, [], [])
    assert trainer.num_sanity_val_steps == 0 and trainer.overfit_batches == 2
    with pytest.raises(bigtrain.ConfigError, match=r"did you mean trainer\.max_time\?"):
        make_cfg(["trainer.max_tme=1"])


def test_max_time_stops_a_python_api_run(tmp_path):
    # A second of training where the epochs alone would take minutes: Lightning's Timer stops it.
    overrides = [*QUIET, "model=mlp/tiny", "callbacks.plots=false", "trainer.max_epochs=1000"]
    results = bigtrain.train([*overrides, "trainer.max_time=00:00:00:01"], run_dir=tmp_path / "run")
    assert results["status"] == "completed" and 1 <= results["epochs"] < 1000
    saved = list(OmegaConf.load(tmp_path / "run" / ".hydra" / "overrides.yaml"))
    assert "trainer.max_time=00:00:00:01" in saved  # composes the same config again on resume


def test_the_documented_table_of_trainer_arguments_is_the_scripts_output():
    """docs/configuration.md's table is scripts/trainer_args.py's output; for another Lightning
    version than the table names, every argument it lists must still be one of the Trainer's."""
    import re
    import subprocess
    import sys
    from pathlib import Path

    import pytorch_lightning as pl

    from bigtrain.config.trainer_args import trainer_arguments

    root = Path(__file__).resolve().parents[1]
    doc = (root / "docs" / "configuration.md").read_text()
    table = re.search(
        r"<!-- trainer-args: the output of .*? -->\n(.*?)\n<!-- trainer-args: end -->", doc, re.S
    )
    assert table, "docs/configuration.md has no table of Trainer arguments"
    documented = table.group(1)
    names = re.findall(r"^\| `(\w+)` \|", documented, re.M)
    assert {"max_time", "profiler", "detect_anomaly", "callbacks"} <= set(names)
    if f"Lightning {pl.__version__}'s" in documented:
        out = subprocess.run(
            [sys.executable, str(root / "scripts" / "trainer_args.py")],
            capture_output=True,
            text=True,
            check=True,
        )
        assert out.stdout.strip() == documented.strip(), (
            "regenerate the table: python scripts/trainer_args.py"
        )
    else:  # a newer Lightning: the table may miss new arguments, but names none that is gone
        assert set(names) <= trainer_arguments(), set(names) - trainer_arguments()
