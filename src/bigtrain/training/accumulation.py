"""The mean of a token-level loss over one optimizer step, however its tokens are split.

With gradient accumulation (and data parallelism) a step's tokens arrive in micro-batches, and
with padding the micro-batches hold different numbers of real tokens. The mean of per-micro-batch
means then weights a token in a short micro-batch more than one in a long one. Instead each
micro-batch backpropagates its loss *sum*; before the optimizer step the gradient is rescaled to
the sum over the step divided by the step's token count T on all processes:

    Lightning divides each micro-batch loss by the accumulation N, DDP averages over W processes,
    so the accumulated gradient is  g = sum_grads / (N W);  g * (N W / T) = sum_grads / T.

So N micro-batches of B/N give exactly the update of one batch of B (tests/test_tricks.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F


class StepTokenMean:
    def __init__(self) -> None:
        self.tokens: torch.Tensor | None = None

    @property
    def pending(self) -> bool:
        """Whether token losses were summed since the last optimizer step."""
        return self.tokens is not None

    def micro_batch_loss(
        self,
        logits: torch.Tensor,
        targets: torch.Tensor,
        ignore_index: int = -100,
        label_smoothing: float = 0.0,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss to backpropagate: the sum over real tokens, the micro-batch mean for logging)."""
        flat_targets = targets.reshape(-1)
        loss_sum = F.cross_entropy(
            logits.reshape(-1, logits.shape[-1]).float(),
            flat_targets,
            ignore_index=ignore_index,
            reduction="sum",
            label_smoothing=label_smoothing,
        )
        count = (flat_targets != ignore_index).sum()
        self.tokens = count if self.tokens is None else self.tokens + count
        return loss_sum, loss_sum.detach() / count.clamp_min(1)

    def normalize_grads(
        self,
        params: Iterable[torch.Tensor],
        accumulation: int,
        world_size: int,
        all_reduce_sum: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        """Rescale the accumulated gradients to the mean over the step's tokens; reset the count."""
        tokens = self.tokens.float()
        if all_reduce_sum is not None:
            tokens = all_reduce_sum(tokens)
        scale = accumulation * world_size / tokens.clamp_min(1)
        for p in params:
            if p.grad is not None:
                p.grad.mul_(scale.to(p.grad.dtype))
        self.tokens = None
