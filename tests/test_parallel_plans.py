"""The tensor-parallel plans on 2 real gloo processes, checked against the unsharded model: same
output, same gradients (gathered from the shards).

The transformer plan is written against fixed names (tok_emb, pos_emb, blocks[i].norm1/attn
(wqkv, wo)/norm2/mlp (w1, w2, w3), norm_f, head) and wqkv's rows grouped by head (q, k, v of
head 0, then of head 1, ...). `Tiny` below follows those names and that layout with the usual
pre-norm block, so the plan is proven here independently of the transformer family.
"""

from __future__ import annotations

import os
import socket
import types

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn

pytestmark = pytest.mark.distributed


class Attn(nn.Module):
    def __init__(self, d: int, heads: int) -> None:
        super().__init__()
        self.wqkv, self.wo = nn.Linear(d, 3 * d, bias=False), nn.Linear(d, d, bias=False)
        self.head_dim = d // heads

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        # -1 heads: under tensor parallel each rank holds heads / tp of them, each q, k, v whole.
        qkv = self.wqkv(x).view(b, t, -1, 3, self.head_dim)
        q, k, v = (qkv[:, :, :, i].transpose(1, 2) for i in range(3))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.wo(y.transpose(1, 2).reshape(b, t, -1))


class SwiGLU(nn.Module):
    def __init__(self, d: int, hidden: int) -> None:
        super().__init__()
        self.w1, self.w3 = nn.Linear(d, hidden, bias=False), nn.Linear(d, hidden, bias=False)
        self.w2 = nn.Linear(hidden, d, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class Block(nn.Module):
    def __init__(self, d: int, heads: int) -> None:
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(d), Attn(d, heads)
        self.norm2, self.mlp = nn.LayerNorm(d), SwiGLU(d, 2 * d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class Tiny(nn.Module):
    def __init__(self, tied: bool, vocab: int = 32, d: int = 16, heads: int = 4, seq: int = 8) -> None:
        super().__init__()
        self.config = types.SimpleNamespace(family="transformer")
        self.tok_emb, self.pos_emb = nn.Embedding(vocab, d), nn.Embedding(seq, d)
        self.blocks = nn.ModuleList(Block(d, heads) for _ in range(2))
        self.norm_f, self.head = nn.LayerNorm(d), nn.Linear(d, vocab, bias=False)
        if tied:
            self.head.weight = self.tok_emb.weight

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.tok_emb(idx) + self.pos_emb(torch.arange(idx.shape[1]))
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm_f(x))


def _full(t: torch.Tensor) -> torch.Tensor:
    return t.full_tensor() if hasattr(t, "full_tensor") else t


def _check_transformer(tied: bool, sequence_parallel: bool, mesh) -> None:
    from bigtrain.distributed.parallel import apply_tp

    torch.manual_seed(0)
    ref = Tiny(tied)
    sharded = Tiny(tied)
    sharded.load_state_dict(ref.state_dict())
    apply_tp(sharded, mesh, sequence_parallel)
    assert sharded.blocks[0].attn.wqkv.weight.to_local().shape[0] == 3 * 16 // 2  # heads split in two
    idx = torch.randint(0, 32, (2, 8))  # same seed on both ranks: the same batch
    for model in (ref, sharded):
        F.cross_entropy(model(idx).flatten(0, 1), idx.flatten()).backward()
    torch.testing.assert_close(sharded(idx), ref(idx), rtol=1e-5, atol=1e-5)
    grads = dict(ref.named_parameters())
    for name, p in sharded.named_parameters():
        torch.testing.assert_close(_full(p.grad), grads[name].grad, rtol=1e-4, atol=1e-6, msg=name)


def _check_mlp(mesh) -> None:
    from bigtrain.config import MLPConfig
    from bigtrain.distributed.parallel import apply_tp
    from bigtrain.models.mlp import MLP

    torch.manual_seed(0)
    # 4 Linears: two colwise/rowwise pairs
    cfg = MLPConfig(family="mlp", hidden=[16, 8, 6], activation="relu", dropout=0.0, norm="none")
    ref, sharded = MLP(cfg, (12,), 3), MLP(cfg, (12,), 3)
    sharded.load_state_dict(ref.state_dict())
    apply_tp(sharded, mesh)
    assert type(sharded.head.weight).__name__ == "DTensor"
    x, y = torch.randn(5, 12), torch.randint(0, 3, (5,))
    for model in (ref, sharded):
        F.cross_entropy(model(x), y).backward()
    grads = dict(ref.named_parameters())
    for name, p in sharded.named_parameters():
        torch.testing.assert_close(_full(p.grad), grads[name].grad, rtol=1e-4, atol=1e-6, msg=name)


def _worker(rank: int, world: int, port: int) -> None:
    from torch.distributed.device_mesh import init_device_mesh

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        mesh = init_device_mesh("cpu", (world,))
        _check_mlp(mesh)
        for tied in (False, True):
            for sp in (False, True):
                _check_transformer(tied, sp, mesh)
    finally:
        dist.destroy_process_group()
    # Every check passed. A process that gathered DTensors over gloo (full_tensor) aborts in the
    # interpreter's finalisation about one time in three with torch 2.13 ("terminate called
    # without an active exception", after destroy_process_group returned): leave without it.
    os._exit(0)


def test_tensor_parallel_plans_match_the_unsharded_model():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_worker, args=(2, port), nprocs=2, join=True)
