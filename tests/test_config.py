"""The schema: every value a user can set is checked for type, range and combination, and each
failure is one line that names the override to change."""

from __future__ import annotations

import pytest

from bigtrain.config import ConfigError, MLPConfig, RunConfig
from conftest import EXPERIMENTS, READ_ONLY, make_cfg


def test_default_config_validates_into_typed_sections():
    cfg = make_cfg()
    assert isinstance(cfg, RunConfig)
    assert isinstance(cfg.model, MLPConfig)
    assert cfg.data.name == "digits" and cfg.model.family == "mlp"
    assert cfg.micro_batch_size == cfg.data.batch_size  # 1 device, no accumulation


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_experiment_composes(name):
    cfg = make_cfg([f"+experiment={name}", *READ_ONLY])  # the GPU recipes are read, not run, here
    assert cfg.name == name


def test_seed_experiment_is_the_seed_network():
    cfg = make_cfg(["+experiment=seed"])
    assert cfg.model.hidden == [256, 128, 64, 32, 16, 8]
    assert cfg.model.activation == "relu"
    assert cfg.data.name == "breast_cancer"


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        (["optim.lr=-1"], "optim.lr=-1.0 is out of range"),
        (["optim.lr=abc"], "optim.lr=abc must be a number"),
        (["data.batch_size=0"], "data.batch_size=0 is out of range"),
        (["trainer.devices=0"], "trainer.devices=0 is out of range"),
        (["trainer.max_epochs=1.5"], "trainer.max_epochs=1.5 must be an integer"),
        (["trainer.deterministic=maybe"], "must be true or false"),
        (["trainer.precision=8"], "trainer.precision=8 is not valid"),
        (["model.activation=rellu"], "did you mean model.activation=relu"),
        (["model.hidden=[]"], "model.hidden must not be empty"),
        (["model.dropout=1.0"], "model.dropout=1.0 is out of range"),
        (["+optim.foo=1"], "unknown key 'optim.foo'"),
        (["+lr=1"], "unknown key 'lr'"),
        (["optim.betas=[0.9]"], "optim.betas must have exactly 2 values"),
        (
            ["data.batch_size=64", "trainer.accumulate_grad_batches=3"],
            "set data.batch_size to a multiple of 3",
        ),
        (["model=cnn/small", "data=breast_cancer"], "needs image data"),
        (["trainer.max_epochs=-1"], "training would never stop"),
        (["strategy=ddp"], "strategy=ddp needs more than one process"),
        (["trainer.accelerator=cpu", "trainer.devices=2"], "add strategy=ddp"),
        (["callbacks.checkpoint.monitor=val/acx"], "did you mean val/acc"),
        (["ckpt_path=/no/such/file.ckpt"], "ckpt_path=/no/such/file.ckpt does not exist"),
        (["trainer.accelerator=cpu", "trainer.precision=16-mixed"], "16-mixed needs a GPU"),
    ],
)
def test_bad_values_fail_with_one_line_naming_the_key(overrides, fragment):
    with pytest.raises(ConfigError) as info:
        make_cfg(overrides)
    message = str(info.value)
    assert fragment in message
    assert "\n" not in message


def test_gpu_request_without_gpu_names_the_fix():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(ConfigError, match="trainer.accelerator=cpu"):
        make_cfg(["trainer.accelerator=gpu"])


def test_global_batch_is_split_over_devices_and_accumulation():
    cfg = make_cfg(
        [
            "data.batch_size=64",
            "trainer.accumulate_grad_batches=4",
            "strategy=ddp",
            "trainer.accelerator=cpu",
            "trainer.devices=2",
        ]
    )
    assert cfg.micro_batch_size == 8
    assert cfg.data_parallel_size == 2
