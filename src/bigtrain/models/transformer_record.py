"""The Transformer family's record (models/family.py): token windows in, GPT and LLaMA shapes as
presets, a Megatron-style tensor-parallel plan, Hugging Face GPT-2 and LLaMA layouts. Its
nn.Module and torch functions: models/transformer.py; its torch-free shape tables, for the plan:
models/shapes.py; its Hugging Face maps: models/hf.py."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from bigtrain.models.family import Family


def _shape(cfg: Any) -> Iterator[str]:
    """Heads and RoPE head size, then the model.init_from folder against them; a resume of a
    run from before gelu_tanh existed."""
    problems = list(_transformer(cfg.model))
    yield from problems
    if not problems:
        yield from check_init_from(cfg)
    yield from _resume_of_tanh_gelu(cfg)


def _tp_checks(cfg: Any, tp: int) -> Iterator[str]:
    """Attention splits over the tensor-parallel group by whole (key/value) heads."""
    m = cfg.model
    for key, heads in (("n_heads", m.n_heads), ("n_kv_heads", m.n_kv_heads)):
        if heads is not None and heads % tp:
            yield (
                f"model.{key}={heads} is not divisible by strategy.tensor_parallel_size={tp}: "
                f"set strategy.tensor_parallel_size to a divisor of {heads}"
            )


def _transformer(m) -> Iterator[str]:
    if m.d_model % m.n_heads:
        yield (
            f"model.d_model={m.d_model} is not divisible by model.n_heads={m.n_heads}: set model.n_heads to a divisor"
        )
    elif m.positions == "rope" and m.head_dim % 2:
        yield f"RoPE needs an even head size, got {m.head_dim}: change model.n_heads or model.d_model"
    if m.n_heads % m.kv_heads:
        yield (
            f"model.n_heads={m.n_heads} is not divisible by model.n_kv_heads={m.kv_heads}: set model.n_kv_heads to a divisor"
        )


def check_init_from(cfg: Any) -> Iterator[str]:
    """model.init_from: a GPT-2 or LLaMA folder whose config.json, tensor names and shapes fit the
    model, and whose vocabulary is the model's (config.json and the safetensors headers only)."""
    m = cfg.model
    if m.init_from is None:
        return
    from bigtrain.models.hf import folder_problems

    yield from folder_problems(m.init_from, m, _model_vocab(cfg))


def _model_vocab(cfg: Any) -> int | None:
    """The vocabulary the transformer will have; None while the data's is unknown (its own
    checks report missing files and tokenizers)."""
    if cfg.model.vocab_size is not None:
        return cfg.model.vocab_size
    from bigtrain.data import source

    data = source(cfg.data.name)
    if data.inputs(cfg.data.name) != "tokens":
        return None
    try:
        return data.spec(cfg).vocab_size
    except Exception:  # a missing tokenizer or token file: reported by the source's own checks
        return None


def _resume_of_tanh_gelu(cfg: Any) -> Iterator[str]:
    """resume= of a run saved before `gelu_tanh` existed, when `mlp: gelu` meant the tanh
    approximation (its saved model config has no init_from): continuing it with exact GELU would
    silently change the function it trained (a preset that says gelu_tanh now is refused by the
    resume's own comparison of the configs)."""
    if cfg.resume is None or cfg.model.mlp != "gelu":
        return
    from pathlib import Path

    from omegaconf import OmegaConf

    saved = Path(cfg.resume, ".hydra", "config.yaml")
    try:
        model = OmegaConf.to_container(OmegaConf.load(saved)).get("model") or {}
    except Exception:  # no or a damaged saved config: the resume's own checks say so
        return
    if model.get("family") == "transformer" and "init_from" not in model and model.get("mlp") == "gelu":
        yield (
            f"resume={cfg.resume}: the run started when model.mlp=gelu meant the tanh approximation "
            "(now gelu_tanh): continue it as a new run from its checkpoint with "
            f"ckpt_path={Path(cfg.resume, 'checkpoints', 'last.ckpt')} model.mlp=gelu_tanh"
        )


FAMILY = Family(
    name="transformer",
    inputs="tokens",
    module="bigtrain.models.transformer",
    checks=(_shape,),
    tp_checks=_tp_checks,
    hf_layout=True,
    plan_from_shapes=True,
)
