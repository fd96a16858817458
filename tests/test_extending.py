"""Your own model, data module and callbacks by `_target_` (docs/extending.md): they train, on
one process and under DDP on two, the plan counts them, and a bad target or argument is one line
before any run directory exists."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import bigtrain
from bigtrain.config import ConfigError
from bigtrain.data.custom import HELD
from conftest import QUIET, bigtrain_cmd, make_cfg, read_results

PACKAGE = "ext_pkg_tests"  # imported by the processes of these tests, from their working directory

NETS = """
import math

import torch
from torch import nn


class TinyNet(nn.Module):
    def __init__(self, input_shape, num_outputs, hidden=16):
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), hidden), nn.ReLU())
        self.head = nn.Linear(hidden, num_outputs)

    def forward(self, x):
        return self.head(self.body(x))


def make_net(num_outputs, width=8):
    return nn.Sequential(nn.Linear(30, width), nn.ReLU(), nn.Linear(width, num_outputs))


class NeedsDepth(nn.Module):
    def __init__(self, depth, num_outputs, hidden=16):
        super().__init__()


class ItemInForward(TinyNet):
    def forward(self, x):
        scale = float(x.abs().sum().item() > 0)  # no value on the meta device
        return super().forward(x) * scale


def not_a_module(num_outputs):
    return "a string"
"""

DATA = '''
import pytorch_lightning as pl
import torch
from sklearn.datasets import load_breast_cancer
from torch.utils.data import DataLoader, TensorDataset


class CancerData(pl.LightningDataModule):
    """No input_shape or batch_size attribute: bigtrain reads one training batch for them."""

    def __init__(self, per_device_batch=32):
        super().__init__()
        self.per_device_batch = per_device_batch
        self.num_classes = 2
        self.parts = {}

    def setup(self, stage=None):
        if self.parts:
            return
        x, y = load_breast_cancer(return_X_y=True)
        x = torch.tensor((x - x.mean(0)) / x.std(0), dtype=torch.float32)
        y = torch.tensor(y)
        self.parts = {"train": TensorDataset(x[:400], y[:400]), "val": TensorDataset(x[400:480], y[400:480]),
                      "test": TensorDataset(x[480:], y[480:])}

    def train_dataloader(self):
        return DataLoader(self.parts["train"], batch_size=self.per_device_batch, shuffle=True)

    def val_dataloader(self):
        return DataLoader(self.parts["val"], batch_size=64)

    def test_dataloader(self):
        return DataLoader(self.parts["test"], batch_size=64)


class NoClasses(CancerData):
    def __init__(self, per_device_batch=32):
        super().__init__(per_device_batch)
        del self.num_classes


class NeedsPath(CancerData):
    def __init__(self, path, per_device_batch=32):
        super().__init__(per_device_batch)
'''

CALLBACKS = """
import json

import pytorch_lightning as pl


class CountSteps(pl.Callback):
    def __init__(self, out, every=1):
        self.out, self.every = out, every

    def on_fit_end(self, trainer, pl_module):
        if trainer.is_global_zero:
            with open(self.out, "w") as f:
                json.dump({"steps": trainer.global_step, "every": self.every, "world": trainer.world_size}, f)
"""

MODEL_YAML = f"_target_: {PACKAGE}.nets.TinyNet\nhidden: 16\n"
DATA_YAML = f"_target_: {PACKAGE}.data.CancerData\nper_device_batch: 32\n"
CALLBACK = f"callbacks.extra=[{{_target_: {PACKAGE}.callbacks.CountSteps, out: steps.json, every: 2}}]"
SHORT = ["trainer.max_epochs=2", "trainer.limit_train_batches=4", "trainer.limit_val_batches=2"]


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A working directory with the package and a config folder naming its pieces."""
    root = tmp_path_factory.mktemp("project")
    pkg = root / PACKAGE
    pkg.mkdir()
    for name, text in {"nets": NETS, "data": DATA, "callbacks": CALLBACKS}.items():
        (pkg / f"{name}.py").write_text(text)
    for group, name, text in (("model", "tiny", MODEL_YAML), ("data", "cancer", DATA_YAML)):
        (root / "my_configs" / group).mkdir(parents=True)
        (root / "my_configs" / group / f"{name}.yaml").write_text(text)
    return root


@pytest.fixture
def importable(project, monkeypatch):
    """The project's package importable in this process, as the command makes it for its own."""
    monkeypatch.syspath_prepend(str(project))
    yield project
    for name in [m for m in sys.modules if m.split(".")[0] == PACKAGE]:
        del sys.modules[name]
    HELD.clear()  # the data modules validation built from it


def _cfg(project, *overrides: str):
    return make_cfg(["model=tiny", "data=cancer", *overrides], config_dir=str(project / "my_configs"))


def _train(project, cwd, *overrides: str, quiet: bool = True) -> subprocess.CompletedProcess:
    cwd.mkdir(parents=True, exist_ok=True)
    config_dir = ["--config-dir", str(project / "my_configs")]
    base = ["model=tiny", "data=cancer", "hydra.run.dir=run", *SHORT]
    return bigtrain_cmd(*config_dir, *base, *(QUIET if quiet else []), *overrides, cwd=cwd, timeout=600)


def _copy_package(project, cwd) -> None:
    """The package in the command's working directory: where bigtrain imports it from."""
    import shutil

    shutil.copytree(project / PACKAGE, cwd / PACKAGE)


def test_a_target_model_and_data_module_train_with_a_callback(project, tmp_path):
    cwd = tmp_path / "work"
    cwd.mkdir()
    _copy_package(project, cwd)
    out = _train(project, cwd, CALLBACK)
    assert out.returncode == 0, out.stderr[-3000:]
    results = read_results(cwd / "run")
    assert results["status"] == "completed", results.get("error")
    assert {"loss", "acc", "auroc"} <= set(results["test"]), results["test"]
    assert results["global_step"] == 8 and results["params"] == 30 * 16 + 16 + 16 + 1
    plan = json.loads((cwd / "run" / "plan.json").read_text())
    assert plan["model"] == "custom" and plan["batch"]["micro_batch_size"] == 32  # read from a batch
    assert [g["group"] for g in plan["optimizer_groups"]] == ["decay", "no_decay"]
    assert json.loads((cwd / "steps.json").read_text()) == {"steps": 8, "every": 2, "world": 1}
    assert f"data: {PACKAGE}.data.CancerData: 2 classes" in out.stdout


@pytest.mark.slow
@pytest.mark.distributed
def test_a_target_model_and_data_module_train_under_ddp_on_two_processes(project, tmp_path):
    cwd = tmp_path / "work"
    cwd.mkdir()
    _copy_package(project, cwd)
    ddp = ["strategy=ddp", "trainer.accelerator=cpu", "trainer.devices=2", CALLBACK]
    out = _train(project, cwd, *ddp, quiet=False)  # the default callbacks: progress bar, summary
    assert out.returncode == 0, out.stderr[-4000:]
    assert not (cwd / "outputs").exists()  # rank one wrote into rank zero's run directory
    results = read_results(cwd / "run")
    assert results["status"] == "completed", results.get("error")
    assert {"loss", "acc", "auroc"} <= set(results["test"])
    # 400 training samples, 32 per process on 2 processes: limit_train_batches=4 steps an epoch.
    assert json.loads((cwd / "steps.json").read_text()) == {"steps": 8, "every": 2, "world": 2}
    plan = json.loads((cwd / "run" / "plan.json").read_text())
    assert plan["batch"]["global_batch_size"] == 64 and plan["strategy"] == "ddp"


def test_the_plan_counts_a_function_target_and_says_when_flops_are_unknown(importable, tmp_path):
    config_dir = str(importable / "my_configs")
    base = ["model=tiny", "data=cancer", "dry_run=true", *QUIET]
    lazy = bigtrain.train([*base, f"model._target_={PACKAGE}.nets.make_net", "~model.hidden"],
                          run_dir=tmp_path / "lazy", config_dir=config_dir)  # fmt: skip
    assert lazy["status"] == "planned" and lazy["plan"]["params"]["total"] > 0
    item = bigtrain.train([*base, f"model._target_={PACKAGE}.nets.ItemInForward"],
                          run_dir=tmp_path / "item", config_dir=config_dir)  # fmt: skip
    assert item["plan"]["params"]["total"] == 30 * 16 + 16 + 16 + 1
    assert item["plan"]["flops_per_sample"] is None  # its forward needs values: no meta pass
    assert json.loads((tmp_path / "item" / "plan.json").read_text())["flops_per_sample"] is None


BAD = {
    "model._target_=nowhere_pkg.nets.Net": "model._target_=nowhere_pkg.nets.Net: no module named 'nowhere_pkg': put",
    f"model._target_={PACKAGE}.netz.TinyNet": f"no module named '{PACKAGE}.netz' (did you mean {PACKAGE}.nets?)",
    f"model._target_={PACKAGE}.nets.TinyNett": f"{PACKAGE}.nets has no attribute 'TinyNett' (did you mean {PACKAGE}.nets.TinyNet?)",
    f"model._target_={PACKAGE}.data.CancerData": "is not a torch.nn.Module: name a subclass of torch.nn.Module",
    f"data._target_={PACKAGE}.nets.TinyNet": "is not a pytorch_lightning.LightningDataModule",
    f"data._target_={PACKAGE}.data.NoClasses": "has no num_classes: set self.num_classes",
    "+model.hiden=3": f"unknown argument 'model.hiden' of {PACKAGE}.nets.TinyNet: did you mean model.hidden?",
    f"model._target_={PACKAGE}.nets.NeedsDepth": f"missing argument 'model.depth' of {PACKAGE}.nets.NeedsDepth: add model.depth=<value>",
    "+model.num_outputs=2": "model.num_outputs is what bigtrain passes",
    f"callbacks.extra=[{{_target_: {PACKAGE}.callbacks.CountSteps, out: x, evry: 1}}]": "unknown argument 'callbacks.extra[0].evry'",
    f"callbacks.extra=[{{_target_: {PACKAGE}.callbacks.CountSteps}}]": "missing argument 'callbacks.extra[0].out'",
    f"callbacks.extra=[{{_target_: {PACKAGE}.data.CancerData}}]": "is not a pytorch_lightning.Callback",
    "model._target_=TinyNet": "is not a dotted path",
}


@pytest.mark.parametrize("override", list(BAD), ids=list(range(len(BAD))))
def test_a_bad_target_or_argument_is_one_line(importable, override):
    with pytest.raises(ConfigError) as e:
        _cfg(importable, override)
    assert len(e.value.lines) == 1 and BAD[override] in e.value.lines[0], e.value.lines


def test_tensor_parallel_is_refused_and_a_function_returning_no_module_fails_at_build(importable):
    tp = ["strategy=tp", "trainer.accelerator=cpu", "trainer.devices=2"]
    with pytest.raises(
        ConfigError,
        match="needs a tensor-parallel plan, which model._target_=.* does not give: add a bigtrain_tp_plan",
    ):
        _cfg(importable, *tp)
    cfg = _cfg(importable, f"model._target_={PACKAGE}.nets.not_a_module", "~model.hidden")  # called later
    from bigtrain.models import build_model

    with pytest.raises(ConfigError, match="returned a str, not a torch.nn.Module"):
        build_model(cfg.model, (30,), 1)


# Several mistakes per command, each one line: (overrides, the callbacks.extra items, the lines).
COMMAND_MISTAKES = [
    (
        [f"model._target_={PACKAGE}.nets.TinyNett", f"data._target_={PACKAGE}.data.NeedsPath"],
        ["{_target_: nowhere_pkg.Cb}", f"{{_target_: {PACKAGE}.callbacks.CountSteps, out: x, evry: 1}}"],
        [
            f"model._target_={PACKAGE}.nets.TinyNett: {PACKAGE}.nets has no attribute 'TinyNett'",
            f"missing argument 'data.path' of {PACKAGE}.data.NeedsPath: add data.path=<value>",
            "callbacks.extra[0]._target_=nowhere_pkg.Cb: no module named 'nowhere_pkg'",
            f"unknown argument 'callbacks.extra[1].evry' of {PACKAGE}.callbacks.CountSteps",
        ],
    ),
    (
        [f"model._target_={PACKAGE}.data.CancerData", f"data._target_={PACKAGE}.nets.TinyNet"],
        [f"{{_target_: {PACKAGE}.data.CancerData}}", f"{{_target_: {PACKAGE}.callbacks.CountSteps}}"],
        [
            f"model._target_={PACKAGE}.data.CancerData is not a torch.nn.Module",
            f"data._target_={PACKAGE}.nets.TinyNet is not a pytorch_lightning.LightningDataModule",
            f"callbacks.extra[0]._target_={PACKAGE}.data.CancerData is not a pytorch_lightning.Callback",
            "missing argument 'callbacks.extra[1].out'",
        ],
    ),
]


@pytest.mark.parametrize("overrides, callbacks, expected", COMMAND_MISTAKES, ids=["import", "kind"])
def test_bad_targets_from_the_command_line_are_one_line_each_and_no_run_directory(
    project, tmp_path, overrides, callbacks, expected
):
    cwd = tmp_path / "work"
    cwd.mkdir()
    _copy_package(project, cwd)
    extra = f"callbacks.extra=[{','.join(callbacks)}]"
    config_dir = ["--config-dir", str(project / "my_configs")]
    out = bigtrain_cmd(*config_dir, "model=tiny", "data=cancer", *overrides, extra, cwd=cwd)
    assert out.returncode == 2, out.stderr[-3000:]
    lines = out.stderr.strip().splitlines()
    assert len(lines) == len(expected) and "Traceback" not in out.stderr, lines
    for fragment in expected:
        assert sum(line.startswith("bigtrain: error: ") and fragment in line for line in lines) == 1, lines
    assert not (cwd / "outputs").exists()  # rejected before a run directory exists


def test_targets_from_the_command_line_alone_with_the_target_presets(importable):
    """`model=target` and `data=target` hold only `_target_`: a class of yours needs no YAML file.
    `model._target_=...` on one of bigtrain's presets says so in one line."""
    cfg = make_cfg(
        [
            "model=target",
            f"model._target_={PACKAGE}.nets.TinyNet",
            "+model.hidden=8",
            "data=target",
            f"data._target_={PACKAGE}.data.CancerData",
            "+data.per_device_batch=16",
        ]
    )
    assert cfg.model.target == f"{PACKAGE}.nets.TinyNet" and cfg.model.arguments == {"hidden": 8}
    assert cfg.data.target == f"{PACKAGE}.data.CancerData"
    with pytest.raises(ConfigError) as alone:
        make_cfg([f"model._target_={PACKAGE}.nets.TinyNet"])
    assert alone.value.lines == [
        "unknown key 'model._target_': a model of yours replaces the preset: model=target "
        "model._target_=... (its arguments: +model.NAME=value; docs/extending.md)"
    ]
    with pytest.raises(ConfigError, match=r"^model._target_ has no value: add model._target_=\.\.\.$"):
        make_cfg(["model=target"])
