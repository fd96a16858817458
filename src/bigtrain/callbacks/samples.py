"""Text generated from a fixed prompt after each validation, so a user sees the model learn.

Decoding is greedy at temperature 0, else sampling from softmax(logits / temperature),
optionally among the `top_k` most likely tokens, with a generator seeded per validation step
(the same samples for the same checkpoint). The built-in Transformer generates with a KV cache
(models/kv_cache.py): one forward of the prompt, then one of each new token. Past the context
length, and for other models (a user's, a compiled, sharded or tensor-parallel one), each new
token reruns the cropped context: the same tokens either way (logits equal to float rounding).
Rank zero generates and logs; the text also is kept in `last` (results.json: `samples`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytorch_lightning as pl
import torch

from bigtrain.models.transformer import Transformer

log = logging.getLogger("bigtrain.samples")


@torch.no_grad()
def generate(
    model: torch.nn.Module,
    prompt: torch.Tensor,
    max_new_tokens: int,
    *,
    context: int,
    temperature: float = 0.0,
    top_k: int | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Continue a (1, T) prompt by `max_new_tokens` tokens; returns (1, T + max_new_tokens)."""
    next_logits = logits_function(model, context, prompt.shape[1] + max_new_tokens - 1)
    tokens = prompt
    for _ in range(max_new_tokens):
        logits = next_logits(tokens).float()
        if temperature == 0:
            nxt = logits.argmax(-1, keepdim=True)
        else:
            logits = logits / temperature
            if top_k is not None:
                kth = torch.topk(logits, min(top_k, logits.shape[-1])).values[:, -1:]
                logits = logits.masked_fill(logits < kth, float("-inf"))
            probs = torch.softmax(logits, dim=-1)
            nxt = torch.multinomial(probs.cpu(), 1, generator=generator).to(tokens.device)
        tokens = torch.cat([tokens, nxt], dim=1)
    return tokens


def logits_function(
    model: torch.nn.Module, context: int, longest: int
) -> Callable[[torch.Tensor], torch.Tensor]:
    """tokens so far (1, T) -> the next token's logits (1, vocab), as model(tokens[:, -context:])
    gives them, for sequences that only grow, up to `longest` tokens. With a KV cache where the
    model can use one: while the tokens fit the context, only the new ones run."""
    if not (isinstance(model, Transformer) and model.can_cache()):
        return lambda tokens: model(tokens[:, -context:])[:, -1, :]
    limit = min(context, model.config.max_seq_len)
    cache = model.kv_cache(min(limit, longest))

    def next_logits(tokens: torch.Tensor) -> torch.Tensor:
        if tokens.shape[1] > limit:
            # The window slides: every position and what each token saw changes, so the cache
            # holds nothing of use; rerun the cropped context as without one.
            return model(tokens[:, -context:])[:, -1, :]
        return model.forward_cached(tokens[:, cache.length :], cache)[:, -1, :]

    return next_logits


class Samples(pl.Callback):
    def __init__(self, cfg, context: int) -> None:
        self.cfg, self.context = cfg, context
        self.last: list[str] = []

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        codec = getattr(trainer.datamodule, "codec", None)
        if codec is None:
            return
        ids = codec.encode(self.cfg.prompt.encode("utf-8")).tolist() or [0]
        prompt = torch.tensor([ids], dtype=torch.long, device=pl_module.device)
        gen = torch.Generator().manual_seed(trainer.global_step)
        was_training = pl_module.training
        pl_module.eval()
        try:
            self.last = []
            for _ in range(self.cfg.num_samples):
                out = generate(
                    pl_module.model,
                    prompt,
                    self.cfg.max_new_tokens,
                    context=self.context,
                    temperature=self.cfg.temperature,
                    top_k=self.cfg.top_k,
                    generator=gen,
                )
                self.last.append(codec.decode(out[0].tolist()))
        finally:
            pl_module.train(was_training)
        if not trainer.is_global_zero:
            return
        for text in self.last:
            log.info("sample at step %d: %r", trainer.global_step, text)
            print(f"--- sample at step {trainer.global_step} ---\n{printable(text)}\n---", flush=True)


def printable(text: str) -> str:
    """The sample with control characters and undecodable bytes escaped (a byte model emits
    them), keeping newlines and tabs as they are."""
    return "".join(c if c.isprintable() or c in "\n\t" else repr(c)[1:-1] for c in text)
