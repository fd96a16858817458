"""A config with several mistakes reports all of them, one line each; and every value comes from
conf/*.yaml, never from a default in the schema."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from importlib import resources
from pathlib import Path

import pytest
from omegaconf import OmegaConf

import bigtrain
import bigtrain.config as config
from bigtrain.config import VARIANTS, ConfigError, build, build_variant
from bigtrain.runs.validate import CHECKS, validate
from conftest import bigtrain_cmd, make_cfg

CONVERSION_MISTAKES = {
    "optim.lr=-1": "optim.lr=-1.0 is out of range",
    "+optim.foo=2": "unknown key 'optim.foo'",
    "trainer.max_epochs=x": "trainer.max_epochs=x must be an integer",
    "model.activation=rellu": "did you mean model.activation=relu",
    "+lr=1": "unknown key 'lr'",
}
CHECK_MISTAKES = {
    "trainer.max_epochs=-1": "training would never stop",
    "callbacks.checkpoint.monitor=val/acx": "did you mean val/acc",
    "strategy=ddp": "strategy=ddp needs more than one process",
    "callbacks.extra=[3]": "callbacks.extra[0]=3 is not a callback",
    "tricks.finders.lr.min_lr=2": "must be below max_lr",
}


def _error_lines(out: subprocess.CompletedProcess) -> list[str]:
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr + out.stdout
    lines = out.stderr.strip().splitlines()
    assert all(line.startswith("bigtrain: error: ") for line in lines), lines
    return lines


@pytest.mark.parametrize("mistakes", [CONVERSION_MISTAKES, CHECK_MISTAKES], ids=["schema", "checks"])
def test_every_mistake_is_one_line_from_the_command_line(tmp_path, mistakes):
    lines = _error_lines(bigtrain_cmd(*mistakes, cwd=tmp_path))
    assert len(lines) == len(mistakes), lines
    for fragment in mistakes.values():
        assert sum(fragment in line for line in lines) == 1, (fragment, lines)
    assert not (tmp_path / "outputs").exists()  # rejected before any run directory exists


def test_checks_wait_for_the_schema(tmp_path):
    """The checks need typed values: a schema mistake is reported alone."""
    lines = _error_lines(bigtrain_cmd("optim.lr=-1", "trainer.max_epochs=-1", cwd=tmp_path))
    assert len(lines) == 1 and "optim.lr=-1.0 is out of range" in lines[0]


def test_a_check_that_needs_another_is_skipped_when_it_failed():
    # tensor_parallel_size=3 does not divide 2 devices: the batch split (which divides by the
    # data-parallel size) is not checked, and the unrelated monitor still is.
    over = ["strategy=tp", "strategy.tensor_parallel_size=3", "trainer.accelerator=cpu", "trainer.devices=2"]
    with pytest.raises(ConfigError) as e:
        make_cfg([*over, "data.batch_size=63", "callbacks.checkpoint.monitor=val/acx"])
    lines = e.value.lines
    assert len(lines) == 2 and "must divide trainer.devices=2" in lines[0] and "val/acx" in lines[1]
    assert str(e.value) == "\n".join(lines) and isinstance(e.value, ValueError)


def test_config_errors_do_not_import_torch(tmp_path):
    probe = "import sys\nfrom bigtrain.cli import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit:\n"
    probe += "    print('TORCH', 'torch' in sys.modules)\n"
    out = subprocess.run(
        [sys.executable, "-c", probe, *CHECK_MISTAKES, "data=csv", "data.target=y"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "TORCH False" in out.stdout, out.stderr
    assert len(out.stderr.strip().splitlines()) == len(CHECK_MISTAKES) + 1  # + data=csv needs a file


def test_extra_callbacks_must_name_their_class():
    # The class must import, and its arguments fit its signature (tests/test_extending.py).
    ok = make_cfg(["callbacks.extra=[{_target_: pytorch_lightning.callbacks.Timer, interval: epoch}]"])
    assert ok.callbacks.extra == [{"_target_": "pytorch_lightning.callbacks.Timer", "interval": "epoch"}]
    with pytest.raises(ConfigError) as e:
        make_cfg(["callbacks.extra=[{every: 2},{_target_: my_pkg.A},{_target_: 3}]"])
    assert [line.split("=")[0] for line in e.value.lines] == ["callbacks.extra[0]", "callbacks.extra[2]"]


def test_the_check_order_is_one_explicit_list():
    runs = [c.run for c in CHECKS]
    assert len(set(runs)) == len(runs)  # each check once
    for check in CHECKS:  # a check runs after the checks it needs
        assert all(runs.index(need) < runs.index(check.run) for need in check.needs)
    assert all(c.run.__module__.endswith(".checks") for c in CHECKS)


# --------------------------------------------------------------------------- defaults: the YAML files


def _schema_classes() -> list[type]:
    classes = {v for v in vars(config).values() if isinstance(v, type) and dataclasses.is_dataclass(v)}
    return sorted(classes, key=lambda c: c.__name__)


def test_schema_fields_have_no_defaults():
    classes = _schema_classes()
    assert len(classes) > 40
    with_default = [
        f"{cls.__name__}.{f.name}"
        for cls in classes
        for f in dataclasses.fields(cls)
        if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
    ]
    assert not with_default, f"schema fields with a default (put the value in conf/ instead): {with_default}"


def test_a_key_removed_from_the_yaml_is_reported_missing():
    with pytest.raises(ConfigError) as e:
        make_cfg(["~optim.lr", "~trainer.max_epochs", "~seed"])
    assert e.value.lines == [
        "missing key 'optim.lr': add optim.lr=<value>",
        "missing key 'trainer.max_epochs': add trainer.max_epochs=<value>",
        "missing key 'seed': add seed=<value>",
    ]


# Groups whose options are whole sections of RunConfig; the others (experiment, debug, hydra,
# hparams_search) are overlays, composed below or in test_config.py.
SECTIONS = {
    "trainer": config.TrainerConfig,
    "metrics": config.MetricsConfig,
    "callbacks": config.CallbacksConfig,
    "logger": config.LoggerConfig,
    "tricks": config.TricksConfig,
}
CONF = resources.files("bigtrain.conf")


def _options() -> list[tuple[str, str]]:
    found = []
    for group in [*VARIANTS, *SECTIONS]:
        folder = CONF.joinpath(group)
        for path in sorted(p for p in _walk(folder) if p.name.endswith(".yaml")):
            found.append((group, str(path)))
    return found


def _walk(folder):
    for entry in folder.iterdir():
        yield from _walk(entry) if entry.is_dir() else [entry]


@pytest.mark.parametrize(("group", "path"), _options(), ids=lambda v: v.split("conf/")[-1])
def test_every_group_option_sets_every_key(group, path):
    raw = OmegaConf.to_container(OmegaConf.load(path))
    if "defaults" in raw:  # built on another option: a sibling (tricks/ema.yaml on tricks/default.yaml)
        # or, with a path, one of the group (model/gpt/125m.yaml on model/gpt/common.yaml)
        (base,) = [d.split("@")[0] for d in raw.pop("defaults") if d != "_self_"]
        folder = CONF.joinpath(group) if "/" in base else Path(path).parent
        merged = OmegaConf.merge(OmegaConf.load(f"{folder}/{base}.yaml"), raw)
        raw = OmegaConf.to_container(merged)
    if group in VARIANTS:
        build_variant(group, raw)
    else:
        build(SECTIONS[group], raw, group)


@pytest.mark.parametrize("preset", ["+debug=fast", "+debug=overfit", "+experiment=seed +debug=fast"])
def test_debug_presets_validate(preset):
    assert validate(bigtrain.compose(preset.split())).trainer.max_epochs in (1, 50)
