"""Generation with the Transformer's KV cache gives the tokens that rerunning the cropped context
gives (callbacks/samples.py generate; models/transformer.py forward_cached), at the cost of one
forward of the prompt and one single-token forward per new token; other models take the old path."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from bigtrain.callbacks.samples import generate
from bigtrain.config import TransformerConfig
from bigtrain.distributed.parallel import apply_activation_checkpointing
from bigtrain.models.transformer import Transformer
from tiny_models import GPT_TINY

VOCAB = 40
GPT = GPT_TINY
LLAMA = dataclasses.replace(
    GPT, norm="rmsnorm", mlp="swiglu", positions="rope", n_kv_heads=2, tie_embeddings=False, bias=False
)
SHAPES = {"gpt": GPT, "llama": LLAMA}


def _model(cfg: TransformerConfig) -> Transformer:
    """A tiny model with weights large enough that every token and position moves the logits
    (GPT-2's init leaves a random model's next token nearly independent of its context)."""
    torch.manual_seed(0)
    model = Transformer(cfg, VOCAB).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(0.0, 0.3)
    return model


class Wrapped(nn.Module):
    """A model that is not the built-in Transformer (a user's, a compiled one): the old path."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.inner(tokens)


def _both(model: Transformer, prompt_len: int, new: int, context: int, **sampling) -> tuple:
    """(cached, uncached) tokens for one random prompt; sampling with the same seeded generator."""
    prompt = torch.randint(0, VOCAB, (1, prompt_len), generator=torch.Generator().manual_seed(1))
    outs = []
    for m in (model, Wrapped(model)):
        gen = torch.Generator().manual_seed(7)
        outs.append(generate(m, prompt, new, context=context, generator=gen, **sampling)[0].tolist())
    return tuple(outs)


# (prompt length, new tokens, context): within the context; a context shorter than the model's
# max_seq_len (samples use min(max_seq_len, data.seq_len)); a prompt longer than the context;
# generation past the context, so the later tokens take the crop path.
CASES = [(3, 12, 16), (2, 9, 12), (20, 5, 16), (4, 24, 16), (5, 20, 9)]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize(("prompt_len", "new", "context"), CASES)
def test_greedy_tokens_with_the_cache_equal_the_uncached_ones(shape, prompt_len, new, context):
    cached, uncached = _both(_model(SHAPES[shape]), prompt_len, new, context)
    assert len(cached) == prompt_len + new
    assert cached == uncached


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize(("prompt_len", "new", "context"), [(3, 12, 16), (4, 24, 16)])
def test_sampled_tokens_with_the_cache_equal_the_uncached_ones(shape, prompt_len, new, context):
    cached, uncached = _both(_model(SHAPES[shape]), prompt_len, new, context, temperature=0.8, top_k=5)
    assert cached == uncached
    greedy, _ = _both(_model(SHAPES[shape]), prompt_len, new, context)
    assert cached != greedy  # the sampling path really sampled


@pytest.mark.parametrize("shape", SHAPES)
def test_cached_logits_equal_forward_in_any_chunks(shape):
    """A prompt, one token at a time, then chunks of several (the masked path): the logits of
    each position are forward's for the whole sequence."""
    model = _model(SHAPES[shape])
    tokens = torch.randint(0, VOCAB, (2, 16), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        want = model(tokens)
    cache = model.kv_cache(16)
    got = [
        model.forward_cached(tokens[:, a:b], cache) for a, b in [(0, 5), (5, 6), (6, 7), (7, 11), (11, 16)]
    ]
    torch.testing.assert_close(torch.cat(got, dim=1), want, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="holds 16 positions, not 17"):
        model.forward_cached(tokens[:, :1], cache)


def test_cost_is_one_prompt_forward_then_one_token_each_until_the_crop(monkeypatch):
    """What each step runs: the prompt once, then single tokens while the sequence fits the
    context; past it, the whole cropped context each step, as before."""
    model, seen = _model(GPT), []
    for name in ("forward", "forward_cached"):
        method = getattr(Transformer, name)

        def spy(self, tokens, *args, _name=name, _method=method):
            seen.append((_name, tokens.shape[1]))
            return _method(self, tokens, *args)

        monkeypatch.setattr(Transformer, name, spy)
    generate(model, torch.zeros(1, 5, dtype=torch.long), 14, context=16)
    # 14 steps see 5, 6, ..., 18 tokens: the first 12 fit the context of 16, the last 2 do not.
    assert seen == [("forward_cached", 5), *[("forward_cached", 1)] * 11, *[("forward", 16)] * 2]


def _no_cache(*args, **kwargs):
    raise AssertionError("forward_cached ran")


@pytest.mark.parametrize("wrap", ["wrapper", "subclass", "checkpointed"])
def test_other_models_take_the_uncached_path(wrap, monkeypatch):
    """A model in a wrapper (a user's module, torch.compile's), a subclass (FSDP2's, a user's),
    blocks that activation checkpointing subclassed: the same tokens, without the cache."""
    model, prompt = _model(GPT), torch.zeros(1, 3, dtype=torch.long)
    expect = generate(model, prompt, 6, context=16)
    if wrap == "subclass":
        model.__class__ = type("Own", (Transformer,), {})
    elif wrap == "checkpointed":
        apply_activation_checkpointing(model)
    assert wrap == "wrapper" or not model.can_cache()
    monkeypatch.setattr(Transformer, "forward_cached", _no_cache)
    target = Wrapped(model) if wrap == "wrapper" else model
    assert torch.equal(generate(target, prompt, 6, context=16), expect)


def test_only_the_plain_transformer_with_whole_weights_can_cache():
    assert _model(GPT).can_cache() and _model(LLAMA).can_cache()
    model = _model(GPT)
    # DeepSpeed ZeRO-3 leaves an empty placeholder where a sharded weight was.
    model.blocks[0].mlp.w1.bias = nn.Parameter(torch.empty(0))
    assert not model.can_cache()
