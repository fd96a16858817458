"""The whole-run peers of bigtrain's start-up case: the same GPT trained by a minimal Lightning
script and by a hand-written loop, each a fresh process, as a user would write them.

    python scripts/startup_peers.py lightning STEPS
    python scripts/startup_peers.py hand STEPS

Both train peer_gpt.PeerGPT in gpt_stdlib's shape (4 layers x 128, 4 heads, 16 windows of 128
bytes a step, AdamW lr 3e-3 betas 0.9/0.95 weight decay 0.1, clipping 1.0) on the first 2 MB
of the standard library's source, as bytes. The Lightning script is what its documentation
starts a user with: a LightningModule and `Trainer(max_steps=..., gradient_clip_val=1.0)` with
Lightning's defaults (its progress bar, logger and end-of-fit checkpoint). The hand loop is
plain torch. Each prints one JSON line: the boot-clock times (CLOCK_BOOTTIME) of the ends of its
first and last optimizer steps, from which the bench, which took the same clock just before
launching it, gets seconds from launch; and `tokens_per_s` (the steps after the first 8). Peak
memory is measured by the bench from outside (os.wait4).
"""

from __future__ import annotations

import json
import sys
import sysconfig
import time
from pathlib import Path

import torch

from peer_gpt import PeerGPT

SEQ, BATCH, MAX_BYTES, WARM = 128, 16, 2_000_000, 8


def windows() -> torch.Tensor:
    """(N, SEQ + 1) uint8 windows of the standard library's first MAX_BYTES bytes of source."""
    data, total = [], 0
    for path in sorted(Path(sysconfig.get_paths()["stdlib"]).rglob("*.py")):
        if total >= MAX_BYTES:
            break
        if "site-packages" in path.parts:
            continue
        data.append(path.read_bytes()[: MAX_BYTES - total])
        total += len(data[-1])
    flat = torch.frombuffer(bytearray(b"\n\n".join(data)), dtype=torch.uint8)
    n = (len(flat) - 1) // SEQ
    return flat[: n * SEQ + 1].unfold(0, SEQ + 1, SEQ).contiguous()


def model_and_optimizer() -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = PeerGPT(256, SEQ, 4, 128, 4, 0.0)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    other = [p for p in model.parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": 0.1}, {"params": other, "weight_decay": 0.0}]
    return model, torch.optim.AdamW(groups, lr=3e-3, betas=(0.9, 0.95))


class Clock:
    """Boot-clock times of the ends of optimizer steps."""

    def __init__(self) -> None:
        self.ends: list[float] = []

    def tick(self) -> None:
        self.ends.append(time.clock_gettime(time.CLOCK_BOOTTIME))

    def report(self) -> dict:
        timed = self.ends[-1] - self.ends[WARM - 1]
        return {
            "first_step_boot": self.ends[0],
            "last_step_boot": self.ends[-1],
            "tokens_per_s": (len(self.ends) - WARM) * BATCH * SEQ / timed,
        }


def hand(steps: int, clock: Clock) -> None:
    data = windows()
    model, optimizer = model_and_optimizer()
    g = torch.Generator().manual_seed(0)
    for _ in range(steps):
        batch = data[torch.randint(len(data), (BATCH,), generator=g)]
        loss = model(batch[:, :-1].long(), batch[:, 1:].long())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        clock.tick()


def lightning(steps: int, clock: Clock) -> None:
    import pytorch_lightning as pl

    class GPT(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.model, self.optimizer = model_and_optimizer()

        def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
            loss = self.model(batch[:, :-1].long(), batch[:, 1:].long())
            self.log("train/loss", loss)
            return loss

        def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
            clock.tick()

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return self.optimizer

    loader = torch.utils.data.DataLoader(windows(), batch_size=BATCH, shuffle=True)
    trainer = pl.Trainer(max_steps=steps, gradient_clip_val=1.0, accelerator="cpu", devices=1)
    trainer.fit(GPT(), loader)


if __name__ == "__main__":
    kind, n = sys.argv[1], int(sys.argv[2])
    clock = Clock()
    {"hand": hand, "lightning": lightning}[kind](n, clock)
    print(json.dumps(clock.report()))
