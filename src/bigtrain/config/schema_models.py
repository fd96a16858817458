"""Schemas of the `model` section: exactly one frozen dataclass per model family.

The model files import theirs from here, so models and validation share one definition, and
validation needs no torch. Every value comes from a preset in conf/model/<family>/.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from bigtrain.config.convert import opt, target_variant, variant


@variant("model", "mlp")
@dataclass(frozen=True)
class MLPConfig:
    """Dense layers `hidden` wide with an activation, optional norm and dropout."""

    family: Literal["mlp"]
    hidden: list[int] = opt("widths of the hidden layers", nonempty=True, gt=0)
    activation: Literal["relu", "gelu", "silu", "tanh"]
    dropout: float = opt(ge=0.0, lt=1.0)
    norm: Literal["none", "batch", "layer"]


@variant("model", "cnn")
@dataclass(frozen=True)
class CNNConfig:
    """3x3 conv blocks (conv, ReLU, 2x2 max-pool), then one hidden dense layer."""

    family: Literal["cnn"]
    channels: list[int] = opt("one conv block per entry", nonempty=True, gt=0)
    hidden: int = opt(gt=0)
    dropout: float = opt(ge=0.0, lt=1.0)
    pooled_size: int = opt("feature maps larger than this are average-pooled to it", gt=0)


@variant("model", "vit")
@dataclass(frozen=True)
class ViTConfig:
    """Vision Transformer: patch embedding, class token, pre-norm encoder blocks."""

    family: Literal["vit"]
    patch_size: int = opt("image side must be a multiple of it", gt=0)
    dim: int = opt("embedding width; a multiple of heads", gt=0)
    depth: int = opt(gt=0)
    heads: int = opt(gt=0)
    mlp_ratio: float = opt(gt=0.0)
    dropout: float = opt(ge=0.0, lt=1.0)


@variant("model", "kws_cnn")
@dataclass(frozen=True)
class KWSCNNConfig:
    """Keyword spotting on log-mels: 3x3 conv blocks (conv, layer norm, ReLU, 2x2 max-pool),
    then the maximum over time and frequency and one linear layer."""

    family: Literal["kws_cnn"]
    channels: list[int] = opt("one conv block per entry", nonempty=True, gt=0)
    dropout: float = opt(ge=0.0, lt=1.0)


@variant("model", "audio_transformer")
@dataclass(frozen=True)
class AudioTransformerConfig:
    """Log-mel patches of `patch_frames` frames x every band, pre-norm encoder blocks (the ViT's),
    then a classifier over the mean of the tokens, or a CTC head on every token."""

    family: Literal["audio_transformer"]
    stem_channels: int = opt("a 3x3 conv stem of this many channels before the patches; 0 = none", ge=0)
    patch_frames: int = opt("frames per token (10 ms hop: 4 frames = 40 ms)", gt=0)
    dim: int = opt("embedding width; a multiple of heads", gt=0)
    depth: int = opt(gt=0)
    heads: int = opt(gt=0)
    mlp_ratio: float = opt(gt=0.0)
    dropout: float = opt(ge=0.0, lt=1.0)
    head: Literal["classify", "ctc"] = opt(
        "classify: one label per clip; ctc: characters per token (transcripts)"
    )


@variant("model", "transformer")
@dataclass(frozen=True)
class TransformerConfig:
    """A decoder-only Transformer (GPT and LLaMA shapes are presets of it, see conf/model/)."""

    family: Literal["transformer"]
    n_layers: int = opt(gt=0)
    d_model: int = opt(gt=0)
    n_heads: int = opt(gt=0)
    n_kv_heads: int | None = opt("grouped-query attention; null = n_heads", gt=0)
    d_ff: int | None = opt("MLP width; null = 4*d_model (GELU) or 2/3 of that rounded (swiglu)", gt=0)
    vocab_size: int | None = opt("null = the data's vocabulary (256 for bytes)", gt=0)
    max_seq_len: int = opt("longest context (size of the learned position table)", gt=0)
    norm: Literal["layernorm", "rmsnorm"]
    mlp: Literal["gelu", "gelu_tanh", "swiglu"] = opt("gelu exact, gelu_tanh (GPT-2's approximation), swiglu")
    positions: Literal["learned", "rope"]
    tie_embeddings: bool
    bias: bool
    dropout: float = opt(ge=0.0, lt=1.0)
    norm_eps: float = opt(gt=0.0)
    rope_theta: float = opt("base of the rotary frequencies (positions=rope)", gt=0.0)
    init_from: str | None = opt(
        "a Hugging Face folder (config.json, *.safetensors) to start from; null = random"
    )

    @property
    def kv_heads(self) -> int:
        """Key/value heads: n_kv_heads, or n_heads without grouped-query attention."""
        return self.n_kv_heads or self.n_heads

    @property
    def head_dim(self) -> int:
        """Width of one attention head."""
        return self.d_model // self.n_heads

    @property
    def ffn_dim(self) -> int:
        """Width of the MLP inside each block."""
        if self.d_ff is not None:
            return self.d_ff
        if self.mlp != "swiglu":
            return 4 * self.d_model
        # SwiGLU has three matrices instead of two: 2/3 of 4d keeps the parameter count, rounded
        # up to a multiple of 256 as LLaMA does (for matmul tile sizes).
        return -(-(8 * self.d_model // 3) // 256) * 256


def upgrade_saved_model(section: dict) -> dict:
    """A model section as an older run saved it (a checkpoint's hyper-parameters), in today's
    terms. `init_from` and `gelu_tanh` came together; before them the transformer's `mlp: gelu`
    meant the tanh approximation. So a transformer section without `init_from` reads its `gelu`
    as `gelu_tanh`, and gains `init_from: null`."""
    if section.get("family") != "transformer" or "init_from" in section:
        return dict(section)
    mlp = "gelu_tanh" if section.get("mlp") == "gelu" else section.get("mlp")
    return {**section, "mlp": mlp, "init_from": None}


@target_variant("model")
@dataclass(frozen=True)
class CustomModelConfig:
    """Your own torch.nn.Module, named by `_target_` (docs/extending.md): every other key of the
    section is an argument of its constructor; `num_outputs` and `input_shape` come from the data."""

    family: Literal["custom"]
    target: str = opt("the dotted path of the class (or function) that builds the model")
    arguments: Any = opt("the constructor's arguments: every key of the section but _target_")
