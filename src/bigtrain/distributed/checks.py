"""Config checks of strategy x hardware x model: parallel sizes, processes, packages, devices.

Each check takes the RunConfig and yields one line per problem, naming the override that fixes
it (runs/validate.py runs them in order). Nothing here imports torch at module level: the
DTensor check looks on disk, and torch is imported only for a GPU, MPS, fp16 or DeepSpeed run.
"""

from __future__ import annotations

from collections.abc import Iterator

from bigtrain.config import RunConfig, tensor_parallel_size

# Strategies built on DTensor (FSDP2's fully_shard and tensor parallel).
DTENSOR_STRATEGIES = ("fsdp", "tp", "fsdp_tp")


def check_parallel(cfg: RunConfig) -> Iterator[str]:
    """Tensor-parallel sizes against devices and model, FSDP's group count and hybrid sharding."""
    s, t = cfg.strategy, cfg.trainer
    tp = tensor_parallel_size(s)
    divides = t.devices % tp == 0
    if s.name in ("tp", "fsdp_tp"):
        if not divides:
            yield (
                f"strategy.tensor_parallel_size={tp} must divide trainer.devices={t.devices} "
                f"(tensor-parallel groups stay inside a node): set strategy.tensor_parallel_size to a divisor of {t.devices}"
            )
        yield from _tensor_parallel_model(cfg, tp)
    world = t.devices * t.num_nodes
    if s.name == "fsdp_tp" and divides and world // tp < 2:
        yield (
            f"strategy=fsdp_tp needs at least 2 tensor-parallel groups but devices x nodes = {world} and "
            f"tensor_parallel_size={tp}: use strategy=tp or more devices"
        )
    if s.name == "fsdp" and s.sharding == "hybrid" and t.num_nodes < 2:
        yield (
            "strategy.sharding=hybrid replicates across nodes but trainer.num_nodes=1: "
            "set strategy.sharding=full or trainer.num_nodes=2 (or more)"
        )


def _tensor_parallel_model(cfg: RunConfig, tp: int) -> Iterator[str]:
    """The model's family must have a tensor-parallel plan that splits it over the group (its
    record's tp_checks: heads that divide, norms that do not span split features...)."""
    from bigtrain.models.family import family

    yield from family(cfg.model.family).tensor_parallel_problems(cfg, tp)


def check_processes(cfg: RunConfig) -> Iterator[str]:
    """Multi-process strategies need several processes, and several CPU processes need one."""
    t = cfg.trainer
    if cfg.strategy.name == "ddp" and cfg.data_parallel_size == 1:
        yield "strategy=ddp needs more than one process: set trainer.devices=2 (or more)"
    if cfg.strategy.name == "auto" and t.devices > 1 and t.accelerator == "cpu":
        yield f"trainer.devices={t.devices} on CPU needs a multi-process strategy: add strategy=ddp"


def check_batch_split(cfg: RunConfig) -> Iterator[str]:
    """The global batch must split evenly over data-parallel processes and accumulation steps.
    Needs a valid tensor-parallel size (check_parallel)."""
    t = cfg.trainer
    from bigtrain.data import source

    if source(cfg.data.name).batches_itself:  # a data module of your own batches per process
        return
    per_step = cfg.data_parallel_size * t.accumulate_grad_batches
    if cfg.data.batch_size % per_step:
        tp = tensor_parallel_size(cfg.strategy)
        over_tp = f" / tensor_parallel_size {tp}" if tp > 1 else ""
        yield (
            f"data.batch_size={cfg.data.batch_size} (the global batch) is not divisible by "
            f"devices x nodes{over_tp} x accumulation = {t.devices} x {t.num_nodes}{over_tp} x "
            f"{t.accumulate_grad_batches} = {per_step}; set data.batch_size to a multiple of {per_step}"
        )


def check_parallel_packages(cfg: RunConfig) -> Iterator[str]:
    """DTensor in torch for FSDP2 and tensor parallel; deepspeed and a CUDA GPU for DeepSpeed."""
    name = cfg.strategy.name
    if name in DTENSOR_STRATEGIES and not _has_dtensor():
        yield (
            f"strategy={name} needs a torch with DTensor (torch>=2.4 built with distributed): "
            "upgrade torch or use strategy=ddp"
        )
    if name.startswith("deepspeed"):
        yield from _deepspeed(cfg)


def _has_dtensor() -> bool:
    import importlib.util
    from pathlib import Path

    # Looked up on disk: find_spec of a submodule would import torch (seconds) just to check.
    spec = importlib.util.find_spec("torch")
    where = Path(spec.origin).parent if spec is not None and spec.origin else None
    return where is not None and (where / "distributed" / "tensor" / "__init__.py").is_file()


def _deepspeed(cfg: RunConfig) -> Iterator[str]:
    """One line: the first of package, accelerator, visible GPU that is missing."""
    import importlib.util

    name = cfg.strategy.name
    if importlib.util.find_spec("deepspeed") is None:
        yield (
            f"strategy={name} needs the deepspeed package: pip install 'bigtrain[deepspeed]', "
            "or use strategy=fsdp"
        )
        return
    if cfg.trainer.accelerator not in ("auto", "gpu", "cuda"):
        yield f"strategy={name} runs on CUDA GPUs only: set trainer.accelerator=gpu or use strategy=fsdp"
        return
    import torch

    if not torch.cuda.is_available():
        yield f"strategy={name} needs a CUDA GPU and none is visible: use strategy=fsdp or strategy=ddp"


def check_hardware(cfg: RunConfig) -> Iterator[str]:
    """Devices and precision against this machine; torch is imported only when the config asks
    for a GPU, MPS or fp16."""
    t = cfg.trainer
    wants_gpu = t.accelerator in ("gpu", "cuda")
    if t.precision == "16-mixed" and t.accelerator == "cpu":
        yield "trainer.precision=16-mixed needs a GPU: on CPU use trainer.precision=bf16-mixed or 32-true"
    fp16_auto = t.precision == "16-mixed" and t.accelerator == "auto"
    many_auto = t.accelerator == "auto" and t.devices > 1
    if cfg.dry_run or not (wants_gpu or fp16_auto or many_auto or t.accelerator == "mps"):
        return  # a dry run plans for the hardware named, which need not be this machine
    import torch

    if many_auto and not torch.cuda.is_available():
        # Lightning would quietly start that many CPU processes: say so and let the user choose.
        yield (
            f"trainer.devices={t.devices} asks for {t.devices} GPUs but none is visible: add "
            "trainer.accelerator=cpu to run that many CPU processes, or run on a machine with GPUs"
        )
    elif many_auto and t.devices > torch.cuda.device_count():
        count = torch.cuda.device_count()
        yield f"trainer.devices={t.devices} but only {count} GPU(s) are visible: set trainer.devices={count}"

    if t.accelerator == "mps" and not torch.backends.mps.is_available():
        yield "trainer.accelerator=mps but this machine has no Apple GPU: use trainer.accelerator=cpu"
    if wants_gpu:
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            yield (
                f"trainer.accelerator={t.accelerator} but no CUDA GPU is visible: use trainer.accelerator=cpu "
                "(or auto), or run on a machine with a GPU"
            )
        elif t.devices > count:
            yield f"trainer.devices={t.devices} but only {count} GPU(s) are visible: set trainer.devices={count}"
    if fp16_auto and not torch.cuda.is_available():
        yield (
            "trainer.precision=16-mixed needs a GPU and none is visible: use trainer.precision=bf16-mixed or 32-true"
        )
