"""The Transformer's parameters and costs from its config alone, without importing torch.

A dry run of a language model needs the parameter count, the weight-decay groups, the share that
tensor parallel splits, FLOPs and activation memory: all of it follows from the config. Importing
torch takes 2 s or more on a small machine, so the plan of a Transformer is computed here, and a
`dry_run=true` of a 7B preset answers in about a second. models/transformer.py is the reference:
tests/test_lm.py checks that these rows equal the meta-built model's parameters (names, shapes,
weight-decay kinds, tensor-parallel splits) for every preset and option.

The cost formulas (FLOPs per token, activation bytes, the transient memory of the step's peak)
live here too; transformer.py applies them to a built model. tests/test_lm.py checks the
activations against what autograd saves and the plan's total against the peak of live tensors
in real training steps.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import prod
from typing import Any

from bigtrain.models.groups import audit_rows, optimizer_group_specs, with_tensors


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
        linear(p + "attn.wqkv", d, (cfg.n_heads + 2 * cfg.kv_heads) * hd, True, cfg.bias)
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
    # FSDP's MixedPrecisionPolicy gathers 16-bit weights: the residual stream is 16-bit too
    "16-gathered": (2, 2),
}


def norm_saved_bytes(cfg: Any, precision: str) -> int:
    """Bytes per token that one norm saves for the backward. LayerNorm: its input (residual
    dtype) and mean and 1/std (float32). RMSNorm (models/transformer.py) computes in float32 and
    autograd keeps x, x / rms(x) (both float32) and 1/rms."""
    r, _ = ACT_DTYPES[precision]
    if cfg.norm == "rmsnorm":
        return 8 * cfg.d_model + 4
    return r * cfg.d_model + 8


def layer_activation_bytes(cfg: Any, precision: str) -> int:
    """Bytes that one block saves for the backward, per token (the tensors autograd keeps):
    what norm1 and norm2 keep (norm_saved_bytes); the normed inputs of wqkv and of the MLP,
    q and the attention output, which is also wo's input (4 d: the fused attention kernels
    return it in (B, T, H, D) layout, so the reshape before wo copies nothing); k and v
    (2 d_kv); the attention's logsumexp (4 bytes per head); the MLP's hidden tensors: GELU keeps
    w1's output and the GELU output (2 f), SwiGLU keeps w1 and w3 outputs, silu(w1 x) and the
    product (4 f); one byte per element for each dropout mask."""
    _, a = ACT_DTYPES[precision]
    d, f = cfg.d_model, cfg.ffn_dim
    d_kv = cfg.kv_heads * cfg.head_dim
    mlp_units = 4 if cfg.mlp == "swiglu" else 2
    total = 2 * norm_saved_bytes(cfg, precision) + a * (4 * d + 2 * d_kv + mlp_units * f) + 4 * cfg.n_heads
    if cfg.dropout > 0:
        total += 2 * d  # bool masks after attention and after the MLP
    return total


def ends_activation_bytes(cfg: Any, vocab: int, precision: str) -> int:
    """Bytes per token saved outside the blocks: the token ids that the embedding and the loss
    keep (8 each), what norm_f keeps, the head's input (a d) and the float32 log-softmax of the
    logits that cross-entropy keeps (4 V)."""
    _, a = ACT_DTYPES[precision]
    return 16 + norm_saved_bytes(cfg, precision) + a * cfg.d_model + 4 * vocab


def matmul_widths(cfg: Any) -> list[int]:
    """Output features of the block's matmuls per token, in the order its forward runs them:
    wqkv, wo, w1, then w3 (SwiGLU) and w2."""
    d, f, hd = cfg.d_model, cfg.ffn_dim, cfg.head_dim
    widths = [(cfg.n_heads + 2 * cfg.kv_heads) * hd, d, f]
    if cfg.mlp == "swiglu":
        widths.append(f)
    return [*widths, d]


def selective_layer_bytes(cfg: Any, precision: str) -> int:
    """Bytes per token a selectively checkpointed block keeps (distributed/checkpointing.py):
    its input (residual dtype), attention's output and logsumexp, and the outputs of its 1st,
    3rd, 5th... matmul (wqkv, w1, and w2 with SwiGLU; wqkv and w1 with GELU)."""
    r, a = ACT_DTYPES[precision]
    attention = cfg.n_heads * cfg.head_dim
    return r * cfg.d_model + a * (sum(matmul_widths(cfg)[0::2]) + attention) + 4 * cfg.n_heads


def recomputed_bytes(cfg: Any, precision: str, checkpointed: Any) -> int:
    """Bytes per token that recomputing one checkpointed block adds in the backward: all that
    the block saves for its backward (full), or that less what selective checkpointing kept
    from the forward (its input and w2's output are not part of it)."""
    r, a = ACT_DTYPES[precision]
    per_layer = layer_activation_bytes(cfg, precision)
    if as_checkpointing(checkpointed).mode != "selective":
        return per_layer
    reused = selective_layer_bytes(cfg, precision) - r * cfg.d_model - a * cfg.d_model
    return max(per_layer - reused, 0)


def as_checkpointing(checkpointed: Any) -> Any:
    """A config.Checkpointing from a bool (True: every block, fully) or a record."""
    from bigtrain.config import Checkpointing

    if isinstance(checkpointed, bool):
        return Checkpointing("full" if checkpointed else "none", 1)
    return checkpointed


def activation_bytes(
    cfg: Any, vocab: int, micro_batch: int, seq_len: int, precision: str, checkpointed: Any
) -> int:
    """Activation memory of one micro-batch: layers x per-layer bytes, plus the ends of the
    network per token (ends_activation_bytes).

    `checkpointed`: a bool (every block or none) or a config.Checkpointing. A checkpointed block
    keeps only its input (full) or selective_layer_bytes (selective), and one block's activations
    exist at a time while it is recomputed in the backward; `every_n:K` checkpoints ceil(L / K)
    blocks and the others keep everything."""
    r, _ = ACT_DTYPES[precision]
    plan = as_checkpointing(checkpointed)
    per_layer = layer_activation_bytes(cfg, precision)
    ends = ends_activation_bytes(cfg, vocab, precision)
    done = plan.share(cfg.n_layers)
    kept = selective_layer_bytes(cfg, precision) if plan.mode == "selective" else r * cfg.d_model
    if done:
        recompute = recomputed_bytes(cfg, precision, plan)
        per_token = done * kept + (cfg.n_layers - done) * per_layer + recompute + ends
    else:
        per_token = cfg.n_layers * per_layer + ends
    return micro_batch * seq_len * per_token


def loss_transient_bytes(vocab: int, precision: str) -> tuple[int, int]:
    """(forward, backward) bytes per token live around the loss beyond the saved log-softmax.
    Forward: the logits (a V), and under mixed precision also the float32 copy cross-entropy
    makes of them (4 V). Backward: nll_loss's gradient of the log-probabilities (dense, float32,
    4 V) and log-softmax's gradient of the logits (4 V) exist together."""
    _, a = ACT_DTYPES[precision]
    forward = a * vocab + (4 * vocab if a < 4 else 0)
    return forward, 8 * vocab


def block_backward_bytes(cfg: Any, precision: str) -> int:
    """Bytes per token by which one block's backward grows memory over its saved activations,
    at its MLP (the widest part). Each node frees what it saved once it has run, so at SwiGLU's
    product the gradient of the product and those of its two factors (3 f) exist while w2's
    saved input (f) is gone: 2 f; at GELU, the gradients of its output and input (2 f) less w2's
    input: f. Plus the residual stream's gradient and the one flowing into the norm (2 d,
    residual dtype)."""
    r, a = ACT_DTYPES[precision]
    units = 2 if cfg.mlp == "swiglu" else 1
    return a * units * cfg.ffn_dim + 2 * r * cfg.d_model


def transient_bytes(cfg: Any, vocab: int, micro_batch: int, seq_len: int, precision: str,
                    checkpointed: Any, grad_bytes: int, grads_in_backward: bool) -> int:  # fmt: skip
    """Bytes beyond weights + gradients + optimizer state + activations at the step's peak.

    Memory above weights and optimizer state, at each moment that can be the peak, per
    micro-batch of N tokens (K = the activations kept through the forward, E = their part at
    the ends of the network, H = the head weight's gradient):
      loss, forward:   G + K + N Lf    Lightning zeroes gradients after the forward, so the last
                                       step's (G bytes) are still alive
      loss, backward:  G' + K + N Lb   G' = G with gradient accumulation, else 0
      top block:       G' + H + K - N E + N (P + B)   P: its activations, recomputed under
                                       checkpointing (already in K without)
      bottom block:    G + N (P + B)   all weight gradients exist, the other blocks' are freed
    (Lf, Lb: loss_transient_bytes, B: block_backward_bytes, P: layer_activation_bytes; under
    checkpointing the top block's P is what recomputing it adds, recomputed_bytes, and nothing
    when every_n:K leaves the top block whole). The
    result is the largest minus G + activations: at least N Lf without checkpointing; with it,
    negative where the last step's gradients and the recomputed block are never alive together."""
    n = micro_batch * seq_len
    counted = activation_bytes(cfg, vocab, micro_batch, seq_len, precision, checkpointed)
    recompute = n * recomputed_bytes(cfg, precision, checkpointed)
    plan = as_checkpointing(checkpointed)
    checkpointed = plan.on
    # under every_n:K the top block may keep its activations: then no recomputation at its backward
    top_recomputed = checkpointed and (cfg.n_layers - 1) % plan.every == 0
    per_layer = n * layer_activation_bytes(cfg, precision)
    kept = counted - recompute if checkpointed else counted  # the recomputed block: backward only
    lf, lb = loss_transient_bytes(vocab, precision)
    g_b = grad_bytes if grads_in_backward else 0
    block = n * block_backward_bytes(cfg, precision)
    params = transformer_params(cfg, vocab)
    head = 0 if grads_in_backward else grad_bytes * vocab * cfg.d_model // sum(p.numel for p in params)
    ends = n * ends_activation_bytes(cfg, vocab, precision)
    moments = (
        grad_bytes + kept + n * lf,
        g_b + kept + n * lb,
        g_b + head + kept - ends + block + (recompute if top_recomputed else 0),
        grad_bytes + per_layer + block,
    )
    return max(moments) - grad_bytes - counted


# --------------------------------------------------------------------------- optimizer groups


def group_audit_rows(optim: Any, params: list[Param]) -> list[dict]:
    """The rows optim.group_audit(optim.optimizer_groups(cfg, model)) gives for these tensors:
    the same rule (groups.py) on the kinds and dimensions of the table."""
    specs = optimizer_group_specs(optim, [(p.kind, len(p.shape)) for p in params])
    return audit_rows(with_tensors(specs, params), lambda p: p.numel)


def model_vocab(cfg: Any, data_vocab: int) -> int:
    """The vocabulary: `model.vocab_size` if set (it must cover the data's tokens), else the
    data's own (256 for bytes). A preset's published size (50257, 32000) keeps its parameter
    count; byte-level runs set model.vocab_size=null."""
    if cfg.vocab_size is None:
        return data_vocab
    if cfg.vocab_size < data_vocab:
        from bigtrain.config import ConfigError

        raise ConfigError(
            f"model.vocab_size={cfg.vocab_size} is smaller than the data's vocabulary {data_vocab}: "
            "set model.vocab_size=null to use the data's"
        )
    return cfg.vocab_size
