"""Config checks of a model: the inputs its family takes against the data, its family record's
own checks (models/<family>_record.py: heads, widths, patches and depth against the image side, a
Hugging Face folder to start from), and a model of your own given by `_target_`.

Each check takes the RunConfig and yields one line per problem (runs/validate.py runs them).
"""

from __future__ import annotations

from collections.abc import Iterator

from bigtrain.config import RunConfig
from bigtrain.data import source
from bigtrain.models.family import family


def check_shapes(cfg: RunConfig) -> Iterator[str]:
    """Every check the model's family record lists."""
    for check in family(cfg.model.family).checks:
        yield from check(cfg)


def check_families(cfg: RunConfig) -> Iterator[str]:
    """Token data goes with a language-model family, images with an image family, audio with an
    audio family: the model's record says which inputs it takes (models/family.py), the data
    source's what it gives (data/source.py)."""
    d, name = cfg.data.name, cfg.model.family
    takes, gives = family(name).inputs, source(d).inputs(d)
    if (takes == "audio") != (gives == "audio"):
        yield (
            f"model={name}/* needs audio data but data={d}: use data=audio_folder"
            if takes == "audio"
            else f"data={d} is audio but model={name}/*: use model=kws_cnn/* or model=audio_transformer/*"
        )
        return
    if gives == "tokens" and takes != "tokens":
        yield f"data={d} is token data but model={name}/*: use model=gpt/tiny (or llama/*)"
    if gives != "tokens" and takes == "tokens":
        yield f"model={name} needs token data but data={d}: use data=stdlib_text, text or tokens"
    if takes == "image" and gives != "image":
        yield (
            f"model={name}/* needs image data but data={d} gives flat features; "
            f"use data=digits or a model=mlp/* preset"
        )


def check_model_target(cfg: RunConfig) -> Iterator[str]:
    """model._target_ imports, is a torch.nn.Module, and takes the model's arguments; bigtrain
    passes num_outputs and input_shape where its signature names them. Imports the user's module,
    and torch with it."""
    m = cfg.model
    if not hasattr(m, "target"):  # a built-in family (only CustomModelConfig names a target)
        return
    from torch import nn

    from bigtrain.models.custom import SUPPLIED
    from bigtrain.targets import target_problems

    yield from target_problems(m.target, m.arguments, "model", nn.Module, "torch.nn.Module", SUPPLIED)
