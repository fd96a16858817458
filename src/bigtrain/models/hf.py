"""Hugging Face GPT-2 and LLaMA folders in and out: config.json + *.safetensors <-> the Transformer.

A folder as `save_pretrained` writes it for GPT2LMHeadModel (`model_type: gpt2`, the layout of
`model=gpt/*`) or LlamaForCausalLM (`model_type: llama`, `model=llama/*`). Reading: config.json
fixes the shape: `model=hf` takes every key it fixes from it (`model_keys`;
transformer_record.from_folder, at composition); with another preset each must equal the preset's (one line per field that differs, naming the
override that makes it match); the vocabulary must equal the model's (`model.vocab_size`, or the
data's when that is null). Writing: config.json and model.safetensors that
`transformers.AutoModelForCausalLM.from_pretrained` loads.

The layouts differ from bigtrain's names (tok_emb, pos_emb, blocks[i].{norm1, attn.{wqkv,wo},
norm2, mlp.{w1,w2,w3}}, norm_f, head) in four ways: the names; GPT-2 stores its projections as
Conv1D weights, (in, out), the transpose of nn.Linear's (out, in); GPT-2 fuses q, k and v into
one `c_attn` side by side (out = q | k | v) and LLaMA keeps them apart, where bigtrain's `wqkv`
groups them by key/value head (models/transformer.py). So the mapping goes through separate
q, k, v (`separate_params`: attn.wq, attn.wk, attn.wv): split from wqkv on export, and fused
by Attention's own load-state-dict pre-hook on import. LLaMA's q/k
weights are already in the halves layout of rotary embeddings that bigtrain's apply_rope uses,
so they are copied as they are.

Validation uses only the JSON and the safetensors headers (tensor names and shapes, numpy
framework): no torch, no weights read. torch is imported by the functions that move tensors.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bigtrain.config import config_error, fmt
from bigtrain.models.shapes import Param, transformer_params

GPT2, LLAMA = "gpt2", "llama"
# GPT-2's activation names (transformers' ACT2FN) -> model.mlp
GPT2_ACTIVATIONS = {"gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "gelu": "gelu"}
MLP_TO_GPT2 = {"gelu_tanh": "gelu_new", "gelu": "gelu"}
# Where bigtrain's modules live in each layout, outside the blocks and inside block i.
TOP = {
    GPT2: {"tok_emb": "transformer.wte", "pos_emb": "transformer.wpe", "norm_f": "transformer.ln_f",
           "head": "lm_head"},
    LLAMA: {"tok_emb": "model.embed_tokens", "norm_f": "model.norm", "head": "lm_head"},
}  # fmt: skip
BLOCKS = {GPT2: "transformer.h", LLAMA: "model.layers"}
IN_BLOCK = {
    GPT2: {"norm1": "ln_1", "norm2": "ln_2", "attn.wo": "attn.c_proj", "mlp.w1": "mlp.c_fc",
           "mlp.w2": "mlp.c_proj"},
    LLAMA: {"norm1": "input_layernorm", "norm2": "post_attention_layernorm",
            "attn.wq": "self_attn.q_proj", "attn.wk": "self_attn.k_proj", "attn.wv": "self_attn.v_proj",
            "attn.wo": "self_attn.o_proj", "mlp.w1": "mlp.gate_proj", "mlp.w2": "mlp.down_proj",
            "mlp.w3": "mlp.up_proj"},
}  # fmt: skip
FUSED_QKV = {"attn.wq": 0, "attn.wk": 1, "attn.wv": 2}  # GPT-2's c_attn: q | k | v
# Buffers that older transformers versions saved with the weights: the causal mask, RoPE's table.
BUFFERS = (".attn.bias", ".attn.masked_bias", ".rotary_emb.inv_freq")
WEIGHTS_FILE = "model.safetensors"


class HFError(ValueError):
    """A folder bigtrain cannot read or a model it cannot write; the message is one line."""


# --------------------------------------------------------------------------- config.json


def read_config(folder: str | Path) -> dict:
    """config.json of a GPT-2 or LLaMA folder; HFError (one line) for anything else."""
    path = Path(folder)
    if not path.exists():
        raise HFError("does not exist: give a local Hugging Face model folder (config.json, *.safetensors)")
    if not path.is_dir():
        raise HFError("is not a folder: give the folder that holds config.json and *.safetensors")
    if not (path / "config.json").is_file():
        raise HFError("has no config.json: give a folder that save_pretrained wrote")
    try:
        hf = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise HFError(f"config.json is not JSON ({e})") from e
    kind = hf.get("model_type") if isinstance(hf, dict) else None
    if kind not in (GPT2, LLAMA):
        raise HFError(
            f"config.json has model_type={fmt(kind)}: bigtrain reads gpt2 (model=gpt/*) and llama (model=llama/*)"
        )
    return hf


def weight_files(folder: str | Path) -> list[Path]:
    """The folder's *.safetensors files (one, or the shards of a large model)."""
    files = sorted(Path(folder).glob("*.safetensors"))
    if not files:
        raise HFError("has no *.safetensors file: save the weights with save_pretrained (its default format)")
    return files


def _rope_theta(hf: dict) -> float:
    """RoPE's base: `rope_theta` (transformers 4) or `rope_parameters.rope_theta` (5)."""
    params = hf.get("rope_parameters") or {}
    theta = hf.get("rope_theta")
    return float(theta if theta is not None else params.get("rope_theta") or 10000.0)


def implied(hf: dict) -> list[tuple[str, str, Any]]:
    """(model field, config.json key, the value the field must have) for each setting the
    weights fix. Absent keys take transformers' defaults for that model type."""
    if hf["model_type"] == GPT2:
        d, heads = hf.get("n_embd", 768), hf.get("n_head", 12)
        act = hf.get("activation_function", "gelu_new")
        return [
            ("n_layers", "n_layer", hf.get("n_layer", 12)), ("d_model", "n_embd", d),
            ("n_heads", "n_head", heads), ("n_kv_heads", "n_head", heads),
            ("d_ff", "n_inner", hf.get("n_inner") or 4 * d),
            ("max_seq_len", "n_positions", hf.get("n_positions", 1024)),
            ("norm", "model_type", "layernorm"), ("positions", "model_type", "learned"),
            ("bias", "model_type", True), ("mlp", "activation_function", GPT2_ACTIVATIONS.get(act)),
            ("tie_embeddings", "tie_word_embeddings", hf.get("tie_word_embeddings", True)),
            ("norm_eps", "layer_norm_epsilon", hf.get("layer_norm_epsilon", 1e-5)),
        ]  # fmt: skip
    heads = hf.get("num_attention_heads", 32)
    return [
        ("n_layers", "num_hidden_layers", hf.get("num_hidden_layers", 32)),
        ("d_model", "hidden_size", hf.get("hidden_size", 4096)), ("n_heads", "num_attention_heads", heads),
        ("n_kv_heads", "num_key_value_heads", hf.get("num_key_value_heads") or heads),
        ("d_ff", "intermediate_size", hf.get("intermediate_size", 11008)),
        ("norm", "model_type", "rmsnorm"), ("positions", "model_type", "rope"), ("mlp", "model_type", "swiglu"),
        ("bias", "attention_bias", hf.get("attention_bias", False)),
        ("tie_embeddings", "tie_word_embeddings", hf.get("tie_word_embeddings", False)),
        ("norm_eps", "rms_norm_eps", hf.get("rms_norm_eps", 1e-6)), ("rope_theta", "rope_theta", _rope_theta(hf)),
    ]  # fmt: skip


def unsupported(hf: dict) -> Iterator[str]:
    """Settings of config.json that bigtrain's Transformer has no counterpart for."""
    if hf["model_type"] == GPT2:
        act = hf.get("activation_function", "gelu_new")
        if act not in GPT2_ACTIVATIONS:
            yield f"config.json activation_function={act}: bigtrain's GPT-2 MLP is gelu or gelu_new (gelu_tanh)"
        if not hf.get("scale_attn_weights", True) or hf.get("scale_attn_by_inverse_layer_idx", False):
            yield "config.json scales attention otherwise than by 1/sqrt(head size): bigtrain has no such option"
        if hf.get("add_cross_attention", False):
            yield "config.json add_cross_attention=true: bigtrain's Transformer is decoder-only"
        return
    heads, d = hf.get("num_attention_heads", 32), hf.get("hidden_size", 4096)
    if hf.get("head_dim") not in (None, d // heads):
        yield f"config.json head_dim={hf['head_dim']} is not hidden_size / num_attention_heads: bigtrain has no such option"
    if hf.get("hidden_act", "silu") != "silu":
        yield f"config.json hidden_act={hf['hidden_act']}: bigtrain's SwiGLU gates with silu"
    if hf.get("mlp_bias", False) != hf.get("attention_bias", False):
        yield "config.json mlp_bias differs from attention_bias: bigtrain has one model.bias for both"
    scaling = hf.get("rope_scaling") or hf.get("rope_parameters") or {}
    if scaling.get("rope_type", scaling.get("type", "default")) != "default":
        yield "config.json scales RoPE (rope_scaling): bigtrain's rotary embeddings are unscaled"


def model_keys(hf: dict) -> dict[str, tuple[str, Any]]:
    """{model key: (config.json key, value)} for every key `model=hf` takes: implied()'s, the vocabulary, LLaMA's
    context (RoPE has no table: a run may choose another) and GPT-2's unused RoPE base."""
    keys = {field: (key, want) for field, key, want in implied(hf) if want is not None}
    keys["vocab_size"] = ("vocab_size", hf.get("vocab_size"))
    if hf["model_type"] == GPT2:
        keys["rope_theta"] = ("model_type", 10000.0)
    else:
        keys["max_seq_len"] = ("max_position_embeddings", hf.get("max_position_embeddings", 2048))
    return keys


def _have(m: Any, field: str) -> Any:
    return {"n_kv_heads": m.kv_heads, "d_ff": m.ffn_dim}.get(field, getattr(m, field))


def mismatches(hf: dict, m: Any) -> Iterator[str]:
    """One line per model field whose value differs from what config.json fixes (one line in
    all when the preset is of the other family)."""
    kind = hf["model_type"]
    shape = {GPT2: ("layernorm", "learned"), LLAMA: ("rmsnorm", "rope")}[kind]
    if (m.norm, m.positions) != shape:
        family = "gpt" if kind == GPT2 else "llama"
        yield (
            f"config.json model_type={kind} needs model.norm={shape[0]} and model.positions={shape[1]}, "
            f"the model has {m.norm} and {m.positions}: choose a model={family}/* preset or model=hf"
        )
        return
    for field, key, want in implied(hf):
        if want is None:  # an activation unsupported() reports
            continue
        have = _have(m, field)
        if have != want:
            shown = hf["model_type"] if key == "model_type" else fmt(hf.get(key, want))
            yield (
                f"config.json {key}={shown} needs model.{field}={fmt(want)}, the model has {fmt(have)}: "
                f"set model.{field}={fmt(want)}, or model=hf to take every key from the folder"
            )


# --------------------------------------------------------------------------- tensor names


def qkv_rows(m: Any) -> list[int]:
    """Rows of q, k and v (query heads, then key and value heads, times the head size)."""
    return [m.n_heads * m.head_dim, m.kv_heads * m.head_dim, m.kv_heads * m.head_dim]


def separate_params(m: Any, vocab: int) -> list[Param]:
    """transformer_params with each block's wqkv as the three tensors wq, wk, wv."""
    sizes = dict(zip(("wq", "wk", "wv"), qkv_rows(m), strict=True))
    out = []
    for p in transformer_params(m, vocab):
        module, _, leaf = p.name.rpartition(".")
        if not module.endswith(".attn.wqkv"):
            out.append(p)
            continue
        base = module.removesuffix(".wqkv")
        for w, rows in sizes.items():
            out.append(dataclasses.replace(p, name=f"{base}.{w}.{leaf}", shape=(rows, *p.shape[1:])))
    return out


def _split_state(state: dict, m: Any) -> dict:
    """bigtrain's state dict with each wqkv split into wq, wk, wv (separate_params' names; the
    inverse of Attention's load-state-dict pre-hook)."""
    from bigtrain.models.transformer import split_qkv

    out = {}
    for name, t in state.items():
        module, _, leaf = name.rpartition(".")
        if module.endswith(".attn.wqkv"):
            base = module.removesuffix(".wqkv")
            for w, part in zip(("wq", "wk", "wv"), split_qkv(t, m.n_heads, m.kv_heads), strict=True):
                out[f"{base}.{w}.{leaf}"] = part
        else:
            out[name] = t
    return out


def route(kind: str, p: Param) -> tuple[str, int | None, bool]:
    """(the HF tensor that holds bigtrain's parameter `p`, which third of GPT-2's fused c_attn it
    is or None, whether it is stored transposed)."""
    module, _, leaf = p.name.rpartition(".")
    transposed = kind == GPT2 and p.matmul and module != "head"  # Conv1D: (in, out)
    if module in TOP[kind]:
        return f"{TOP[kind][module]}.{leaf}", None, transposed
    _, index, inner = module.split(".", 2)  # blocks.<i>.<inner>
    block = f"{BLOCKS[kind]}.{index}"
    if kind == GPT2 and inner in FUSED_QKV:
        return f"{block}.attn.c_attn.{leaf}", FUSED_QKV[inner], transposed
    return f"{block}.{IN_BLOCK[kind][inner]}.{leaf}", None, transposed


def hf_shapes(kind: str, m: Any, vocab: int) -> dict[str, tuple[int, ...]]:
    """Every tensor the HF layout holds for this model, with its shape."""
    acc: dict[str, tuple[list[int], bool]] = {}
    for p in separate_params(m, vocab):
        name, part, transposed = route(kind, p)
        if name in acc:  # q | k | v stack along the output dimension
            acc[name][0][0] += p.shape[0]
        else:
            acc[name] = (list(p.shape), transposed)
    return {n: tuple(reversed(s)) if t else tuple(s) for n, (s, t) in acc.items()}


def normal_name(kind: str, name: str) -> str:
    """A tensor name with the layout's prefix, also for folders of the bare model (GPT2Model,
    LlamaModel) that save without it."""
    prefix = TOP[kind]["tok_emb"].split(".")[0] + "."
    return name if name.startswith((prefix, "lm_head.")) else prefix + name


def _header_shapes(files: list[Path], kind: str) -> dict[str, tuple[int, ...]]:
    from safetensors import safe_open

    found = {}
    for file in files:
        with safe_open(str(file), framework="numpy") as f:
            for key in f.keys():  # noqa: SIM118 (safe_open is not a mapping)
                found[normal_name(kind, key)] = tuple(f.get_slice(key).get_shape())
    return found


def _more(names: list[str]) -> str:
    return names[0] + (f" and {len(names) - 1} more" if len(names) > 1 else "")


def tensor_problems(files: list[Path], kind: str, m: Any, vocab: int) -> Iterator[str]:
    """Tensors the model needs that the files lack or hold in another shape, and tensors it has
    no place for (one line each kind), from the files' headers alone."""
    try:
        found = _header_shapes(files, kind)
    except Exception as e:  # safetensors' own error type for a damaged header
        yield f"its safetensors files cannot be read ({e})"
        return
    want = hf_shapes(kind, m, vocab)
    missing = [n for n in want if n not in found]
    wrong = [n for n in want if n in found and found[n] != want[n]]
    spare = {"lm_head.weight"} if m.tie_embeddings else set()  # a copy of the tied embedding
    extra = [n for n in found if n not in want and n not in spare and not n.endswith(BUFFERS)]
    if missing:
        yield f"the weights lack {_more(missing)}: the folder does not match its config.json"
    if wrong:
        yield f"{wrong[0]} has shape {list(found[wrong[0]])}, the model needs {list(want[wrong[0]])}"
    if extra:
        yield f"the weights hold {_more(extra)}, which the model has no place for"


def folder_problems(folder: str | Path, m: Any, vocab: int | None) -> list[str]:
    """Every reason the HF `folder` cannot start the model `m`, one line each (empty when it
    can). `vocab` is the model's vocabulary, None where the data's is not known yet."""
    where = f"model.init_from={folder}"
    try:
        hf = read_config(folder)
        files = weight_files(folder)
    except HFError as e:
        return [f"{where} {e}" if not str(e).startswith("config.json") else f"{where}: {e}"]
    lines = [*unsupported(hf), *mismatches(hf, m)]
    hf_vocab = hf.get("vocab_size")
    if vocab is not None and hf_vocab != vocab:
        source = "model.vocab_size" if m.vocab_size is not None else "the data's, as model.vocab_size=null"
        lines.append(
            f"config.json vocab_size={fmt(hf_vocab)}, the model's vocabulary is {vocab} ({source}): "
            "use the data and tokenizer the weights were trained with (data.tokenizer=...)"
        )
    if not lines and isinstance(hf_vocab, int):
        lines += tensor_problems(files, hf["model_type"], m, hf_vocab)
    return [f"{where}: {line}" for line in lines]


# --------------------------------------------------------------------------- tensors


def to_bigtrain(kind: str, hf_state: dict, m: Any, vocab: int) -> dict:
    """bigtrain's state dict from an HF one (names as normal_name gives them), with separate
    wq, wk, wv: Attention's load-state-dict pre-hook fuses them into wqkv as the model loads."""
    sizes = qkv_rows(m)
    out = {}
    for p in separate_params(m, vocab):
        name, part, transposed = route(kind, p)
        t = hf_state[name]
        if transposed:
            t = t.t()
        if part is not None:
            t = t.split(sizes, dim=0)[part]
        out[p.name] = t.contiguous()
    if m.tie_embeddings:
        out["head.weight"] = out["tok_emb.weight"]
    return out


def from_bigtrain(kind: str, state: dict, m: Any, vocab: int) -> dict:
    """The HF state dict of bigtrain's weights: new contiguous tensors, tied ones once."""
    import torch

    parts: dict[str, list] = {}
    transpose: dict[str, bool] = {}
    state = _split_state(state, m)
    for p in separate_params(m, vocab):
        name, _, transposed = route(kind, p)
        parts.setdefault(name, []).append(state[p.name])
        transpose[name] = transposed
    out = {}
    for name, tensors in parts.items():
        t = torch.cat(tensors, dim=0) if len(tensors) > 1 else tensors[0]
        out[name] = (t.t() if transpose[name] else t).contiguous().clone()
    return out


def read_weights(folder: str | Path, kind: str) -> dict:
    """Every tensor of the folder's safetensors files, by normal_name."""
    from safetensors.torch import load_file

    state = {}
    for file in weight_files(folder):
        state.update({normal_name(kind, k): v for k, v in load_file(str(file)).items()})
    return state


def load_into(model: Any, folder: str | Path) -> str:
    """Copy the weights of an HF folder into a built Transformer (checked as validation checks
    them first); returns a line that says what was loaded."""
    m = model.config
    problems = folder_problems(folder, m, model.vocab_size)
    if problems:
        raise config_error(problems)
    kind = read_config(folder)["model_type"]
    state = to_bigtrain(kind, read_weights(folder, kind), m, model.vocab_size)
    model.load_state_dict(state, strict=True)
    n = sum(p.numel() for p in model.parameters())
    return f"init_from: {n:,} parameters from {folder} ({kind})"


def continues_checkpoint(cfg: Any) -> bool:
    """Whether the run's weights come from a checkpoint (ckpt_path=, or resume= of a run that
    saved one): then model.init_from is not applied."""
    if cfg.ckpt_path is not None:
        return True
    saved = Path(cfg.resume, "checkpoints") if cfg.resume is not None else None
    return saved is not None and saved.is_dir() and any(saved.glob("*.ckpt"))


# --------------------------------------------------------------------------- writing


def export_kind(m: Any) -> str:
    """gpt2 or llama: the layout that holds this model exactly; HFError where none does."""
    if m.norm == "layernorm" and m.positions == "learned" and m.mlp in MLP_TO_GPT2:
        if not m.bias or m.kv_heads != m.n_heads:
            raise HFError("GPT-2's layout needs model.bias=true and model.n_kv_heads=null")
        return GPT2
    if m.norm == "rmsnorm" and m.positions == "rope" and m.mlp == "swiglu":
        return LLAMA
    raise HFError(
        f"a model with norm={m.norm}, positions={m.positions}, mlp={m.mlp} has no Hugging Face layout: "
        "GPT-2 is layernorm + learned + gelu/gelu_tanh, LLaMA is rmsnorm + rope + swiglu"
    )


def hf_config(kind: str, m: Any, vocab: int, dtype: str) -> dict:
    """config.json for the model, with every key transformers reads for it."""
    common = {"vocab_size": vocab, "tie_word_embeddings": m.tie_embeddings, "torch_dtype": dtype}
    if kind == GPT2:
        eos = 50256 if vocab > 50256 else None  # GPT-2's <|endoftext|>, where the vocabulary has it
        return {
            "architectures": ["GPT2LMHeadModel"], "model_type": GPT2, **common,
            "n_layer": m.n_layers, "n_embd": m.d_model, "n_head": m.n_heads, "n_inner": m.ffn_dim,
            "n_positions": m.max_seq_len, "activation_function": MLP_TO_GPT2[m.mlp],
            "layer_norm_epsilon": m.norm_eps, "resid_pdrop": m.dropout, "embd_pdrop": m.dropout,
            "attn_pdrop": m.dropout, "initializer_range": 0.02, "scale_attn_weights": True,
            "scale_attn_by_inverse_layer_idx": False, "reorder_and_upcast_attn": False,
            "bos_token_id": eos, "eos_token_id": eos,
        }  # fmt: skip
    return {
        "architectures": ["LlamaForCausalLM"], "model_type": LLAMA, **common,
        "num_hidden_layers": m.n_layers, "hidden_size": m.d_model, "num_attention_heads": m.n_heads,
        "num_key_value_heads": m.kv_heads, "head_dim": m.head_dim, "intermediate_size": m.ffn_dim,
        "hidden_act": "silu", "max_position_embeddings": m.max_seq_len, "rms_norm_eps": m.norm_eps,
        "rope_theta": m.rope_theta, "rope_scaling": None,
        "rope_parameters": {"rope_type": "default", "rope_theta": m.rope_theta},
        "attention_bias": m.bias, "mlp_bias": m.bias, "attention_dropout": m.dropout,
        "initializer_range": 0.02, "bos_token_id": None, "eos_token_id": None,
    }  # fmt: skip


def write_folder(state: dict, m: Any, out: str | Path) -> tuple[Path, str]:
    """Write bigtrain weights (the model's state dict) as an HF folder: config.json and
    model.safetensors. Returns (the folder, gpt2 or llama)."""
    from safetensors.torch import save_file

    kind = export_kind(m)
    vocab = state["tok_emb.weight"].shape[0]
    tensors = from_bigtrain(kind, state, m, vocab)
    dtype = str(state["tok_emb.weight"].dtype).removeprefix("torch.")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out / WEIGHTS_FILE), metadata={"format": "pt"})
    config = json.dumps(hf_config(kind, m, vocab, dtype), indent=2) + "\n"
    (out / "config.json").write_text(config, encoding="utf-8")
    return out, kind
