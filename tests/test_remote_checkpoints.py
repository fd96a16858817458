"""checkpoint_dir: checkpoints in a folder of your choice or at an fsspec URL (docs/reliability.md,
"Checkpoints elsewhere"). Real runs write to fsspec's memory:// file system, which lives in this
process only: training and resuming happen in one process; what the command line refuses before
anything is written runs as a real command."""

from __future__ import annotations

import hashlib
import importlib.util
import uuid
from pathlib import Path

import fsspec
import pytest
import torch

import bigtrain
from bigtrain.runs.checkpointing import newest_intact
from bigtrain.training.checkpoint_files import (
    CheckpointError,
    check_digest,
    load_checkpoint_file,
    save_atomic,
)
from conftest import bigtrain_cmd, make_cfg, read_results
from test_reliability import SHORT  # 5 optimizer steps an epoch, a step checkpoint every 3


def _memory_url() -> str:
    """A folder of its own in this process's memory:// file system."""
    return f"memory://ckpt-{uuid.uuid4().hex[:8]}/run1"


def _names(url: str) -> list[str]:
    fs = fsspec.filesystem("memory")
    root = url[len("memory://") :]
    return sorted(p.rsplit("/", 1)[-1] for p in fs.ls(root, detail=False))


def _flip_a_byte(url: str) -> None:
    """One byte of the object changed through fsspec, as a failing disk or a bad copy would."""
    fs = fsspec.filesystem("memory")
    data = bytearray(fs.cat_file(url))
    data[len(data) // 2] ^= 0xFF
    fs.pipe_file(url, bytes(data))


def test_memory_checkpoint_dir_trains_and_resumes_in_one_process(tmp_path, capsys):
    url, run_dir = _memory_url(), tmp_path / "run"
    first = bigtrain.train([*SHORT, "trainer.max_epochs=2", f"checkpoint_dir={url}"], run_dir=run_dir)
    assert first["status"] == "completed" and first["global_step"] == 10
    names = _names(url)
    assert "last.ckpt" in names and "last.ckpt.sha256" in names
    # The digest file is sha256sum's format, for the bytes that were written.
    fs = fsspec.filesystem("memory")
    digest, name = fs.cat_file(f"{url}/last.ckpt.sha256").decode().split()
    assert name == "last.ckpt" and digest == hashlib.sha256(fs.cat_file(f"{url}/last.ckpt")).hexdigest()
    assert not (run_dir / "checkpoints").exists()
    assert first["best_checkpoint"].startswith(f"{url}/epoch")

    capsys.readouterr()
    resumed = bigtrain.resume(run_dir, ["trainer.max_epochs=3", f"checkpoint_dir={url}"])
    assert f"continuing from {url}/" in capsys.readouterr().out
    assert resumed["status"] == "completed" and resumed["resumed"] == 1
    assert resumed["global_step"] == 15 and read_results(run_dir)["global_step"] == 15
    assert not (run_dir / "checkpoints").exists()

    # The run's model loads from the place typed now, never from the one its files name.
    with pytest.raises(bigtrain.ConfigError, match="name the checkpoint") as refused:
        bigtrain.load(run_dir)
    assert len(str(refused.value).splitlines()) == 1
    assert bigtrain.load(run_dir, checkpoint=f"{url}/last.ckpt").checkpoint == f"{url}/last.ckpt"


def test_resume_asks_for_checkpoint_dir_typed_again(tmp_path):
    url, run_dir = _memory_url(), tmp_path / "run"
    bigtrain.train([*SHORT, "trainer.max_epochs=1", f"checkpoint_dir={url}"], run_dir=run_dir)
    before = _names(url)
    with pytest.raises(bigtrain.ConfigError) as missing:
        bigtrain.resume(run_dir, ["trainer.max_epochs=2"])
    line = str(missing.value)
    assert len(line.splitlines()) == 1
    assert f"checkpoint_dir={url}" in line and "type it" in line
    with pytest.raises(bigtrain.ConfigError, match="is not where the run keeps its checkpoints"):
        bigtrain.resume(run_dir, ["trainer.max_epochs=2", "checkpoint_dir=memory://elsewhere/run1"])
    # The command line says the same, in one line, before anything is read or written.
    out = bigtrain_cmd(f"resume={run_dir}", "trainer.max_epochs=2", cwd=tmp_path)
    assert out.returncode == 2, out.stderr
    assert out.stderr.strip().count("\n") == 0 and f"checkpoint_dir={url}" in out.stderr
    assert _names(url) == before


def test_corrupted_remote_checkpoint_is_skipped_by_name(tmp_path, capsys):
    url, run_dir = _memory_url(), tmp_path / "run"
    bigtrain.train([*SHORT, "trainer.max_epochs=2", f"checkpoint_dir={url}"], run_dir=run_dir)
    fs = fsspec.filesystem("memory")
    for name in ("epoch001-step000010.ckpt", "epoch001-step000010.ckpt.sha256"):
        fs.rm_file(f"{url}/{name}")
    _flip_a_byte(f"{url}/last.ckpt")  # step 10; step000009.ckpt is the next newest
    with pytest.raises(CheckpointError, match="last.ckpt does not match its digest in last.ckpt.sha256"):
        check_digest(f"{url}/last.ckpt")
    with pytest.raises(CheckpointError, match="does not match its digest"):
        load_checkpoint_file(f"{url}/last.ckpt", verify=True)
    capsys.readouterr()
    resumed = bigtrain.resume(run_dir, ["trainer.max_epochs=3", f"checkpoint_dir={url}"])
    out = capsys.readouterr().out
    assert "skipping checkpoint last.ckpt does not match its digest in last.ckpt.sha256" in out
    assert f"continuing from {url}/step000009.ckpt" in out
    assert resumed["status"] == "completed" and resumed["global_step"] == 15


def test_remote_save_that_fails_leaves_no_object_and_listing_finds_the_good_one():
    url = _memory_url()
    good = {"state_dict": {"w": torch.ones(3)}, "global_step": 4, "optimizer_states": [{}], "loops": {"a": 1}}
    save_atomic(good, f"{url}/step000004.ckpt")
    with pytest.raises(Exception, match="pickle|lambda|local object"):
        save_atomic({**good, "global_step": 8, "bad": lambda: None}, f"{url}/step000008.ckpt")
    assert _names(url) == ["step000004.ckpt", "step000004.ckpt.sha256"]
    assert check_digest(f"{url}/step000004.ckpt")
    reports: list[str] = []
    assert newest_intact(url, trust=False, report=reports.append) == f"{url}/step000004.ckpt"
    assert reports == []


def test_new_run_into_a_checkpoint_dir_with_checkpoints_is_refused(tmp_path):
    url = _memory_url()
    bigtrain.train([*SHORT, "trainer.max_epochs=1", f"checkpoint_dir={url}"], run_dir=tmp_path / "a")
    before = _names(url)
    with pytest.raises(bigtrain.ConfigError, match="already holds checkpoints") as refused:
        bigtrain.train([*SHORT, "trainer.max_epochs=1", f"checkpoint_dir={url}"], run_dir=tmp_path / "b")
    assert len(str(refused.value).splitlines()) == 1
    assert _names(url) == before


def test_local_checkpoint_dir_outside_the_run(tmp_path):
    folder, run_dir = tmp_path / "ckpts", tmp_path / "run"
    first = bigtrain.train([*SHORT, "trainer.max_epochs=1", f"checkpoint_dir={folder}"], run_dir=run_dir)
    assert (folder / "last.ckpt").is_file() and (folder / "last.ckpt.sha256").is_file()
    assert not (run_dir / "checkpoints").exists()
    assert Path(first["best_checkpoint"]).parent == folder
    assert check_digest(folder / "last.ckpt")
    resumed = bigtrain.resume(run_dir, ["trainer.max_epochs=2", f"checkpoint_dir={folder}"])
    assert resumed["global_step"] == 10 and resumed["resumed"] == 1
    out = bigtrain_cmd("eval", str(run_dir), cwd=tmp_path)
    assert out.returncode == 2 and out.stderr.strip().count("\n") == 0, out.stderr
    assert f"--checkpoint {folder}/" in out.stderr
    out = bigtrain_cmd("eval", str(run_dir), "--checkpoint", str(folder / "last.ckpt"), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert f"bigtrain eval: {folder / 'last.ckpt'} on the run's test split" in out.stdout
    out = bigtrain_cmd("eval", str(run_dir), f"checkpoint_dir={folder}", cwd=tmp_path)  # the best one there
    assert (
        out.returncode == 0 and f"bigtrain eval: {read_results(run_dir)['best_checkpoint']} on" in out.stdout
    ), out.stderr


def test_eval_reads_a_url_checkpoint_named_now(tmp_path):
    from bigtrain.runs.evaluate import evaluate

    url, run_dir = _memory_url(), tmp_path / "run"
    bigtrain.train([*SHORT, "trainer.max_epochs=1", f"checkpoint_dir={url}"], run_dir=run_dir)
    result = evaluate(run_dir, checkpoint=f"{url}/last.ckpt")
    assert result["checkpoint"] == f"{url}/last.ckpt" and 0 <= result["test"]["acc"] <= 1
    assert Path(result["file"]).parent == run_dir / "evals"


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("nosuch://bucket/run1", "fsspec knows no nosuch:// protocol"),
        pytest.param(
            "s3://bucket/run1",
            "s3:// needs the s3fs package, which is not installed: pip install s3fs",
            marks=pytest.mark.skipif(
                importlib.util.find_spec("s3fs") is not None, reason="s3fs is installed"
            ),
        ),
    ],
)
def test_unusable_url_is_one_line_before_the_run_directory_exists(value, fragment, tmp_path):
    out = bigtrain_cmd(f"checkpoint_dir={value}", "hydra.run.dir=runs/x", cwd=tmp_path)
    assert out.returncode == 2, out.stderr
    assert out.stderr.strip().count("\n") == 0 and fragment in out.stderr, out.stderr
    assert not (tmp_path / "runs").exists()


def test_sharded_checkpoints_to_a_url_and_memory_across_processes_are_refused():
    with pytest.raises(bigtrain.ConfigError) as sharded:
        make_cfg(
            [
                "strategy=fsdp",
                "checkpoint_dir=memory://b/run1",
                "trainer.accelerator=cpu",
                "trainer.devices=2",
            ]
        )
    assert "strategy=fsdp saves each checkpoint as a folder of shards" in str(sharded.value)
    assert "memory:// lives inside one process" in str(sharded.value)
    make_cfg(["strategy=fsdp", "checkpoint_dir=ckpts/run1", "trainer.accelerator=cpu", "trainer.devices=2"])
