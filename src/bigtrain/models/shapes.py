"""The Transformer's parameters and costs from its config alone, without importing torch.

A dry run of a language model needs the parameter count, the weight-decay groups, the share that
tensor parallel splits, FLOPs and activation memory: all of it follows from the config. Importing
torch takes 2 s or more on a small machine, so the plan of a Transformer is computed here, and a
`dry_run=true` of a 7B preset answers in about a second. models/transformer.py is the reference:
tests/test_lm.py checks that these rows equal the meta-built model's parameters (names, shapes,
weight-decay kinds, tensor-parallel splits) for every preset and option.

The cost formulas (FLOPs per token, activation bytes) live here too; transformer.py applies them
to a built model.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import prod
from typing import Any

from bigtrain.training.groups import audit_rows, optimizer_group_specs, with_tensors


@dataclass(frozen=True)
class Param:
    name: str  # as model.named_parameters() names it
    shape: tuple[int, ...]
    kind: str  # what decides weight decay: "weight", "bias", "norm" or "embedding" (optim.param_kind)
    matmul: bool = False  # an nn.Linear weight (the FLOPs count)
    tp_split: bool = False  # split by the tensor-parallel plan (parallel.transformer_tp_plan)

    @property
    def numel(self) -> int:
        return prod(self.shape)


def transformer_params(cfg: Any, vocab: int) -> list[Param]:
    """Every trainable tensor, in the order the model registers them, tied weights once."""
    d, hd, f = cfg.d_model, cfg.head_dim, cfg.ffn_dim
    tied = cfg.tie_embeddings
    rows = [Param("tok_emb.weight", (vocab, d), "embedding", tp_split=not tied)]
    if cfg.positions == "learned":
        rows.append(Param("pos_emb.weight", (cfg.max_seq_len, d), "embedding"))

    def linear(name: str, n_in: int, n_out: int, split: bool, bias: bool) -> None:
        rows.append(Param(f"{name}.weight", (n_out, n_in), "weight", matmul=True, tp_split=split))
        if bias:
            rows.append(Param(f"{name}.bias", (n_out,), "bias", tp_split=split))

    def norm(name: str) -> None:
        rows.append(Param(f"{name}.weight", (d,), "norm"))
        if cfg.norm == "layernorm" and cfg.bias:
            rows.append(Param(f"{name}.bias", (d,), "norm"))

    for i in range(cfg.n_layers):
        p = f"blocks.{i}."
        norm(p + "norm1")
        linear(p + "attn.wq", d, cfg.n_heads * hd, True, cfg.bias)
        linear(p + "attn.wk", d, cfg.kv_heads * hd, True, cfg.bias)
        linear(p + "attn.wv", d, cfg.kv_heads * hd, True, cfg.bias)
        linear(p + "attn.wo", cfg.n_heads * hd, d, True, cfg.bias)
        norm(p + "norm2")
        linear(p + "mlp.w1", d, f, True, cfg.bias)
        linear(p + "mlp.w2", f, d, True, cfg.bias)
        if cfg.mlp == "swiglu":
            linear(p + "mlp.w3", d, f, True, cfg.bias)
    norm("norm_f")
    if not tied:
        linear("head", d, vocab, True, False)
    return rows


def matmul_params(cfg: Any, vocab: int) -> int:
    """Weights that take part in a matmul per token: every nn.Linear, the head included (tied or
    not). Embedding lookups and norms cost no multiply-adds worth counting."""
    linears = sum(p.numel for p in transformer_params(cfg, vocab) if p.matmul)
    return linears + (vocab * cfg.d_model if cfg.tie_embeddings else 0)


def flops_per_token(cfg: Any, vocab: int, seq_len: int) -> int:
    """Training FLOPs per token: 6 N + 12 L d T.

    6 N: each matmul weight does one multiply-add (2 FLOPs) per token forward and twice that
    backward (gradients of inputs and of weights), N = matmul_params. 12 L d T: per layer, the
    scores QK^T and the weighted sum AV each take 2 T d FLOPs per token forward (counting the full
    T x T square, as PaLM's MFU does, although causal kernels skip the upper half), x3 for training.
    """
    return 6 * matmul_params(cfg, vocab) + 12 * cfg.n_layers * cfg.d_model * seq_len


# (residual-stream bytes, matmul-activation bytes) per element, by precision. Under *-mixed the
# residual stream stays float32 (embeddings and additions are not autocast) while matmul inputs
# and outputs are 16-bit.
ACT_DTYPES = {
    "32-true": (4, 4),
    "32": (4, 4),
    "64-true": (8, 8),
    "bf16-mixed": (4, 2),
    "16-mixed": (4, 2),
    "bf16-true": (2, 2),
}


def layer_activation_bytes(cfg: Any, precision: str) -> int:
    """Bytes that one block saves for the backward, per token (the tensors autograd keeps):
    residual-stream inputs of norm1 and norm2 (2 d, residual dtype); norm statistics (8 bytes);
    the normed inputs of wq/wk/wv and of the MLP, q, the attention output, its reshaped copy fed
    to wo (5 d); k and v (2 d_kv); the attention's logsumexp (4 bytes per head); the MLP's
    hidden tensors: GELU keeps w1's output and the GELU output (2 f), SwiGLU keeps w1 and w3
    outputs, silu(w1 x) and the product (4 f); one byte per element for each dropout mask."""
    r, a = ACT_DTYPES[precision]
    d, f = cfg.d_model, cfg.ffn_dim
    d_kv = cfg.kv_heads * cfg.head_dim
    mlp_units = 4 if cfg.mlp == "swiglu" else 2
    total = 2 * r * d + 8 + a * (5 * d + 2 * d_kv + mlp_units * f) + 4 * cfg.n_heads
    if cfg.dropout > 0:
        total += 2 * d  # bool masks after attention and after the MLP
    return total


def activation_bytes(
    cfg: Any, vocab: int, micro_batch: int, seq_len: int, precision: str, checkpointed: bool
) -> int:
    """Activation memory of one micro-batch: layers x per-layer bytes, plus the ends of the
    network per token: token ids (8), norm_f's input and the head's input (d each), and the
    float32 log-softmax of the logits that cross-entropy keeps (4 V).

    With activation checkpointing every block keeps only its input (d in the residual dtype)
    and one block's activations exist at a time while it is recomputed in the backward."""
    r, a = ACT_DTYPES[precision]
    per_layer = layer_activation_bytes(cfg, precision)
    ends = 8 + (r + a) * cfg.d_model + 4 * vocab
    if checkpointed:
        per_token = cfg.n_layers * r * cfg.d_model + per_layer + ends
    else:
        per_token = cfg.n_layers * per_layer + ends
    return micro_batch * seq_len * per_token


# --------------------------------------------------------------------------- optimizer groups


def group_audit_rows(optim: Any, params: list[Param]) -> list[dict]:
    """The rows optim.group_audit(optim.optimizer_groups(cfg, model)) gives for these tensors:
    the same rule (groups.py) on the kinds and dimensions of the table."""
    specs = optimizer_group_specs(optim, [(p.kind, len(p.shape)) for p in params])
    return audit_rows(with_tensors(specs, params), lambda p: p.numel)
