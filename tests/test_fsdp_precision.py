"""FSDP2's mixed precision and the activation-checkpointing modes on 2 real CPU processes (gloo).

- Under bf16-mixed, `strategy=fsdp` gathers weights in bfloat16 (strategy.param_dtype=auto) and
  reduce-scatters gradients in float32: the bytes all-gathered in a step, counted with torch's
  CommDebugMode, are half those of `strategy.param_dtype=float32` (autocast's path), and the
  bytes reduced are the same.
- Its losses equal the autocast path's within bf16's resolution; selective and every-other-block
  checkpointing equal no checkpointing. The runs are the real command line with the default
  callbacks and loggers (only their length is set, and a loss logged every step to compare).
"""

from __future__ import annotations

import csv
import json
import socket
from pathlib import Path

import pytest
import torch

from conftest import bigtrain_cmd, make_cfg, read_results

pytestmark = pytest.mark.distributed

LM_RUN = [
    "model=llama3/tiny", "data=stdlib_text", "metrics=lm", "data.max_bytes=60000", "data.seq_len=32",
    "data.batch_size=8", "strategy=fsdp", "trainer.accelerator=cpu", "trainer.devices=2",
    "trainer.max_steps=12", "trainer.val_check_interval=12", "trainer.limit_val_batches=2",
    "trainer.limit_test_batches=2", "trainer.log_every_n_steps=1",
]  # fmt: skip


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _count_collective_bytes(rank: int, port: int, param_dtype: str, out: str) -> None:
    """One forward and backward of llama3/tiny sharded over 2 processes under bf16 autocast;
    rank 0 writes the bytes all-gathered and reduce-scattered, and the dtypes seen."""
    import os

    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor.debug import CommDebugMode

    from bigtrain.data import data_spec
    from bigtrain.distributed.parallel import parallelize
    from bigtrain.models import build_model

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    cfg = make_cfg(["model=llama3/tiny", "data=stdlib_text", "data.max_bytes=60000", "data.seq_len=32",
                    "strategy=fsdp", "trainer.devices=2", "trainer.accelerator=cpu",
                    f"strategy.param_dtype={param_dtype}", "trainer.precision=bf16-mixed"])  # fmt: skip
    spec = data_spec(cfg)
    torch.manual_seed(0)
    model = build_model(cfg.model, spec.input_shape, spec.num_outputs)
    mesh = init_device_mesh("cpu", (2, 1), mesh_dim_names=("data_parallel", "tensor_parallel"))
    parallelize(model, cfg.strategy, mesh, num_nodes=1, precision="bf16-mixed")
    gathered = reduced = 0
    gather_ops = {
        torch.ops.c10d._allgather_base_.default,
        torch.ops.c10d.allgather_into_tensor_coalesced_.default,
    }
    reduce_ops = {
        torch.ops.c10d._reduce_scatter_base_.default,
        torch.ops.c10d.reduce_scatter_tensor_coalesced_.default,
    }
    dtypes = set()

    class CollectiveBytes(CommDebugMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            nonlocal gathered, reduced
            if func in gather_ops or func in reduce_ops:
                # The second argument is what this rank sends: its shard (all-gather) or its whole
                # unsharded gradient (reduce-scatter).
                sent = args[1] if isinstance(args[1], torch.Tensor) else args[1][0]
                size = sent.numel() * sent.element_size()
                dtypes.add(str(sent.dtype))
                if func in gather_ops:
                    gathered += size
                else:
                    reduced += size
            return super().__torch_dispatch__(func, types, args, kwargs)

    tokens = torch.randint(0, spec.vocab_size, (4, 32))
    with CollectiveBytes() as comm, torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(tokens)
        torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), tokens.flatten()).backward()
    counts = {str(k): v for k, v in comm.get_comm_counts().items()}
    grad_dtypes = sorted({str(p.grad.dtype) for p in model.parameters()})
    if rank == 0:
        Path(out).write_text(json.dumps(
            {"gathered": gathered, "reduced": reduced, "counts": counts, "grads": grad_dtypes,
             "dtypes": sorted(dtypes), "logits": str(logits.dtype)}
        ))  # fmt: skip
    dist.barrier()  # neither rank leaves while the other still talks to it
    dist.destroy_process_group()


def _collective_bytes(tmp_path: Path, param_dtype: str) -> dict:
    out = tmp_path / f"{param_dtype}.json"
    torch.multiprocessing.spawn(
        _count_collective_bytes, args=(_free_port(), param_dtype, str(out)), nprocs=2, join=True
    )
    return json.loads(out.read_text())


def test_bf16_gathers_move_half_the_bytes_and_gradients_are_reduced_in_fp32(tmp_path):
    mixed, fp32 = _collective_bytes(tmp_path, "auto"), _collective_bytes(tmp_path, "float32")
    assert mixed["gathered"] > 0 and mixed["counts"] == fp32["counts"]
    assert mixed["gathered"] * 2 == fp32["gathered"]  # every weight gathered in 2 bytes, not 4
    assert mixed["reduced"] == fp32["reduced"]  # gradients reduced in float32 both ways
    assert mixed["grads"] == fp32["grads"] == ["torch.float32"]  # the optimizer's shards stay fp32
    assert "torch.bfloat16" in mixed["dtypes"] and "torch.bfloat16" not in fp32["dtypes"]
    assert mixed["logits"] == "torch.bfloat16"


def _run(cwd: Path, *extra: str) -> dict[int, float]:
    cwd.mkdir(parents=True, exist_ok=True)
    out = bigtrain_cmd(*LM_RUN, *extra, cwd=cwd, timeout=900)
    assert out.returncode == 0, out.stderr[-4000:]
    (run_dir,) = list((cwd / "outputs" / "default").iterdir())
    assert read_results(run_dir)["status"] == "completed"
    rows = csv.DictReader((run_dir / "metrics.csv").open())
    losses = {int(r["step"]): float(r["train/loss"]) for r in rows if r.get("train/loss")}
    assert sorted(losses) == list(range(12)), sorted(losses)
    return losses


def test_fsdp_mixed_precision_equals_the_autocast_path_within_bf16_tolerance(tmp_path):
    mixed = _run(tmp_path / "mixed", "trainer.precision=bf16-mixed")
    autocast = _run(tmp_path / "autocast", "trainer.precision=bf16-mixed", "strategy.param_dtype=float32")
    for step, loss in autocast.items():
        # bf16 keeps 8 bits of mantissa: weights rounded to it differ from autocast's casts
        # only where autocast keeps float32 (norms, the residual stream, the embedding)
        assert mixed[step] == pytest.approx(loss, rel=2e-2), step
    assert mixed[11] < mixed[0] - 0.5  # and both train


@pytest.fixture(scope="module")
def plain(tmp_path_factory) -> dict[int, float]:
    return _run(tmp_path_factory.mktemp("plain"), "strategy.activation_checkpointing=false")


@pytest.mark.parametrize("mode", ["selective", "every_n:2"])
def test_checkpointing_modes_under_fsdp_equal_no_checkpointing(tmp_path, plain, mode):
    checkpointed = _run(tmp_path / mode.replace(":", "_"), f"strategy.activation_checkpointing={mode}")
    for step, loss in plain.items():
        assert checkpointed[step] == pytest.approx(loss, rel=1e-5), step
