"""The schema: every value a user can set is checked for type, range and combination, and each
failure is one line that names the override to change."""

from __future__ import annotations

import pytest

from bigtrain.config import ConfigError, MLPConfig, RunConfig, parse
from bigtrain.runs.compose import compose_run
from conftest import EXPERIMENTS, READ_ONLY, SPEECH_EXPERIMENTS, make_cfg


def test_default_config_validates_into_typed_sections():
    cfg = make_cfg()
    assert isinstance(cfg, RunConfig)
    assert isinstance(cfg.model, MLPConfig)
    assert cfg.data.name == "digits" and cfg.model.family == "mlp"
    assert cfg.micro_batch_size == cfg.data.batch_size  # 1 device, no accumulation


@pytest.mark.parametrize("name", [e for e in EXPERIMENTS if e not in SPEECH_EXPERIMENTS])
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


def test_presets_state_only_what_differs_from_their_family_common():
    """conf/model/<folder>/common.yaml holds every key once; each preset starts from it and sets
    only keys whose value differs, and composes to every key of the family's schema."""
    import dataclasses
    from importlib import resources

    import yaml

    root = resources.files("bigtrain.conf").joinpath("model")
    checked = 0
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        common = yaml.safe_load(folder.joinpath("common.yaml").read_text())
        for preset in sorted(
            p for p in folder.iterdir() if p.name.endswith(".yaml") and p.name != "common.yaml"
        ):
            data = yaml.safe_load(preset.read_text())
            assert data.pop("defaults") == [f"{folder.name}/common@_here_", "_self_"], preset.name
            same = [k for k, v in data.items() if common.get(k) == v]
            assert not same, f"{folder.name}/{preset.name} repeats {same} from common.yaml"
            over = [f"model={folder.name}/{preset.name[:-5]}", *READ_ONLY]
            if common["family"] == "transformer":
                over.append("data=stdlib_text")
            if common["family"] in ("kws_cnn", "audio_transformer"):
                over.append("data=audio_folder")
            cfg = parse(compose_run(over)[0])  # the schema only (the data's files are not this test's)
            assert {f.name for f in dataclasses.fields(cfg.model)} == set(common)
            checked += 1
    assert checked >= 20


def test_a_preset_of_your_own_starts_from_a_family_common(tmp_path):
    (tmp_path / "model" / "mlp").mkdir(parents=True)
    (tmp_path / "model" / "mlp" / "wide.yaml").write_text(
        "defaults:\n  - mlp/common@_here_\n  - _self_\nhidden: [48, 48]\n"
    )
    cfg = make_cfg(["model=mlp/wide"], config_dir=str(tmp_path))
    assert cfg.model.hidden == [48, 48] and cfg.model.activation == make_cfg().model.activation
