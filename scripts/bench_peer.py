"""The peer of the transformer-peer case: a GPT and its loop written the way nanoGPT writes them.

The model (peer_gpt.PeerGPT) is one module with a fused q/k/v projection (`c_attn`), exact GELU,
LayerNorm with biases, learned positions, a head tied to the token embedding and dropout modules
(p = 0 here). It starts from bigtrain's initial weights (`load_from`), so both sides train the
same numbers.

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
from torch import nn

from bench_loops import epoch_order, steps_per_epoch
from peer_gpt import PeerGPT


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
