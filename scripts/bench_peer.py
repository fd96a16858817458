"""The peer of the transformer-peer case: a GPT and its loop written the way nanoGPT writes them.

The model is one module with a fused q/k/v projection (`c_attn`), exact GELU, LayerNorm with
biases, learned positions, a head tied to the token embedding and dropout modules (p = 0 here).
It starts from bigtrain's initial weights (`load_from`), so both sides train the same numbers.

The loop is nanoGPT's: the rate set by hand every iteration (linear warm-up, cosine decay to
min_lr), forward and loss, backward, clipping, torch's AdamW with its default implementation
(nanoGPT asks for the fused kernel on CUDA only), `zero_grad(set_to_none=True)`, and the loss
read back every `log_every_n_steps` iterations. Between epochs it estimates the validation loss
and saves model and optimizer state, as nanoGPT's eval interval does. Batches are the training
windows in the order bench_loops.HandLoop draws them.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from bench_loops import epoch_order, steps_per_epoch
from bigtrain.models.transformer import split_qkv


class SelfAttention(nn.Module):
    def __init__(self, d: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.c_attn = nn.Linear(d, 3 * d)
        self.c_proj = nn.Linear(d, d)
        self.heads, self.dropout = heads, dropout
        self.resid_dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.heads, C // self.heads).transpose(1, 2) for t in (q, k, v))
        p = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True)
        return self.resid_dropout(self.c_proj(y.transpose(1, 2).contiguous().view(B, T, C)))


class FeedForward(nn.Module):
    def __init__(self, d: int, dropout: float) -> None:
        super().__init__()
        self.c_fc, self.c_proj = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(F.gelu(self.c_fc(x))))


class PeerBlock(nn.Module):
    def __init__(self, d: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.ln_1, self.attn = nn.LayerNorm(d), SelfAttention(d, heads, dropout)
        self.ln_2, self.mlp = nn.LayerNorm(d), FeedForward(d, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class PeerGPT(nn.Module):
    """GPT-2's shape in one file; `load_from` copies a bigtrain Transformer of the same shape."""

    def __init__(self, vocab: int, seq_len: int, layers: int, d: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.wte, self.wpe = nn.Embedding(vocab, d), nn.Embedding(seq_len, d)
        self.drop = nn.Dropout(dropout)
        self.h = nn.ModuleList(PeerBlock(d, heads, dropout) for _ in range(layers))
        self.ln_f = nn.LayerNorm(d)
        self.lm_head = nn.Linear(d, vocab, bias=False)
        self.lm_head.weight = self.wte.weight

    def forward(self, idx: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(idx.size(1), dtype=torch.long, device=idx.device)
        x = self.drop(self.wte(idx) + self.wpe(pos))
        for block in self.h:
            x = block(x)
        logits = self.lm_head(self.ln_f(x))
        return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))

    @torch.no_grad()
    def load_from(self, theirs: nn.Module) -> None:
        """Copy the weights of a bigtrain Transformer (learned positions, tied, GELU MLP)."""
        self.wte.weight.copy_(theirs.tok_emb.weight)
        self.wpe.weight.copy_(theirs.pos_emb.weight[: self.wpe.num_embeddings])
        for mine, block in zip(self.h, theirs.blocks, strict=True):
            a = block.attn  # wqkv's rows grouped by head, c_attn's q | k | v
            mine.attn.c_attn.weight.copy_(torch.cat(split_qkv(a.wqkv.weight, a.n_heads, a.kv_heads)))
            mine.attn.c_attn.bias.copy_(torch.cat(split_qkv(a.wqkv.bias, a.n_heads, a.kv_heads)))
            pairs = [(mine.attn.c_proj, a.wo), (mine.mlp.c_fc, block.mlp.w1), (mine.mlp.c_proj, block.mlp.w2)]
            pairs += [(mine.ln_1, block.norm1), (mine.ln_2, block.norm2)]
            for dst, src in pairs:
                dst.weight.copy_(src.weight)
                dst.bias.copy_(src.bias)
        self.ln_f.weight.copy_(theirs.norm_f.weight)
        self.ln_f.bias.copy_(theirs.norm_f.bias)


def peer_optimizer(model: nn.Module, lr: float, weight_decay: float, betas: tuple) -> torch.optim.AdamW:
    """nanoGPT's groups: every tensor of 2 or more dimensions decays, the others do not."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=lr, betas=betas)


class PeerLoop:
    """nanoGPT's training loop over bigtrain's windows; `epoch()` is timed, `between()` is not."""

    def __init__(self, cfg: Any, bigtrain_model: nn.Module, splits: dict, workdir: Path) -> None:
        m = cfg.model
        self.model = PeerGPT(
            bigtrain_model.vocab_size, cfg.data.seq_len, m.n_layers, m.d_model, m.n_heads, m.dropout
        )
        self.model.load_from(bigtrain_model)
        o, t = cfg.optim, cfg.trainer
        self.optimizer = peer_optimizer(self.model, o.lr, o.weight_decay, tuple(o.betas))
        self.cfg, self.train, self.val = cfg, splits["train"][0], splits["val"][0]
        self.batch = cfg.data.batch_size
        self.steps_per_epoch = steps_per_epoch(cfg, len(self.train))
        self.max_iters = self.steps_per_epoch * t.max_epochs
        self.iter_num = self.epochs_run = 0
        self.losses: list[float] = []
        workdir.mkdir(parents=True, exist_ok=True)
        self.checkpoint = workdir / "ckpt.pt"

    def get_lr(self, it: int) -> float:
        """Linear warm-up, then cosine decay to min_lr (nanoGPT's get_lr)."""
        o, s = self.cfg.optim, self.cfg.sched
        min_lr = o.lr * s.min_lr_ratio
        if it < s.warmup_steps:
            return o.lr * (it + 1) / (s.warmup_steps + 1)
        ratio = (it - s.warmup_steps) / max(1, self.max_iters - s.warmup_steps)
        return min_lr + 0.5 * (1.0 + math.cos(math.pi * min(1.0, ratio))) * (o.lr - min_lr)

    def epoch(self) -> float:
        """One epoch of iterations; seconds per optimizer step."""
        self.model.train()
        start = time.perf_counter()
        order, b = epoch_order(self.cfg, len(self.train), self.epochs_run), self.batch
        every, clip = self.cfg.trainer.log_every_n_steps, self.cfg.trainer.gradient_clip_val
        for i in range(self.steps_per_epoch):
            for group in self.optimizer.param_groups:
                group["lr"] = self.get_lr(self.iter_num)
            windows = self.train.index_select(0, order[i * b : (i + 1) * b])
            x, y = windows[:, :-1].long(), windows[:, 1:].long()
            loss = self.model(x, y)
            loss.backward()
            if clip:
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip)
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            if self.iter_num % every == 0:
                self.losses.append(loss.item())
            self.iter_num += 1
        self.epochs_run += 1
        return (time.perf_counter() - start) / self.steps_per_epoch

    @torch.no_grad()
    def between(self) -> None:
        """nanoGPT's estimate_loss on the validation windows, then a checkpoint."""
        self.model.eval()
        step, limit = self.cfg.data.eval_batch_size, self.cfg.trainer.limit_val_batches
        losses = []
        for n, start in enumerate(range(0, len(self.val), step)):
            if limit and n >= int(limit):
                break
            w = self.val[start : start + step]
            losses.append(self.model(w[:, :-1].long(), w[:, 1:].long()).item())
        state = {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict()}
        torch.save(
            {**state, "iter_num": self.iter_num, "val_loss": sum(losses) / len(losses)}, self.checkpoint
        )
        self.model.train()

    def close(self) -> None:
        """Nothing to flush: the loop writes its checkpoint only."""
