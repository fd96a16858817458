"""The Lightning strategy and cluster plugins a validated config asks for."""

from __future__ import annotations

from typing import Any

from bigtrain.config import RunConfig, tensor_parallel_size


def build_strategy(cfg: RunConfig) -> Any:
    """Lightning's strategy object. fsdp, tp and fsdp_tp all use ModelParallelStrategy: it builds
    the (data_parallel, tensor_parallel) device mesh and calls the module's configure_model, where
    parallel.py applies FSDP2 and tensor parallel; it runs on CPU (gloo) as well as on GPUs."""
    s = cfg.strategy
    if s.name == "ddp":
        from pytorch_lightning.strategies import DDPStrategy

        return DDPStrategy(find_unused_parameters=s.find_unused_parameters)
    if s.name in ("fsdp", "tp", "fsdp_tp"):
        from pytorch_lightning.strategies import ModelParallelStrategy

        tp = tensor_parallel_size(s)
        world = cfg.trainer.devices * cfg.trainer.num_nodes
        # Sharded checkpoints: each rank writes its shard (no gather of the whole model on rank 0),
        # and the directory loads on any number of processes.
        return ModelParallelStrategy(
            data_parallel_size=world // tp, tensor_parallel_size=tp, save_distributed_checkpoint=True
        )
    if s.name.startswith("deepspeed"):
        from pytorch_lightning.strategies import DeepSpeedStrategy

        return DeepSpeedStrategy(
            stage=3 if s.name.endswith("zero3") else 2,
            offload_optimizer=s.offload_optimizer,
            offload_parameters=s.offload_parameters,
        )
    return "auto"


def build_plugins() -> list:
    """Under SLURM, Lightning's own requeue handler is off: RequeueOnSignal saves at an epoch end."""
    from lightning_fabric.plugins.environments import SLURMEnvironment

    return [SLURMEnvironment(auto_requeue=False)] if SLURMEnvironment.detect() else []
