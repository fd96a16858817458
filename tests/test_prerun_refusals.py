"""Inputs that used to fail after the run directory existed (or to "complete" having trained
nothing) end in one `bigtrain: error:` line naming the fix, exit code 2, before any run directory:

- Trainer arguments Lightning does not have, under `trainer.lightning` or passed with `+trainer.`;
- a `name` longer than the file system takes for a folder name;
- zero epochs or steps (`-1` still means no limit), and a batch limit that keeps no batch;
- a folder where a file is wanted (`data.path`, `ckpt_path`, token files, tokenizers), while a
  sharded checkpoint's folder stays a valid `ckpt_path`;
- a model whose planned memory per device exceeds this machine's (not for a dry run, nor with
  `check_memory=false`).

Each command runs as a user types it, in an empty folder; nothing here trains.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from bigtrain.config import ConfigError
from bigtrain.runs.checks import Machine, check_memory, machine_memory, memory_problem
from conftest import bigtrain_cmd, make_cfg

QUIET = ["callbacks.print_config=false"]
GIB = 2**30


def refused(cwd: Path, *args: str) -> str:
    """The one error line of `bigtrain ARGS` run in `cwd`, after checking the exit code, that
    nothing else reached stderr (no traceback), and that no run directory was made."""
    before = sorted(p.name for p in cwd.iterdir())
    out = bigtrain_cmd(*args, *QUIET, cwd=cwd, timeout=120)
    assert out.returncode == 2, out.stderr[-3000:]
    assert "Traceback" not in out.stderr + out.stdout, out.stderr[-3000:]
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bigtrain: error: "), out.stderr[-3000:]
    assert sorted(p.name for p in cwd.iterdir()) == before  # no outputs/, no run directory
    return lines[0].removeprefix("bigtrain: error: ")


def physical_ram() -> int:
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


# --------------------------------------------------------------------------- Trainer arguments


def test_an_unknown_lightning_trainer_argument_is_one_line(tmp_path):
    line = refused(tmp_path, "+trainer.lightning.bogus=1")
    assert (
        line
        == "trainer.lightning.bogus is not an argument of Lightning's Trainer: correct the name, or drop it"
    )


@pytest.mark.parametrize(
    "override, want",
    [
        ("+trainer.lightning.max_tme=00:00:01:00", "(did you mean trainer.lightning.max_time?)"),
        ("+trainer.lightning.max_epoch=3", "(did you mean trainer.max_epochs?)"),
        (
            "+trainer.lightning.max_epochs=3",
            "is bigtrain's own trainer.max_epochs: set trainer.max_epochs=3 instead",
        ),
        (
            "+trainer.lightning.callbacks=[]",
            "is built by bigtrain: add Lightning callbacks with callbacks.extra",
        ),
        ("trainer.lightning=5", "trainer.lightning=5 must be a mapping of Trainer arguments"),
        ("+trainer.max_tim=1", "unknown key 'trainer.max_tim': did you mean trainer.max_time?"),
        ("trainer.max_tim=1", "unknown key 'trainer.max_tim': did you mean trainer.max_time?"),
        ("trainer.max_epoch=3", "unknown key 'trainer.max_epoch': did you mean trainer.max_epochs?"),
    ],
)
def test_trainer_arguments_are_checked_against_the_trainer(override, want):
    with pytest.raises(ConfigError) as e:
        make_cfg([override])
    assert len(e.value.lines) == 1 and want in e.value.lines[0], e.value.lines


def test_real_trainer_arguments_still_pass_through():
    cfg = make_cfg(["+trainer.lightning.num_sanity_val_steps=0", "+trainer.max_time=00:00:05:00"])
    assert cfg.trainer.lightning == {"num_sanity_val_steps": 0, "max_time": "00:00:05:00"}


# --------------------------------------------------------------------------- the run's name


def test_a_name_longer_than_a_folder_name_is_one_line(tmp_path):
    line = refused(tmp_path, "name=" + "a" * 300)
    assert line.startswith("name=" + "a" * 24 + "... is 300 bytes long, over the file system's limit of ")
    assert line.endswith("so choose a shorter name (e.g. name=baseline)")


def test_a_name_of_255_bytes_is_a_folder_name():
    assert len(make_cfg(["name=" + "a" * 255]).name) == 255


# --------------------------------------------------------------------------- runs that train nothing


@pytest.mark.parametrize("key, other", [("max_epochs", "max_steps"), ("max_steps", "max_epochs")])
def test_zero_epochs_or_steps_train_nothing(tmp_path, key, other):
    line = refused(tmp_path, f"trainer.{key}=0", f"trainer.{other}=5")
    assert line == (
        f"trainer.{key}=0 trains nothing: set trainer.{key} to at least 1, or to -1 for no limit "
        f"(trainer.{other} then ends training)"
    )


def test_minus_one_still_means_no_limit():
    assert make_cfg(["trainer.max_epochs=-1", "trainer.max_steps=5"]).trainer.max_epochs == -1
    assert make_cfg(["trainer.max_epochs=2", "trainer.max_steps=-1"]).trainer.max_steps == -1
    with pytest.raises(
        ConfigError, match="trainer.max_steps=0 trains nothing: set trainer.max_steps to at least 1$"
    ):
        make_cfg(["trainer.max_epochs=-1", "trainer.max_steps=0"])  # -1 there would never stop


def test_a_batch_limit_that_keeps_no_batch_is_refused():
    # digits: 1,257 training samples, 20 batches of 64 an epoch; Lightning keeps int(20 x 0.01) = 0
    with pytest.raises(ConfigError) as e:
        make_cfg(["trainer.limit_train_batches=0.01"])
    assert e.value.lines == [
        "trainer.limit_train_batches=0.01 keeps none of the epoch's 20 training batches, so no step "
        "would train: set trainer.limit_train_batches=0.05 or more, or an int number of batches"
    ]
    assert make_cfg(["trainer.limit_train_batches=0.05"]).trainer.limit_train_batches == 0.05


# --------------------------------------------------------------------------- a folder for a file


def test_a_table_path_that_is_a_folder_says_so(tmp_path):
    (tmp_path / "tables").mkdir()
    (tmp_path / "tables" / "train.csv").write_text("a,y\n1,0\n", encoding="utf-8")
    line = refused(tmp_path, "data=csv", "data.path=tables", "data.target=y")
    assert line == (
        "data.path=tables is a directory, not a file: give the path of a CSV or Parquet file (in it: train.csv)"
    )


def test_a_checkpoint_path_that_is_a_plain_folder_says_so(tmp_path):
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.ckpt").write_bytes(b"")
    line = refused(tmp_path, "ckpt_path=checkpoints")
    assert line == (
        "ckpt_path=checkpoints is a directory, not a file (nor a sharded checkpoint: it has no meta.pt): "
        "give the path of a .ckpt file (in it: last.ckpt), or drop ckpt_path"
    )


def test_a_sharded_checkpoint_folder_is_still_a_checkpoint(tmp_path):
    import torch

    (tmp_path / "last.ckpt").mkdir()
    torch.save({"global_step": 3, "epoch": 1}, tmp_path / "last.ckpt" / "meta.pt")
    cpu2 = ["strategy=fsdp", "trainer.accelerator=cpu", "trainer.devices=2"]
    assert make_cfg([*cpu2, f"ckpt_path={tmp_path / 'last.ckpt'}"]).ckpt_path
    with pytest.raises(ConfigError, match="is a sharded checkpoint, which strategy=auto cannot load"):
        make_cfg([f"ckpt_path={tmp_path / 'last.ckpt'}"])


def test_token_files_and_tokenizers_given_as_folders_say_so(tmp_path):
    lm = ["model=gpt/tiny", "metrics=lm"]
    with pytest.raises(
        ConfigError, match=r"data.path=.* has no index.json: give a folder written by bigtrain-tokens"
    ):
        make_cfg([*lm, "data=tokens", f"data.path={tmp_path}"])
    with pytest.raises(ConfigError, match=r"data.tokenizer=.* is a directory, not a file: give a tokenizers"):
        make_cfg([*lm, "data=stdlib_text", f"data.tokenizer={tmp_path}"])


# --------------------------------------------------------------------------- memory


def test_a_model_beyond_this_machines_memory_is_one_line_in_seconds(tmp_path):
    hidden = 10**8 if physical_ram() < 150 * GIB else 10**10  # 187 GiB, or 18 TiB
    start = time.perf_counter()
    line = refused(tmp_path, f"model.hidden=[{hidden}]")
    assert time.perf_counter() - start < 60  # planned on the meta device: nothing is allocated
    assert line.startswith("the plan needs ") and " per device (" in line, line
    assert "weights " in line and "activations " in line
    assert f"more than this machine's {physical_ram() / GIB:.1f} GiB of RAM" in line
    assert "a smaller model or data.batch_size" in line and "strategy=fsdp" in line
    assert line.endswith("or set check_memory=false to run anyway (dry_run=true shows the plan)")


def test_a_dry_run_plans_any_size(tmp_path):
    out = bigtrain_cmd("model.hidden=[100000000]", "dry_run=true", "hydra.run.dir=plan", *QUIET, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert (tmp_path / "plan" / "plan.json").is_file()


def _memory_lines(overrides: list[str]) -> list[str]:
    return list(check_memory(make_cfg([*overrides, "check_memory=true"])))


@pytest.mark.parametrize(
    "overrides, need_gib",
    [([], 1), (["+experiment=gpt_stdlib"], 1), (["model=gpt/125m", "data=stdlib_text", "metrics=lm"], 11)],
)
def test_normal_runs_fit(overrides, need_gib):
    if physical_ram() < 1.5 * need_gib * GIB:
        pytest.skip(f"this machine has {physical_ram() / GIB:.1f} GiB of RAM")
    assert _memory_lines(overrides) == []


def test_the_check_is_skipped_when_asked_and_in_dry_runs():
    huge = ["model.hidden=[100000000]"]
    assert list(check_memory(make_cfg([*huge, "check_memory=false"]))) == []
    assert list(check_memory(make_cfg([*huge, "check_memory=true", "dry_run=true"]))) == []


def test_cpu_processes_share_the_ram_and_a_gpu_has_its_own(monkeypatch):
    import torch

    cfg = make_cfg(["strategy=ddp", "trainer.accelerator=cpu", "trainer.devices=2"])
    assert machine_memory(cfg) == Machine(physical_ram(), 2)
    plan = {"params": {"total": 10**9}, "memory_per_device_bytes": {"total": 6 * GIB, "weights": 4 * GIB}}
    line = memory_problem(cfg, plan, Machine(10 * GIB, 2))
    assert line.startswith("the plan needs 6.0 GiB per process, 12.0 GiB for 2 processes (1.0B parameters")
    assert memory_problem(cfg, plan, Machine(12 * GIB, 2)) is None

    fake = SimpleNamespace(name="Fake GPU", total_memory=8 * GIB)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: fake)
    gpu = machine_memory(make_cfg(["trainer.accelerator=gpu"]))
    assert gpu == Machine(8 * GIB, 1, "Fake GPU")
    line = memory_problem(cfg, {**plan, "memory_per_device_bytes": {"total": 9 * GIB}}, gpu)
    assert "more than the GPU's 8.0 GiB (Fake GPU)" in line and "more GPUs (strategy=fsdp" in line
