"""Data sources as records (data/source.py): every `data=` option belongs to one record, each
record agrees with its schema and its data module, and nothing outside a source's own files
tests a data set's name."""

from __future__ import annotations

import dataclasses
import re
import typing
from importlib import resources
from pathlib import Path

import pytest

import bigtrain
from bigtrain.config.convert import TARGETS, VARIANTS
from bigtrain.data import build_datamodule, data_spec, source, sources
from bigtrain.data.batches import loaded_train_size, train_split_size
from bigtrain.data.source import Inputs
from conftest import make_cfg

SRC = Path(bigtrain.__file__).parent
CONF_DATA = resources.files("bigtrain.conf").joinpath("data")
# Built-in data that a test can load without files of its own, with the model it goes with.
LOADABLE = {
    "digits": ["data=digits", "model=cnn/tiny"],
    "breast_cancer": ["data=breast_cancer"],
    "stdlib_text": ["model=gpt/tiny", "data=stdlib_text", "data.max_bytes=200000"],
}


def test_every_data_option_belongs_to_one_record():
    options = sorted(p.name.removesuffix(".yaml") for p in CONF_DATA.iterdir() if p.name.endswith(".yaml"))
    claimed = sorted(c for r in sources() for c in r.choices if c != "custom")
    # conf/data/target.yaml holds only `_target_`: a data module of yours, the custom record's
    assert claimed == [o for o in options if o != "target"] and "target" in options
    assert all(source(o) in sources() for o in options if o != "target")
    with pytest.raises(KeyError, match="unknown data source"):
        source("no_such_data")


@pytest.mark.parametrize("record", sources(), ids=lambda r: r.name)
def test_each_record_agrees_with_its_schema_and_module(record):
    """Each choice has a schema variant whose `name` allows it; the keys that point `eval` at
    new data are fields of that schema; the module builds the data module."""
    options = {**VARIANTS["data"][1], "custom": TARGETS["data"]}
    for choice in record.choices:
        schema = options[choice]
        assert choice in typing.get_args(typing.get_type_hints(schema)["name"])
        fields = {f.name for f in dataclasses.fields(schema)}
        assert set(record.new_data_keys) <= fields, (choice, record.new_data_keys)
        assert record.inputs(choice) in typing.get_args(Inputs)
    assert callable(record.parts().datamodule)
    if record.batches_itself:
        assert callable(record.parts().micro_batch)


@pytest.mark.parametrize("choice", sorted(LOADABLE))
def test_the_spec_and_the_split_size_before_loading_are_the_data_modules(choice):
    """What the record says before loading (validation and the plan use it) is what the data
    module has once set up."""
    cfg = make_cfg(LOADABLE[choice])
    record = source(choice)
    before = data_spec(cfg)
    dm = build_datamodule(cfg)
    dm.setup("fit")
    assert dm.spec == before
    shape = {"image": 3, "features": 1, "tokens": 1}[record.inputs(choice)]
    assert len(before.input_shape) == shape
    assert (before.task == "lm") == (record.inputs(choice) == "tokens")
    samples = train_split_size(cfg)
    if record.train_samples is not None:
        assert samples == loaded_train_size(dm) > 0
    else:
        assert samples is None


DATA_NAMES = sorted({c for r in sources() for c in r.choices})
NAME_TEST = re.compile(
    r"""\.name\s*(?:==|!=|in|not in)\s*[(\[{]?\s*["'](""" + "|".join(DATA_NAMES) + r""")["']"""
)


def test_no_file_outside_the_data_package_tests_a_data_sets_name():
    """The rest of bigtrain asks the record (what its samples are, whether it batches itself,
    its files); a name test outside data/ (and the sources' schemas) would be a source's
    knowledge in the wrong place."""
    found = [
        f"{path.relative_to(SRC)}:{n}: {line.strip()}"
        for path in sorted(SRC.rglob("*.py"))
        if path.parent.name != "data" and path.name != "schema_data.py"  # the sources and their schemas
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if NAME_TEST.search(line) and "optim" not in line and "strategy" not in line
    ]
    assert not found, "\n".join(found)
