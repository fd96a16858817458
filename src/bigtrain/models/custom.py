"""A model of your own, given by `_target_` (docs/extending.md): any torch.nn.Module, built with
its YAML arguments plus what the data says, when its signature asks for them by name:
`num_outputs` (classes, or 1 for binary tasks) and `input_shape` (one sample's shape, a tuple).

It is held as `net` inside CustomModel, whose `config` says family "custom": the state dict keys
of a checkpoint are `model.net.<your names>`. Nothing here knows about parallelism; the FSDP
units of the family are in distributed/custom.py.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from bigtrain.config.errors import ConfigError

SUPPLIED = ("num_outputs", "input_shape")


class CustomModel(nn.Module):
    """The user's module as `net`, with the config that tells its family."""

    def __init__(self, cfg: Any, net: nn.Module) -> None:
        super().__init__()
        self.config = cfg
        self.net = net

    def forward(self, x):
        return self.net(x)


def build_custom(cfg: Any, input_shape: tuple[int, ...], num_outputs: int) -> CustomModel:
    """The model of a CustomModelConfig for the data's input shape and outputs."""
    from bigtrain.targets import accepts, partial, resolve

    target = resolve(cfg.target, "model")
    given = {"num_outputs": num_outputs, "input_shape": tuple(input_shape)}
    extra = {k: v for k, v in given.items() if accepts(target, k)}
    net = partial(cfg.target, cfg.arguments)(**extra)
    if not isinstance(net, nn.Module):
        raise ConfigError(
            f"model._target_={cfg.target} returned a {type(net).__name__}, not a torch.nn.Module: return one"
        )
    return CustomModel(cfg, net)
