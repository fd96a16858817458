"""Typed schemas of every config group, and the conversion of a composed config into them.

Hydra composes YAML into a DictConfig; `parse` turns it into frozen dataclasses (RunConfig) or
raises one `ConfigError` listing every unknown key, missing key, wrong type and out-of-range
value, one line each. Checks across groups belong to the features that own them and run in
`bigtrain.runs.validate.validate`, which callers use.

This package imports no other part of bigtrain, and no torch, Lightning or Hydra (omegaconf
only inside `parse`), so config errors come back in well under a second. The schemas carry
types and ranges only: every value, defaults included, comes from conf/*.yaml.

Layout: errors.py (ConfigError, message helpers), convert.py (dict -> dataclass), one schema
module per area (schema_data, schema_models, schema_optim, schema_run).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from bigtrain.config.convert import VARIANTS, build, build_variant, opt, variant
from bigtrain.config.errors import ConfigError, close_match, config_error, did_you_mean, files_in, fmt
from bigtrain.config.schema_data import (
    SPLITS,
    TABLE_SUFFIXES,
    ImageFolderDataConfig,
    SklearnDataConfig,
    TabularDataConfig,
    TextDataConfig,
    TokensDataConfig,
)
from bigtrain.config.schema_models import (
    CNNConfig,
    MLPConfig,
    TransformerConfig,
    ViTConfig,
)
from bigtrain.config.schema_optim import (
    AdamConfig,
    BatchSizeFinderConfig,
    ConstantSchedConfig,
    CosineSchedConfig,
    EMAConfig,
    ExponentialSchedConfig,
    FindersConfig,
    LinearSchedConfig,
    LRFinderConfig,
    MuonConfig,
    NonFiniteConfig,
    OptimCommon,
    PlateauSchedConfig,
    SchedCommon,
    SGDConfig,
    StepSchedConfig,
    SWAConfig,
    TricksConfig,
    WSDSchedConfig,
)
from bigtrain.config.schema_run import (
    REGRESSION_METRICS,
    CallbacksConfig,
    CheckpointConfig,
    CSVLoggerConfig,
    EarlyStoppingConfig,
    LoggerConfig,
    MetricsConfig,
    MLflowLoggerConfig,
    RunConfig,
    SamplesConfig,
    TensorBoardLoggerConfig,
    ThroughputConfig,
    TrainerConfig,
    WandbLoggerConfig,
)
from bigtrain.config.schema_strategy import (
    AutoStrategyConfig,
    Checkpointing,
    DDPStrategyConfig,
    DeepSpeedStrategyConfig,
    FSDPStrategyConfig,
    FSDPTPStrategyConfig,
    StrategyConfig,
    TPStrategyConfig,
    checkpointing,
    gathered_dtype,
    tensor_parallel_size,
)
from bigtrain.config.trainer_args import lightning_errors, split_passthrough


def _pass_trainer_arguments(raw: dict) -> None:
    """Move `+trainer.NAME` keys that are Lightning Trainer arguments into trainer.lightning,
    and check every key there against the Trainer's arguments (config/trainer_args.py)."""
    trainer = raw.get("trainer")
    if not isinstance(trainer, dict):
        return
    listed = {f.name for f in dataclasses.fields(TrainerConfig)}
    own, passed, errors = split_passthrough(trainer, listed)
    lightning = own.get("lightning")
    errors += lightning_errors(lightning, listed)
    if errors:
        raise config_error(errors)
    own["lightning"] = {**(lightning if isinstance(lightning, dict) else {}), **passed}
    raw["trainer"] = own


def from_dict(raw: dict) -> RunConfig:
    """A plain (resolved) config dict as the typed RunConfig; ConfigError listing every mistake."""
    raw = dict(raw)
    raw.pop("hydra", None)
    _pass_trainer_arguments(raw)
    return build(RunConfig, raw)


def parse(cfg: Any) -> RunConfig:
    """A Hydra DictConfig as the typed RunConfig: interpolations resolved, then types and ranges
    checked against the schemas. No checks across groups: `bigtrain.runs.validate.validate` adds them."""
    from omegaconf import OmegaConf
    from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

    try:
        raw = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    except MissingMandatoryValue as e:  # a `???` of a YAML file: the user's to give
        key = getattr(e, "full_key", None) or "?"
        raise ConfigError(f"{key} has no value: add {key}=...") from e
    except OmegaConfBaseException as e:
        key = getattr(e, "full_key", None) or "?"
        raise ConfigError(f"cannot resolve '{key}': {str(e).splitlines()[0]}") from e
    return from_dict(raw)


def as_dict(cfg: RunConfig) -> dict:
    """Plain nested dict of a RunConfig (for logging as hyperparameters and plan.json)."""
    return dataclasses.asdict(cfg)


__all__ = [
    "REGRESSION_METRICS",
    "SPLITS",
    "TABLE_SUFFIXES",
    "VARIANTS",
    "AdamConfig",
    "AutoStrategyConfig",
    "BatchSizeFinderConfig",
    "CNNConfig",
    "CSVLoggerConfig",
    "CallbacksConfig",
    "CheckpointConfig",
    "ConfigError",
    "ConstantSchedConfig",
    "CosineSchedConfig",
    "DDPStrategyConfig",
    "DeepSpeedStrategyConfig",
    "EMAConfig",
    "EarlyStoppingConfig",
    "ExponentialSchedConfig",
    "FSDPStrategyConfig",
    "FSDPTPStrategyConfig",
    "FindersConfig",
    "ImageFolderDataConfig",
    "LRFinderConfig",
    "LinearSchedConfig",
    "LoggerConfig",
    "MLPConfig",
    "MLflowLoggerConfig",
    "MetricsConfig",
    "MuonConfig",
    "NonFiniteConfig",
    "OptimCommon",
    "PlateauSchedConfig",
    "RunConfig",
    "SGDConfig",
    "SWAConfig",
    "SamplesConfig",
    "SchedCommon",
    "SklearnDataConfig",
    "StepSchedConfig",
    "StrategyConfig",
    "TPStrategyConfig",
    "TabularDataConfig",
    "TensorBoardLoggerConfig",
    "TextDataConfig",
    "ThroughputConfig",
    "TokensDataConfig",
    "TrainerConfig",
    "TransformerConfig",
    "TricksConfig",
    "ViTConfig",
    "WSDSchedConfig",
    "WandbLoggerConfig",
    "as_dict",
    "build",
    "build_variant",
    "close_match",
    "config_error",
    "did_you_mean",
    "files_in",
    "fmt",
    "from_dict",
    "opt",
    "parse",
    "tensor_parallel_size",
    "checkpointing",
    "Checkpointing",
    "gathered_dtype",
    "variant",
]
