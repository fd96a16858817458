"""Model families as records (models/family.py): every built-in family's record and parts agree,
nothing outside a family's files tests its name, ViT gets real blocks, and a family of your own
(one Python module and one YAML, nothing under src/) trains under ddp, fsdp and activation
checkpointing on two processes like a built-in one."""

from __future__ import annotations

import csv
import re
import shutil
from pathlib import Path

import pytest

from bigtrain.data import data_spec
from bigtrain.distributed.parallel import family_of, parallelize
from bigtrain.models import build_model
from bigtrain.models.family import BUILT_IN, families, family
from conftest import bigtrain_cmd, make_cfg, read_results

SRC = Path(__file__).resolve().parents[1] / "src" / "bigtrain"
PRESETS = {"mlp": "mlp/tiny", "cnn": "cnn/tiny", "vit": "vit/tiny", "transformer": "gpt/tiny"}


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_each_record_and_its_parts_agree(name):
    """The record's claims hold for the built model: its blocks and FSDP units exist, it has a
    tensor-parallel plan exactly when the record checks one, and it takes the inputs it says."""
    record = family(name)
    cfg = make_cfg([f"model={PRESETS[name]}"])
    spec = data_spec(cfg)
    model = build_model(cfg.model, spec.input_shape, spec.num_outputs)
    parts = record.parts()
    assert family_of(model) is parts and model.config.family == record.name
    for unit in [*parts.blocks(model), *parts.fsdp_units(model)]:
        assert next(model.get_submodule(unit).parameters(), None) is not None, unit
    assert hasattr(parts, "tp_plan") == (record.tp_checks is not None)
    assert (spec.seq_len is not None) == (record.inputs == "tokens")
    if record.inputs == "image":  # (C, H, W); features take any shape, flattened
        assert len(spec.input_shape) == 3


def test_no_file_outside_a_family_tests_its_name():
    """`"transformer"`, `"vit"`, `"cnn"` and `"mlp"` as family names appear only in the family's own
    files (its record, its module, its schema) and nowhere else under src/."""
    own = {f"models/{n}_record.py" for n in BUILT_IN} | {f"models/{n}.py" for n in BUILT_IN}
    own |= {"models/family.py", "config/schema_models.py", "models/shapes.py", "models/hf.py"}
    pattern = re.compile(r"""family\W{1,6}(?:==|!=|in|not in)\W{0,3}["'{(]|["'](?:transformer|vit|cnn)["']""")
    found = [
        f"{path.relative_to(SRC)}:{n}: {line.strip()}"
        for path in sorted(SRC.rglob("*.py"))
        if str(path.relative_to(SRC)) not in own
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if pattern.search(line)
    ]
    assert found == [], "\n".join(found)


def test_vit_blocks_are_its_units_and_compile_one_by_one():
    """Its encoder blocks are the units of checkpointing, compile and FSDP (test_parallel.py
    checks that checkpointing them keeps the gradients)."""
    cfg = make_cfg(["model=vit/tiny", "strategy.compile=true"])
    spec = data_spec(cfg)
    model = build_model(cfg.model, spec.input_shape, spec.num_outputs)
    keys = list(model.state_dict())
    blocks = family_of(model).blocks(model)
    assert blocks == ["blocks.0", "blocks.1"] and family_of(model).fsdp_units(model) == blocks
    parallelize(model, cfg.strategy)
    assert all(model.get_submodule(name)._compiled_call_impl is not None for name in blocks)
    assert model.patch_embed._compiled_call_impl is None  # the root's own layers stay eager
    assert list(model.state_dict()) == keys


def test_a_family_without_a_tensor_parallel_plan_is_one_line_before_the_run(tmp_path):
    out = bigtrain_cmd(
        "model=vit/tiny", "strategy=tp", "trainer.accelerator=cpu", "trainer.devices=2", "hydra.run.dir=run",
        cwd=tmp_path,
    )  # fmt: skip
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2 and len(lines) == 1, out.stderr[-2000:]
    assert "no tensor-parallel plan for model family 'vit'" in lines[0] and "strategy=fsdp" in lines[0]
    assert not (tmp_path / "run").exists()


# --------------------------------------------------------------------------- a family of your own

PACKAGE = "own_family_tests"
NETS = '''
import math

from torch import nn


class Residual(nn.Module):
    """The repeated block: the family declares it, and bigtrain shards and checkpoints it."""

    def __init__(self, width):
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.ff = nn.Sequential(nn.Linear(width, 2 * width), nn.GELU(), nn.Linear(2 * width, width))

    def forward(self, x):
        return x + self.ff(self.norm(x))


class ResidualNet(nn.Module):
    bigtrain_blocks = Residual

    def __init__(self, input_shape, num_outputs, width=32, depth=2):
        super().__init__()
        self.embed = nn.Linear(math.prod(input_shape), width)
        self.layers = nn.ModuleList(Residual(width) for _ in range(depth))
        self.head = nn.Linear(width, num_outputs)

    def forward(self, x):
        x = self.embed(x.flatten(1))
        for layer in self.layers:
            x = layer(x)
        return self.head(x)

    def bigtrain_tp_plan(self, sequence_parallel):
        """Megatron's split of each block's MLP: the first Linear by columns, the second by rows
        (one all-reduce); the residual stream and the norms stay whole on every rank."""
        from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel

        plan = {}
        for i in range(len(self.layers)):
            plan[f"layers.{i}.ff.0"] = ColwiseParallel()
            plan[f"layers.{i}.ff.2"] = RowwiseParallel()
        return plan
'''
MODEL_YAML = f"_target_: {PACKAGE}.nets.ResidualNet\nwidth: 32\ndepth: 2\n"
# Every step's loss in metrics.csv, two epochs; no dropout anywhere (its masks are per rank).
COMPARE = ["logger=csv", "trainer.log_every_n_steps=1", "trainer.max_epochs=2", "data.drop_last=true"]


def own_family(where: Path) -> Path:
    """The family's module (importable from `where`) and its YAML in a --config-dir."""
    (where / PACKAGE).mkdir(parents=True, exist_ok=True)
    (where / PACKAGE / "__init__.py").write_text("")
    (where / PACKAGE / "nets.py").write_text(NETS)
    (where / "conf" / "model").mkdir(parents=True, exist_ok=True)
    (where / "conf" / "model" / "residual.yaml").write_text(MODEL_YAML)
    return where / "conf"


def test_your_blocks_are_the_units_of_activation_checkpointing_and_fsdp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    conf = own_family(tmp_path)
    cfg = make_cfg(["model=residual", "strategy.activation_checkpointing=true"], str(conf))
    spec = data_spec(cfg)
    model = build_model(cfg.model, spec.input_shape, spec.num_outputs)
    parts = family_of(model)
    assert parts.blocks(model) == ["net.layers.0", "net.layers.1"] == parts.fsdp_units(model)
    parallelize(model, cfg.strategy)
    blocks = [model.get_submodule(n) for n in ("net.layers.0", "net.layers.1")]
    assert [type(b).__name__ for b in blocks] == ["CheckpointedResidual"] * 2
    assert all(type(b).__mro__[1].__name__ == "Residual" for b in blocks)  # your class, checkpointed
    assert parts.fsdp_units(model) == ["net.layers.0", "net.layers.1"]  # still found by your class


def test_your_tensor_parallel_plan_is_validated_and_used(tmp_path, monkeypatch):
    """A class with bigtrain_tp_plan passes strategy=tp's check, and the plan counts the Linears
    it splits; the same model without the method is refused in one line."""
    from bigtrain.distributed.parallel import tp_sharded_params

    monkeypatch.chdir(tmp_path)
    conf = own_family(tmp_path)
    cfg = make_cfg(
        ["model=residual", "strategy=tp", "trainer.accelerator=cpu", "trainer.devices=2"], str(conf)
    )
    spec = data_spec(cfg)
    model = build_model(cfg.model, spec.input_shape, spec.num_outputs)
    split = [f"net.layers.{i}.ff.{j}" for i in range(2) for j in (0, 2)]
    assert tp_sharded_params(model) == sum(
        p.numel() for n in split for p in model.get_submodule(n).parameters()
    )
    (tmp_path / PACKAGE / "nets.py").write_text(NETS.replace("def bigtrain_tp_plan", "def _no_plan"))
    out = bigtrain_cmd(
        "--config-dir", "conf", "model=residual", "strategy=tp", "trainer.accelerator=cpu", "trainer.devices=2",
        "hydra.run.dir=run", cwd=tmp_path,
    )  # fmt: skip
    assert out.returncode == 2 and "does not give: add a bigtrain_tp_plan" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and not (tmp_path / "run").exists()


def _losses(run_dir: Path) -> dict[int, float]:
    rows = csv.DictReader((run_dir / "metrics.csv").open())
    return {int(r["step"]): float(r["train/loss"]) for r in rows if r.get("train/loss")}


@pytest.fixture(scope="module")
def own_single(tmp_path_factory) -> tuple[Path, Path]:
    """The family of your own on one process: what two processes must reproduce."""
    where = tmp_path_factory.mktemp("own")
    conf = own_family(where)
    out = bigtrain_cmd(
        "--config-dir", str(conf), "model=residual", *COMPARE, "hydra.run.dir=single", cwd=where
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return where, where / "single"


@pytest.mark.distributed
@pytest.mark.parametrize(
    "strategy",
    [
        ["strategy=ddp"],
        ["strategy=fsdp"],
        ["strategy=ddp", "strategy.activation_checkpointing=true"],
        ["strategy=tp"],  # the class's own bigtrain_tp_plan
    ],
    ids=["ddp", "fsdp", "ddp+checkpointing", "tp"],
)
def test_your_family_trains_on_two_processes_like_one(own_single, strategy):
    """With the default callbacks (progress bar, plots, checkpoints): every step's loss equals
    the single process's, so the blocks were sharded or checkpointed without changing the math."""
    where, single = own_single
    name = "-".join(s.split("=")[1] for s in strategy)
    out = bigtrain_cmd(
        "--config-dir", "conf", "model=residual", *COMPARE, *strategy, "trainer.accelerator=cpu",
        "trainer.devices=2", f"hydra.run.dir={name}", cwd=where, timeout=600,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-4000:]
    want, got = _losses(single), _losses(where / name)
    assert len(want) == 38 and set(got) == set(want)
    for step, loss in want.items():
        assert got[step] == pytest.approx(loss, rel=1e-4), step
    assert read_results(where / name)["status"] == "completed"
    if "strategy=fsdp" in strategy:  # sharded: a folder of shards, tested after fit
        assert (where / name / read_results(where / name)["best_checkpoint"]).is_dir()
    shutil.rmtree(where / name)


@pytest.mark.distributed
def test_vit_trains_under_fsdp_on_two_processes(tmp_path):
    out = bigtrain_cmd(
        "model=vit/tiny", "strategy=fsdp", "strategy.activation_checkpointing=true", "trainer.accelerator=cpu",
        "trainer.devices=2", "trainer.max_steps=4", "hydra.run.dir=run", cwd=tmp_path, timeout=600,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-4000:]
    results = read_results(tmp_path / "run")
    assert results["status"] == "completed" and results["global_step"] == 4


@pytest.mark.slow
def test_vit_trains_compiled(tmp_path):
    """torch.compile of each ViT block, a real training run (inductor compiles on the CPU)."""
    out = bigtrain_cmd(
        "model=vit/tiny",
        "strategy.compile=true",
        "trainer.max_steps=3",
        "hydra.run.dir=run",
        cwd=tmp_path,
        timeout=900,
    )
    assert out.returncode == 0, out.stderr[-4000:]
    results = read_results(tmp_path / "run")
    assert results["status"] == "completed" and results["global_step"] == 3


def test_every_family_is_listed_once():
    assert [f.name for f in families()] == list(BUILT_IN)
