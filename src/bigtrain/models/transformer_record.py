"""The Transformer family's record (models/family.py): token windows in, GPT and LLaMA shapes as
presets, a Megatron-style tensor-parallel plan, Hugging Face GPT-2 and LLaMA layouts (and
`model=hf`, the model from a folder's config.json: from_folder). Its
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


# `model=hf` (conf/model/hf.yaml, runs/compose.folder_model): each of these keys the user did not
# type is the folder's (models/hf.py `model_keys` maps config.json to them, for both layouts).
PRESET = "hf"
FOLDER_KEYS = ("n_layers", "d_model", "n_heads", "n_kv_heads", "d_ff", "vocab_size", "max_seq_len", "norm",
               "mlp", "positions", "tie_embeddings", "bias", "norm_eps", "rope_theta")  # fmt: skip
# The kind of value each takes (the others: an integer > 0).
KINDS = {"norm_eps": float, "rope_theta": float, "tie_embeddings": bool, "bias": bool, "norm": str, "mlp": str,
         "positions": str}  # fmt: skip


def _of_kind(field: str, value: Any) -> bool:
    """Whether config.json's value is of the kind the model key takes (numbers: > 0)."""
    kind = KINDS.get(field, int)
    if kind in (bool, str) or isinstance(value, bool):
        return isinstance(value, kind)
    return isinstance(value, kind | int) and value > 0


def from_folder(folder: str, fill: list[str], typed: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """(the values `folder`'s config.json gives the model keys `fill`, one line per problem: an
    unreadable folder or unsupported setting, a value it lacks, a typed key that disagrees).
    config.json only, plain JSON: check_init_from then holds the weights to the model, and a
    typed null (d_ff, vocab_size: computed from other keys or the data) with them."""
    from bigtrain.config import fmt
    from bigtrain.models.hf import HFError, implied, model_keys, read_config, unsupported

    where = f"model.init_from={folder}"
    try:
        hf = read_config(folder)
    except HFError as e:
        return {}, [f"{where} {e}" if not str(e).startswith("config.json") else f"{where}: {e}"]
    problems = [f"{where}: {line}" for line in unsupported(hf)]
    keys, values = model_keys(hf), {}
    for field in [f for f in fill if f in keys and keys[f][1] is not None]:
        key, value = keys[field]
        if not _of_kind(field, value):
            problems.append(f"{where}: config.json {key}={fmt(value)} is not a value model.{field} takes")
        else:
            values[field] = float(value) if KINDS.get(field) is float else value
    for field in [f for f in fill if f not in values and not problems]:
        problems.append(f"{where}: its config.json gives no model.{field}: set model.{field}=...")
    fixed = {f for f, _, _ in implied(hf)} | {"vocab_size"}  # LLaMA's context is the run's choice
    for field, have in [(f, v) for f, v in typed.items() if f in fixed and f in keys]:
        key, want = keys[field]
        if have is None and field == "n_kv_heads":  # as many as the query heads
            have = {**values, **typed}.get("n_heads")
        if have is not None and want is not None and have != want:
            shown = (
                f"model_type={hf['model_type']}" if key == "model_type" else f"{key}={fmt(hf.get(key, want))}"
            )
            problems.append(
                f"model.{field}={fmt(typed[field])} disagrees with {where}: its config.json {shown} needs "
                f"model.{field}={fmt(want)}; leave model.{field} out to take the folder's"
            )
    return values, problems


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
