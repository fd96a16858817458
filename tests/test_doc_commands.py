"""The extractor behind tests/test_docs.py: what it reads from markdown and `--help`, and that
every kind of check and every input it knows is in use."""

from __future__ import annotations

import pytest

from doc_commands import DocCommand, commands_in_help, commands_in_markdown, split_comment
from doc_inputs import INPUTS
from test_docs import COMMANDS, REPO, expand, kind, launched_bigtrain, named_inputs

SNIPPET = """\
Some text with `bigtrain inline` that is not a block.

```bash
# a comment line
bigtrain +experiment=seed optim.lr=1e-3   # a trailing comment
bigtrain data=csv data.path='a #1.csv' \\
    data.target=label
pip install 'bigtrain[mlflow]'
pip install 'bigtrain[mlflow]' && bigtrain logger=mlflow   # tracked
pip install -e ".[dev]" && ruff check src && pytest
squeue --me; tail -f bigtrain-1.out
python -m bigtrain.runs.export a.ckpt b.pt
python scripts/bench.py --reps 1
```

```console
$ bigtrain optim.lrr=1
bigtrain: error: unknown key 'optim.lrr'
second line ...
$ bigtrain --cfg job
```

```python
bigtrain.train(["x=1"])
```

```
bigtrain-tokens write corpus texts/
bigtrain: error: not a command
bigtraining is not a command either
```
"""


def test_extractor_finds_the_commands_of_a_snippet():
    found = commands_in_markdown(SNIPPET, "doc.md")
    assert [(c.line, c.text) for c in found] == [
        (5, "bigtrain +experiment=seed optim.lr=1e-3"),
        (6, "bigtrain data=csv data.path='a #1.csv' data.target=label"),
        (9, "bigtrain logger=mlflow"),
        (12, "python -m bigtrain.runs.export a.ckpt b.pt"),
        (13, "python scripts/bench.py --reps 1"),
        (17, "bigtrain optim.lrr=1"),
        (20, "bigtrain --cfg job"),
        (28, "bigtrain-tokens write corpus texts/"),
    ]
    by_line = {c.line: c for c in found}
    assert by_line[5].comment == "a trailing comment"
    assert by_line[6].argv[2] == "data.path=a #1.csv"
    assert by_line[9].install == "pip install 'bigtrain[mlflow]'"
    assert by_line[17].expected == ("bigtrain: error: unknown key 'optim.lrr'", "second line ...")
    assert by_line[20].expected == ()
    assert by_line[5].where == "doc.md:5"


def test_comments_are_cut_outside_quotes_only():
    assert split_comment("bigtrain a=1  # note") == ("bigtrain a=1", "note")
    assert split_comment("bigtrain 'a=#1' \"b=# 2\"") == ("bigtrain 'a=#1' \"b=# 2\"", "")
    assert split_comment("bigtrain a=x#y") == ("bigtrain a=x#y", "")
    assert split_comment(r"bigtrain a=\#b # c") == (r"bigtrain a=\#b", "c")


def test_extractor_reads_the_help_examples():
    text = "bigtrain: the tool.\n\nExamples:\n  bigtrain                 train\n  bigtrain a=1 b=2   x y\n"
    found = commands_in_help(text)
    assert [(c.line, c.text, c.comment) for c in found] == [
        (4, "bigtrain", "train"),
        (5, "bigtrain a=1 b=2", "x y"),
    ]


def test_the_readme_quick_tour_and_the_help_examples_are_found():
    texts = {c.text for c in COMMANDS if c.source == "README.md"}
    for expected in (
        "bigtrain --help",
        "bigtrain +experiment=seed",
        "bigtrain dry_run=true",
        "bigtrain --cfg job",
        "bigtrain --config-dir ~/my_configs +experiment=mine",
        "bigtrain strategy=ddp trainer.accelerator=cpu trainer.devices=2",
        "bigtrain optim.lrr=1e-3",
        "bigtrain",  # after `pip install ... &&`
    ):
        assert expected in texts, expected
    shown = [c for c in COMMANDS if c.source == "bigtrain --help"]
    assert len(shown) >= 5 and {"bigtrain", "bigtrain --cfg job"} <= {c.text for c in shown}


def test_every_kind_of_check_is_in_use():
    """If a document change leaves a kind of check without commands, its code is dead here."""
    kinds = {kind(c) for c in COMMANDS}
    assert {"train", "plan", "hardware", "launcher", "expected", "completion", "show"} <= kinds, kinds


def test_the_sbatch_scripts_forward_their_arguments(tmp_path):
    cmd = DocCommand(
        "doc.md", 1, "sbatch --nodes=3 --ntasks-per-node=2 scripts/slurm/train_nnodes.sbatch a=1 b=2"
    )
    assert launched_bigtrain(cmd, REPO) == ["trainer.num_nodes=3", "trainer.devices=2", "a=1", "b=2"]
    cmd = DocCommand("doc.md", 1, "sbatch scripts/slurm/train_1node.sbatch a=1")
    assert launched_bigtrain(cmd, REPO) == ["trainer.num_nodes=1", "trainer.devices=1", "a=1"]


def test_inputs_are_found_by_name_and_every_input_is_used():
    cmd = DocCommand(
        "doc.md",
        1,
        "bigtrain --config-dir ~/c data=text data.paths=[a/,'b/*.md'] data.tokenizer=t.json resume=r",
    )
    assert named_inputs(cmd) == ["~/c", "a/", "b/*.md", "t.json", "r"]
    cmd = DocCommand("doc.md", 1, "bigtrain-tokens write out x/ 'y/*.md' --max-bytes 9 --tokenizer t.json")
    assert named_inputs(cmd) == ["t.json", "x/", "y/*.md"]
    named = {name for c in COMMANDS for name in named_inputs(c)}
    assert named == set(INPUTS), f"inputs no document names: {set(INPUTS) - named}"


def test_the_shell_expansions(tmp_path):
    text = "torchrun --node-rank=$NODE_RANK -m bigtrain --config-dir ~/c hydra.run.dir=/shared/x a=~/b"
    assert expand(text, tmp_path) == (
        f"torchrun --node-rank=0 -m bigtrain --config-dir {tmp_path}/home/c hydra.run.dir={tmp_path}/shared/x a=~/b"
    )
    with pytest.raises(AssertionError, match="SHELL_VARIABLES"):
        expand("bigtrain name=$UNKNOWN", tmp_path)


def test_ci_runs_the_readmes_test_command_word_for_word():
    """.ci/run installs from scratch and then runs exactly the README's set-up command 2."""
    readme = (REPO / "README.md").read_text()
    (command,) = [line for line in readme.splitlines() if line.startswith("pip install") and "pytest" in line]
    ci = (REPO / ".ci" / "run").read_text().splitlines()
    assert command in ci, f"{command!r} is not a line of .ci/run"


def test_documented_run_directories_are_under_outputs():
    """Every run directory a documented command (README, docs/, `--help`) or Python example names
    (`hydra.run.dir=DIR`, `run_dir="DIR"`, `resume("DIR"`) is under outputs/, where the program
    puts runs by default and which outputs/.gitignore keeps out of git; a shared cluster folder
    (`/shared/...`) and a shell variable aside."""
    import re

    in_commands = [m for c in COMMANDS for m in re.findall(r"hydra\.run\.dir=(\S+)", c.text)]
    python = re.compile(r"""(?:run_dir=|bigtrain\.(?:resume|load)\()["']([^"']+)["']""")
    docs = [REPO / "README.md", *REPO.glob("docs/*.md")]
    in_python = [m for p in docs for m in python.findall(p.read_text(encoding="utf-8"))]
    assert len(in_commands) >= 10 and len(in_python) >= 4, (in_commands, in_python)
    outside = [d for d in in_commands + in_python if not d.startswith(("outputs/", "/shared/", "$"))]
    assert not outside, outside


def test_the_readmes_default_run_time_is_the_benchs_figure():
    """README's time for the default run is the one docs/performance.md records from
    `scripts/bench.py --cases cli`, not a number typed elsewhere."""
    import re

    readme = (REPO / "README.md").read_text(encoding="utf-8")
    performance = (REPO / "docs" / "performance.md").read_text(encoding="utf-8")
    quoted = re.search(r"The default run takes ([\d.]+) s on a 2-core CPU", readme)
    measured = re.search(
        r"\| the default run \(`bigtrain`\), launch to exit[^|]*\| \*\*([\d.]+) s\*\*", performance
    )
    assert quoted and measured, "README or docs/performance.md lost the default run's time"
    assert float(quoted.group(1)) == round(float(measured.group(1)), 1)
