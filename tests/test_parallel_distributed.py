"""Every CPU-capable strategy on real processes (gloo), launched from the real command line.

What is compared: `train/loss` of every optimizer step (metrics.csv, log_every_n_steps=1). The
module logs it synced over ranks, so on N processes it is the mean of the micro-batch losses =
the loss of the same global batch of 64 samples that the single process sees. Equal losses for
all 38 steps (2 epochs) mean equal weights after every update: the strategy computes the same
gradients and the data loader hands the same samples to the same step, including under tensor
parallel, where the two ranks of a group must get the same batch (the data-parallel rank).
"""

from __future__ import annotations

import csv
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bigtrain.runs.export import load_weights
from conftest import DIST_ENV, QUIET, bigtrain_cmd, read_results

pytestmark = pytest.mark.distributed

# 3 Linears (64->32->16->10): tensor parallel pairs the first two and replicates the head. No
# dropout: its masks are per rank by design, so they cannot match a single process.
COMMON = [
    *QUIET,
    "model=mlp/tiny",
    "model.hidden=[32,16]",
    "trainer.accelerator=cpu",
    "trainer.max_epochs=2",
    "logger=csv",
    "trainer.log_every_n_steps=1",
    "callbacks.plots=false",
    "callbacks.lr_monitor=false",
    "callbacks.checkpoint.save_top_k=-1",  # keep every epoch's checkpoint: the resume test needs epoch 1's
    # Full global batches only: an epoch's last, smaller step is cut into devices x accumulation
    # equal micro-batches, so it holds 41 samples on one process and 40 on two (docs/data.md).
    "data.drop_last=true",
]
RTOL = 1e-4


def _train(cwd: Path, *overrides: str) -> Path:
    """Run `bigtrain COMMON overrides` in `cwd`; return its (one and only) run directory."""
    cwd.mkdir(parents=True, exist_ok=True)
    out = bigtrain_cmd(*COMMON, *overrides, cwd=cwd, timeout=600)
    assert out.returncode == 0, out.stderr[-4000:]
    runs = list((cwd / "outputs" / "default").iterdir())
    assert len(runs) == 1, runs  # the other ranks did not create run directories of their own
    return runs[0]


def _losses(run_dir: Path) -> dict[int, float]:
    rows = csv.DictReader((run_dir / "metrics.csv").open())
    return {int(r["step"]): float(r["train/loss"]) for r in rows if r.get("train/loss")}


def _assert_same_losses(got: dict[int, float], want: dict[int, float], steps: range) -> None:
    assert set(steps) <= set(got), sorted(got)
    for step in steps:
        assert got[step] == pytest.approx(want[step], rel=RTOL), f"step {step}: {got[step]} vs {want[step]}"


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """The single-process run every strategy must reproduce."""
    return _train(tmp_path_factory.mktemp("single"), "strategy=auto", "trainer.devices=1")


@pytest.fixture(scope="module")
def fsdp_run(tmp_path_factory) -> Path:
    """FSDP on 2 processes: compared with the reference, and its epoch-1 checkpoint resumed.
    With activation checkpointing, which must change neither the numbers nor the checkpoint keys
    (the resumed run on 1 process has none)."""
    overrides = ["strategy=fsdp", "trainer.devices=2", "strategy.activation_checkpointing=true"]
    return _train(tmp_path_factory.mktemp("fsdp"), *overrides)


@pytest.mark.parametrize(
    ("strategy", "devices", "extra"),
    [
        ("ddp", 2, []),
        ("fsdp", 2, []),  # the fsdp_run fixture, with activation checkpointing
        ("tp", 2, []),
        # 2 data-parallel x 2 tensor-parallel, all four steps of parallel.py but compile
        ("fsdp_tp", 4, ["strategy.activation_checkpointing=true"]),
    ],
)
def test_strategy_matches_a_single_process(request, reference, tmp_path, strategy, devices, extra):
    if strategy == "fsdp":
        run_dir = request.getfixturevalue("fsdp_run")
    else:
        run_dir = _train(tmp_path, f"strategy={strategy}", f"trainer.devices={devices}", *extra)
    want = _losses(reference)
    assert len(want) == 38  # 1257 training samples // 64 = 19 steps per epoch, 2 epochs
    _assert_same_losses(_losses(run_dir), want, range(38))
    # Validation and test metrics are synced by torchmetrics over the data-parallel ranks (under
    # tensor parallel each sample is counted once, not once per rank of its group).
    got, ref = read_results(run_dir), read_results(reference)
    for stage in ("val", "test"):
        assert set(got[stage]) == set(ref[stage]) and "acc" in got[stage]
        for key, value in ref[stage].items():
            assert got[stage][key] == pytest.approx(value, rel=RTOL, abs=1e-6), f"{stage}/{key}"
    # The tested checkpoint is the one the strategy writes: a directory of shards unless ddp.
    assert (run_dir / got["best_checkpoint"]).is_dir() == (strategy != "ddp")


def test_sharded_checkpoint_resumes_on_one_process_and_exports_one_file(reference, fsdp_run, tmp_path):
    # Epoch 1's checkpoint of FSDP on 2 processes: a directory with one shard per rank.
    sharded = fsdp_run / "checkpoints" / "epoch000-step000019.ckpt"
    assert sharded.is_dir() and len(list(sharded.glob("*.distcp"))) == 2
    # Epoch 2 on 1 process: the shards are re-split for the new world size.
    second = _train(tmp_path, "strategy=fsdp", "trainer.devices=1", f"ckpt_path={sharded}")
    _assert_same_losses(_losses(second), _losses(reference), range(19, 38))

    # The consolidated export of the resumed run's shards equals the uninterrupted run's weights.
    out = tmp_path / "weights.pt"
    done = subprocess.run(
        [sys.executable, "-m", "bigtrain.runs.export", str(second / "checkpoints" / "last.ckpt"), str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    exported = torch.load(out, weights_only=True)["state_dict"]
    want, _ = load_weights(reference / "checkpoints" / "last.ckpt")
    assert list(exported) == list(want)
    for key, value in want.items():
        torch.testing.assert_close(exported[key], value, rtol=1e-4, atol=1e-5, msg=key)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_nodes_with_torchrun_train_like_one_process(reference, tmp_path):
    """Two launchers, one per "node", meet at a rendezvous on 127.0.0.1: the same command as on a
    real cluster, with --node-rank 0 and 1 and the first node's address."""
    port, run_dir = _free_port(), tmp_path / "run"
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR" and k not in DIST_ENV}
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc-per-node=1"]
    rendezvous = ["--master-addr=127.0.0.1", f"--master-port={port}"]
    command = ["-m", "bigtrain", *COMMON, "strategy=ddp", "trainer.devices=1", "trainer.num_nodes=2"]
    nodes = [
        subprocess.Popen(
            [*launcher, f"--node-rank={rank}", *rendezvous, *command, f"hydra.run.dir={run_dir}"],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank in (0, 1)
    ]
    outs = [p.communicate(timeout=600) for p in nodes]
    for p, (_, err) in zip(nodes, outs, strict=True):
        assert p.returncode == 0, err[-4000:]
    assert read_results(run_dir)["status"] == "completed"
    _assert_same_losses(_losses(run_dir), _losses(reference), range(38))
    # Rank 1 logged to its own file, not into rank 0's bigtrain.log.
    assert (run_dir / "bigtrain.log").exists() and (run_dir / "bigtrain_rank1.log").exists()


# A byte-level GPT: tensor parallel splits heads and MLP units over 2 ranks, which must see the
# same windows (the data-parallel rank, not the global one).
LM_RUN = [
    *QUIET,
    "model=gpt/tiny",
    "data=stdlib_text",
    "data.max_bytes=60000",
    "data.seq_len=32",
    "data.batch_size=8",
    "metrics=lm",
    "trainer.accelerator=cpu",
    "trainer.max_epochs=-1",
    "trainer.max_steps=30",
    "trainer.val_check_interval=30",
    "trainer.limit_val_batches=4",
    "test_after_fit=false",
    "logger=csv",
    "trainer.log_every_n_steps=1",
    "trainer.gradient_clip_val=0.5",  # clips from the first step: mixed DTensor and plain gradients
    "callbacks.lr_monitor=false",
    "callbacks.samples.enabled=false",
    "callbacks.plots=false",
]


def test_transformer_tensor_parallel_matches_a_single_process(tmp_path):
    runs = {}
    for name, extra in (("single", []), ("tp", ["strategy=tp", "trainer.devices=2"])):
        cwd = tmp_path / name
        cwd.mkdir()
        out = bigtrain_cmd(*LM_RUN, *extra, cwd=cwd, timeout=600)
        assert out.returncode == 0, out.stderr[-4000:]
        (runs[name],) = (cwd / "outputs" / "default").iterdir()
    # Sharded matmuls sum in another order: equal to float precision at first, drifting slowly
    # (1e-7 relative over these 30 steps; about 1e-4 after 60 more).
    _assert_same_losses(_losses(runs["tp"]), _losses(runs["single"]), range(30))
    got, ref = read_results(runs["tp"]), read_results(runs["single"])
    assert got["val"]["loss"] == pytest.approx(ref["val"]["loss"], rel=RTOL)
