"""Two measurements before training, each with a plot in plots/ and a suggestion in the log and
in results.json (results["finders"]).

Learning-rate range test: `num_steps` optimizer steps on real training batches of the global
batch size while the rate rises exponentially from min_lr to max_lr (every parameter group keeps
its ratio to optim.lr, so Muon's fallback rate scales too). The loss is smoothed (EMA 0.9,
bias-corrected) and the test stops early once it exceeds 4x its best. Suggestion: the rate where
the smoothed loss falls fastest per decade of rate (steepest negative slope before the minimum).

Batch-size finder: the data loader's batch comes from the frozen config, so this is a separate
doubling search over the micro-batch from `start` to `max`: one untimed optimizer step, then
`steps` timed ones per size, on batches drawn from the training split (with replacement when
the size exceeds it). A size that runs out of memory ends the search. Suggestion: the smallest
micro-batch whose samples/s is within `speed_fraction` of the fastest one that fits; past that
point a bigger batch buys no speed, only fewer steps per epoch. The global batch to set is
micro-batch x devices x accumulation.

Both restore the weights and the random number generator state afterwards, so training starts
from the same point as without them.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from bigtrain.training.optim import build_optimizer

log = logging.getLogger(__name__)


class _Restore(contextlib.AbstractContextManager):
    """Puts the module's weights and torch's RNG back as they were."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.module = module

    def __enter__(self) -> _Restore:
        self.state = {k: v.detach().clone() for k, v in self.module.state_dict().items()}
        self.rng = torch.get_rng_state()
        self.was_training = self.module.training
        return self

    def __exit__(self, *exc: Any) -> None:
        self.module.load_state_dict(self.state)
        torch.set_rng_state(self.rng)
        self.module.train(self.was_training)


def _device(accelerator: str) -> torch.device:
    if accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


def _autocast(device: torch.device, precision: str):
    if precision in ("bf16-mixed", "16-mixed"):
        dtype = torch.bfloat16 if precision.startswith("bf16") else torch.float16
        return torch.autocast(device.type, dtype=dtype)
    return contextlib.nullcontext()


def _batches(tensors: tuple[torch.Tensor, ...], size: int, seed: int):
    """Endless batches of `size` from a fixed-seed shuffle (with replacement)."""
    gen = torch.Generator().manual_seed(seed)
    n = len(tensors[0])
    while True:
        idx = torch.randint(0, n, (size,), generator=gen)
        yield tuple(t[idx] for t in tensors)


def _train_step(module, optimizer, batch, device, precision) -> torch.Tensor:
    x, y = (t.to(device) for t in batch)
    optimizer.zero_grad(set_to_none=True)
    with _autocast(device, precision):
        loss, _ = module.loss_and_probs(module(x), y)
    loss.backward()
    optimizer.step()
    return loss.detach()


def lr_range_test(module, train: tuple, optim_cfg: Any, cfg: Any, run: Any) -> dict:
    """Run the range test on `module` (restored afterwards); returns the results block."""
    device = _device(run.trainer.accelerator)
    module.to(device)
    with _Restore(module):
        module.train()
        optimizer = build_optimizer(optim_cfg, module.model)
        base = [g["lr"] / optim_cfg.lr for g in optimizer.param_groups]  # each group's ratio
        batches = _batches(train, run.data.batch_size, run.seed)
        lrs, losses, smooth, best, avg = [], [], [], math.inf, 0.0
        for k in range(cfg.num_steps):
            lr = cfg.min_lr * (cfg.max_lr / cfg.min_lr) ** (k / (cfg.num_steps - 1))
            for g, r in zip(optimizer.param_groups, base, strict=True):
                g["lr"] = lr * r
            loss = float(_train_step(module, optimizer, next(batches), device, run.trainer.precision))
            if not math.isfinite(loss):
                break
            avg = 0.9 * avg + 0.1 * loss
            s = avg / (1 - 0.9 ** (k + 1))  # bias correction of the EMA's zero start
            lrs.append(lr), losses.append(loss), smooth.append(s)
            best = min(best, s)
            if s > 4 * best:
                break
    module.to("cpu")
    suggestion = suggest_lr(lrs, smooth)
    return {"lrs": lrs, "losses": losses, "smoothed": smooth, "suggestion": suggestion}


def suggest_lr(lrs: list[float], smooth: list[float]) -> float | None:
    """The rate of steepest descent of the smoothed loss against log10(rate), before its minimum."""
    end = int(min(range(len(smooth)), key=smooth.__getitem__)) if smooth else 0
    if end < 2:
        return None
    slopes = [
        (smooth[i + 1] - smooth[i - 1]) / (math.log10(lrs[i + 1]) - math.log10(lrs[i - 1]))
        for i in range(1, end)
    ]
    i = min(range(len(slopes)), key=slopes.__getitem__) + 1
    return lrs[i]


def batch_size_search(module, train: tuple, optim_cfg: Any, cfg: Any, run: Any) -> dict:
    """The doubling search (weights restored afterwards); returns the results block."""
    device = _device(run.trainer.accelerator)
    module.to(device)
    tried = []
    with _Restore(module):
        module.train()
        size = cfg.start
        while size <= cfg.max:
            row = {"micro_batch": size, "fits": True, "samples_per_s": None, "peak_memory_bytes": None}
            try:
                row.update(_time_size(module, train, optim_cfg, cfg, run, device, size))
            except torch.OutOfMemoryError:
                row["fits"] = False
                tried.append(row)
                break
            finally:
                if device.type == "cuda":
                    torch.cuda.empty_cache()
            tried.append(row)
            size *= 2
    module.to("cpu")
    fitting = [r for r in tried if r["fits"]]
    suggestion = None
    if fitting:
        fastest = max(r["samples_per_s"] for r in fitting)
        suggestion = next(
            r["micro_batch"] for r in fitting if r["samples_per_s"] >= cfg.speed_fraction * fastest
        )
    per_step = run.trainer.devices * run.trainer.num_nodes * run.trainer.accumulate_grad_batches
    return {
        "tried": tried,
        "suggested_micro_batch": suggestion,
        "suggested_global_batch": suggestion * per_step if suggestion else None,
        "rule": f"smallest micro-batch within {cfg.speed_fraction:g} of the best samples/s",
    }


def _time_size(module, train, optim_cfg, cfg, run, device, size: int) -> dict:
    optimizer = build_optimizer(optim_cfg, module.model)  # fresh state: its memory counts too
    batch = next(_batches(train, size, run.seed))
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    _train_step(module, optimizer, batch, device, run.trainer.precision)  # untimed: warm-up
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    for _ in range(cfg.steps):
        _train_step(module, optimizer, batch, device, run.trainer.precision)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    return {"samples_per_s": size * cfg.steps / seconds, "peak_memory_bytes": peak}


def run_finders(module, dm, run: Any, plots_dir: Path) -> dict:
    """The enabled finders; applies the learning-rate suggestion when asked. Returns results."""
    f = run.tricks.finders
    train = getattr(dm, "splits", {}).get("train")
    if train is None:
        raise RuntimeError(f"the finders need in-memory training data; data={run.data.name} has none")
    out: dict[str, Any] = {}
    if f.lr.enabled:
        res = lr_range_test(module, train, module.optim_cfg, f.lr, run)
        res["plot"] = _plot_lr(res, plots_dir / "lr_finder.png")
        res["applied"] = bool(f.lr.apply and res["suggestion"])
        if res["applied"]:
            o = module.optim_cfg
            new = {"lr": res["suggestion"]}
            if hasattr(o, "fallback_lr"):  # Muon: the fallback keeps its ratio to optim.lr
                new["fallback_lr"] = o.fallback_lr * res["suggestion"] / o.lr
            module.optim_cfg = replace(o, **new)
        log.info(
            "lr finder: suggested optim.lr=%s%s", res["suggestion"], " (applied)" if res["applied"] else ""
        )
        out["lr"] = res
    if f.batch_size.enabled:
        res = batch_size_search(module, train, module.optim_cfg, f.batch_size, run)
        res["plot"] = _plot_batch(res, plots_dir / "batch_size_finder.png")
        log.info(
            "batch-size finder: suggested micro-batch %s, i.e. data.batch_size=%s",
            res["suggested_micro_batch"],
            res["suggested_global_batch"],
        )
        out["batch_size"] = res
    return out


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def loss_limits(losses: list[float], smoothed: list[float]) -> tuple[float, float]:
    """The plot's loss axis: from the lowest loss to the highest smoothed loss before the
    smoothed minimum, plus margins, so the divergence at the end does not squash the curve."""
    end = min(range(len(smoothed)), key=smoothed.__getitem__)
    low, high = min(losses), max(smoothed[: end + 1])
    span = (high - low) or abs(high) or 1.0
    return low - 0.05 * span, high + 0.25 * span


def _plot_lr(res: dict, path: Path) -> str:
    plt = _pyplot()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(res["lrs"], res["losses"], alpha=0.3, label="loss")
    ax.plot(res["lrs"], res["smoothed"], label="smoothed")
    if res["losses"]:
        res["plot_ylim"] = list(loss_limits(res["losses"], res["smoothed"]))
        ax.set_ylim(*res["plot_ylim"])
    if res["suggestion"]:
        ax.axvline(res["suggestion"], color="red", ls="--", label=f"suggestion {res['suggestion']:.2e}")
    ax.set(xscale="log", xlabel="learning rate", ylabel="training loss", title="Learning-rate range test")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return f"plots/{path.name}"


def _plot_batch(res: dict, path: Path) -> str:
    plt = _pyplot()
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [r for r in res["tried"] if r["fits"]]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot([r["micro_batch"] for r in rows], [r["samples_per_s"] for r in rows], marker="o")
    if res["suggested_micro_batch"]:
        ax.axvline(res["suggested_micro_batch"], color="red", ls="--", label="suggestion")
        ax.legend()
    ax.set(xscale="log", xlabel="micro-batch", ylabel="samples/s", title="Batch-size finder")
    ax.set_xscale("log", base=2)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return f"plots/{path.name}"
