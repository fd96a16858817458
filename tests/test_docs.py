"""The documents are tests: every command shown in README.md, docs/*.md and `bigtrain --help` runs
here, as a user would type it, in a fresh working directory.

The commands are read from the documents (tests/doc_commands.py), so a new example is tested
without being listed anywhere. The only things ever appended to a command are the duration
limits in `LIMITS`; the inputs a command names (`data.path=table.csv`, `resume=runs/long`, ...)
come from `INPUTS`, made from data that ships with scikit-learn, Pillow, tokenizers and the
standard library. Commands that need hardware this machine may lack (GPUs, SLURM) must either
run or stop with one line that says what is missing and how to fix it, and their dry run
(`dry_run=true`, the plan) must succeed anywhere. `sbatch`, `srun` and `torchrun` lines run their
bigtrain part as a dry run; SLURM itself is tested by tests/test_slurm.py.

Install instructions (`pip install ...` alone, or followed by something other than a command
below) are not run here: CI (.ci/run) runs the README's install-and-test command word for word.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from bigtrain.data.shards import Corpus
from conftest import DIST_ENV, bigtrain_cmd
from doc_commands import DocCommand, commands_in_help, commands_in_markdown, launched_bigtrain, program
from doc_inputs import INPUTS, Runs

REPO = Path(__file__).resolve().parents[1]
DOCS = ["README.md", *sorted(p.relative_to(REPO).as_posix() for p in (REPO / "docs").glob("*.md"))]
TIMEOUT = 600  # seconds per command
TOOLS = ("eval", "predict", "export")  # bigtrain's subcommands that use a finished run

# Everything a test appends to a documented command, all of it to make a long run short. Nothing
# else is ever added: the defaults (progress bar, config tree, plots, loggers) run as documented.
LIMITS: dict[str, tuple[str, ...]] = {
    # every bigtrain command that trains: one epoch of 3 training and 2 validation/test batches
    "train": (
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=3",
        "trainer.limit_val_batches=2",
        "trainer.limit_test_batches=2",
        "trainer.val_check_interval=1.0",  # validate once, at the end of that epoch
    ),
    # resume=RUN_DIR accepts only length changes; the run it resumes (INPUTS) trained 1 epoch
    "resume": ("trainer.max_epochs=2",),
    # hparams_search=optuna: two trials
    "optuna": ("hydra.sweeper.n_trials=2",),
    # scripts/bench.py: one repeat of two short rounds, a small text for the Transformer
    "bench.py": (
        "--reps",
        "1",
        "--rounds",
        "2",
        "--warmup",
        "1",
        "--steps",
        "2",
        "--max-bytes",
        "100000",
        "--run-steps",
        "3",
    ),
    # scripts/bench_gpu.py (on a GPU machine): a few steps per case
    "bench_gpu.py": ("--steps", "4", "--warmup", "1"),
}

# What the shell would substitute in the documented commands (their values on a real cluster).
SHELL_VARIABLES = {"NODE_RANK": "0", "FIRST_NODE": "localhost", "SLURM_JOB_ID": "4242"}
# Absolute folders of the documents (a shared file system), mapped into the working directory.
ABSOLUTE_FOLDERS = ("/shared/",)

# Documented commands that fail because of known product bugs being fixed now; strict, so the
# mark has to go when the fix lands.
KNOWN_PRODUCT_BUGS: dict[str, str] = {}  # a fragment of the command -> why it fails (strict xfail)

# `make` targets a test may run in the repository root; the others change the environment or the
# checkout, or run this suite itself.
MAKE_TARGETS = {"help"}
HARDWARE_LINE = re.compile(r"\b(GPU|GPUs|CUDA|SLURM|srun)\b")
FIX_WORDS = re.compile(r"\b(use|add|set|run|install|pass|lower|choose)\b")
PLACEHOLDER_HOST = re.compile(r"https?://([\w.-]+\.)?example\.(org|com|net)\b")


# Arguments whose values are inputs: bigtrain keys, and the options of the other programs.
INPUT_KEYS = ("data.path", "data.train_path", "data.val_path", "data.test_path", "data.root", "data.paths")
INPUT_KEYS += ("data.tokenizer", "resume", "ckpt_path", "model.init_from", "model._target_")
INPUT_OPTIONS = ("--config-dir", "-cd", "--tokenizer", "--hf-dataset")
# options of bigtrain-tokens that take a value
VALUE_OPTIONS = (
    *INPUT_OPTIONS,
    "--max-bytes",
    "--text-field",
    "--workers",
    "--hf-format",
    "--shard-tokens",
    "--eod",
    "--split",
)


# ---------------------------------------------------------------------------------------------
# The commands.


def _help_text() -> str:
    env = {k: v for k, v in os.environ.items() if k not in DIST_ENV}
    out = subprocess.run(
        [sys.executable, "-m", "bigtrain", "--help"], capture_output=True, text=True, env=env, timeout=120
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def all_commands() -> list[DocCommand]:
    found = []
    for name in DOCS:
        found += commands_in_markdown((REPO / name).read_text(encoding="utf-8"), name)
    return found + commands_in_help(_help_text())


COMMANDS = all_commands()


def _flag(args: list[str], *names: str) -> bool:
    return any(a in names for a in args)


def _value(args: list[str], key: str) -> str | None:
    for a in reversed(args):
        if a.lstrip("+~").startswith(f"{key}="):
            return a.split("=", 1)[1]
    return None


def needs_hardware(args: list[str]) -> bool:
    """bigtrain arguments that ask for GPUs or a cluster this machine may not have."""
    devices = _value(args, "trainer.devices")
    accelerator = _value(args, "trainer.accelerator") or "auto"
    strategy = _value(args, "strategy") or ""
    return (
        (devices is not None and devices.isdigit() and int(devices) > 1 and accelerator != "cpu")
        or accelerator in ("gpu", "cuda")
        or strategy.startswith("deepspeed")
        or _value(args, "trainer.precision") == "16-mixed"
        or _value(args, "hydra/launcher") == "slurm"
    )


def _bigtrain_kind(args: list[str], cmd: DocCommand) -> str:
    if args and args[0] in TOOLS:
        return "tool"
    if _flag(
        args, "--help", "-h", "--hydra-help", "--cfg", "-c", "--info", "-i", "-sc", "--shell-completion"
    ):
        return "show"
    if cmd.expected:
        return "expected"
    if _value(args, "dry_run") == "true":
        return "plan"
    if needs_hardware(args):
        return "hardware"
    if any(PLACEHOLDER_HOST.search(a) for a in args):
        return "placeholder"
    return "train"


def kind(cmd: DocCommand) -> str:
    """How a command is checked: see test_documented_command."""
    name, args = program(cmd)
    if "<TAB>" in cmd.text:
        return "completion"
    if name in ("sbatch", "srun", "torchrun"):
        return "launcher"
    if name == "bigtrain":
        return _bigtrain_kind(args, cmd)
    if name.startswith("scripts/bench"):
        return "bench"
    if name == "make":
        return "make"
    return "program"


def _multi_process(cmd: DocCommand) -> bool:
    """It starts several training processes on this machine: CPU ranks or joblib workers."""
    name, args = program(cmd)
    devices = _value(args, "trainer.devices") or "1"
    return kind(cmd) == "train" and (
        (devices.isdigit() and int(devices) > 1) or _value(args, "hydra/launcher") == "local"
    )


def _marks(cmd: DocCommand) -> list[pytest.MarkDecorator]:
    """slow: it trains (or would, given the hardware), or starts more than one heavy process."""
    marks = []
    if kind(cmd) in ("train", "hardware", "bench", "program", "make", "tool"):
        marks.append(pytest.mark.slow)
    if _multi_process(cmd):
        marks.append(pytest.mark.distributed)
    for fragment, reason in KNOWN_PRODUCT_BUGS.items():
        if fragment in cmd.text:
            marks.append(pytest.mark.xfail(strict=True, reason=reason))
    return marks


# ---------------------------------------------------------------------------------------------
# Running them.


def _env() -> dict[str, str]:
    """The environment of conftest.bigtrain_cmd, for the other programs."""
    return {
        k: v
        for k, v in os.environ.items()
        if k != "HYDRA_FULL_ERROR" and k not in DIST_ENV and not k.startswith(("SLURM_", "TORCHELASTIC_"))
    }


def _run(argv: list[str], cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        argv, cwd=cwd, env={**_env(), **(env or {})}, capture_output=True, text=True, timeout=TIMEOUT
    )


def execute(name: str, args: list[str], cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run one program as the user would: bigtrain, bigtrain-tokens, a module, a script, make."""
    if name == "bigtrain":
        return bigtrain_cmd(*args, cwd=cwd, env=env, timeout=TIMEOUT)
    if name == "bigtrain-tokens":
        return _run([sys.executable, "-m", "bigtrain.data.tokens_cli", *args], cwd, env)
    if name.startswith("-m "):
        return _run([sys.executable, "-m", name[3:], *args], cwd, env)
    if name.startswith("scripts/"):
        return _run([sys.executable, str(REPO / name), *args], cwd, env)
    if name == "make":
        return _run(["make", "-C", str(REPO), *args], cwd, env)
    raise AssertionError(f"no way to run {name!r}")


def expand(text: str, cwd: Path) -> str:
    """What the shell does to the command before the program sees it: `~` and $VARIABLES."""
    text = re.sub(r"(^|\s)~(?=/)", lambda m: f"{m.group(1)}{cwd / 'home'}", text)
    for folder in ABSOLUTE_FOLDERS:
        text = re.sub(rf"(?<=[\s=]){re.escape(folder)}", f"{cwd}{folder}", text)

    def variable(m: re.Match) -> str:
        name = m.group(1) or m.group(2)
        assert name in SHELL_VARIABLES, f"the command uses ${name}: add a value to SHELL_VARIABLES"
        return SHELL_VARIABLES[name]

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", variable, text)


def named_inputs(cmd: DocCommand) -> list[str]:
    """The input files and folders a command names, as the document writes them."""
    name, args = program(cmd)
    found = []
    for i, a in enumerate(args):
        key, _, value = a.partition("=")
        if key.lstrip("+~") in INPUT_KEYS and value:
            found += value.strip("[]").split(",") if key.endswith("paths") else [value]
        elif key == "data.sources":  # a mixture: [{path:A,weight:0.7},...]
            found += re.findall(r"path:([^,}]+)", value)
        elif a in INPUT_OPTIONS and i + 1 < len(args):
            found.append(args[i + 1])
    if name == "bigtrain-tokens":  # write OUT INPUTS...
        positional = [
            a for i, a in enumerate(args) if not a.startswith("-") and args[i - 1] not in VALUE_OPTIONS
        ]
        found += positional[2:]
    if name == "-m bigtrain.runs.export":
        found.append(args[0])
    if name == "bigtrain" and args and args[0] in TOOLS:  # eval/predict/export RUN_DIR [INPUT]
        found += [args[1], *(a for a in args[2:3] if a in INPUTS and args[0] == "predict")]
    if name in ("sbatch", "srun", "torchrun"):
        found = [f for f in found if not f.startswith("$")]
    return list(dict.fromkeys(found))


@pytest.fixture(scope="session")
def runs(tmp_path_factory) -> Runs:
    return Runs(tmp_path_factory.mktemp("doc_runs"), execute, train_limits)


def prepare(cmd: DocCommand, cwd: Path, runs: Runs) -> None:
    """Make every input the command names, from INPUTS."""
    for name in named_inputs(cmd):
        assert name in INPUTS, (
            f"{cmd.where}: `{cmd.text}` names the input {name!r}, which no test makes: add an entry "
            "for it to INPUTS in tests/test_docs.py"
        )
        relative, build = INPUTS[name]
        target = cwd / relative
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            build(target, runs)


def _show(cmd: DocCommand, out: subprocess.CompletedProcess, args: list[str] | None = None) -> str:
    """The failure as a report: where, what ran, the exit code, the first and last stderr lines."""
    err = out.stderr.strip().splitlines()
    lines = err if len(err) <= 12 else [*err[:4], "...", *err[-8:]]
    ran = shlex.join(args) if args is not None else cmd.text
    return "\n".join([f"{cmd.where}: `{ran}` exited {out.returncode}", *lines, out.stdout[-1500:]])


def results_under(cwd: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(cwd.rglob("results.json"))]


def check_trained(cmd: DocCommand, out, args: list[str], cwd: Path) -> None:
    assert out.returncode == 0, _show(cmd, out, args)
    results = results_under(cwd)
    assert results, f"{cmd.where}: no results.json under the working directory"
    assert {r["status"] for r in results} == {"completed"}, [r.get("error") for r in results]
    if "--multirun" in args or "-m" in args:
        assert list(cwd.rglob("summary.csv")), f"{cmd.where}: the multirun wrote no summary.csv"


def check_plan(cmd: DocCommand, args: list[str], cwd: Path) -> None:
    out = execute("bigtrain", args, cwd)
    assert out.returncode == 0, _show(cmd, out, ["bigtrain", *args])
    assert list(cwd.rglob("plan.json")), f"{cmd.where}: the dry run wrote no plan.json"
    assert not results_under(cwd), f"{cmd.where}: the dry run trained"


def check_needs_hardware(cmd: DocCommand, out, args: list[str], cwd: Path) -> None:
    """Either it ran, or it stopped with one line naming the missing GPU/SLURM and a fix."""
    if out.returncode == 0:
        check_trained(cmd, out, args, cwd)
        return
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, "expected one line naming the missing hardware\n" + _show(cmd, out, args)
    assert HARDWARE_LINE.search(lines[0]) and FIX_WORDS.search(lines[0]), _show(cmd, out, args)


def check_expected(cmd: DocCommand, out) -> None:
    """The document's output lines, in order; a line ending in `...` matches what starts like it."""
    assert out.returncode == 2, _show(cmd, out)
    lines = [line.strip() for line in out.stderr.strip().splitlines()]
    assert len(lines) == len(cmd.expected), _show(cmd, out)
    for want, got in zip(cmd.expected, lines, strict=True):
        if want.endswith("..."):
            assert got.startswith(want[:-3].rstrip()), f"{cmd.where}: expected\n{want}\ngot\n{got}"
        else:
            assert got == want, f"{cmd.where}: expected\n{want}\ngot\n{got}"


def limited(args: list[str], *groups: str) -> list[str]:
    extra = [x for g in groups for x in LIMITS[g]]
    return [*args, *extra]


def train_limits(args: list[str]) -> list[str]:
    if _value(args, "resume") is not None:
        return limited(args, "resume")
    if _value(args, "hparams_search") == "optuna":
        return limited(args, "train", "optuna")
    return limited(args, "train")


def completions(line: str, cwd: Path) -> list[str]:
    """What bash completion offers for `line`, through Hydra's completion query."""
    out = execute(
        "bigtrain", ["-sc", "query=bash"], cwd, env={"COMP_LINE": line, "COMP_POINT": str(len(line))}
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.split()


def bench_flags_missing(script: str, cwd: Path) -> list[str]:
    out = _run([sys.executable, str(REPO / script), "--help"], cwd)
    assert out.returncode == 0, out.stderr
    return [f for f in LIMITS[Path(script).name] if f.startswith("--") and f not in out.stdout]


def check_completion(cmd: DocCommand, cwd: Path) -> None:
    """The comment shows what <TAB> offers; a trailing `...` allows more."""
    shown = cmd.comment.split()
    offered = completions(cmd.text.split("<TAB>")[0], cwd)
    if shown and shown[-1] == "...":
        assert set(shown[:-1]) <= set(offered), f"{cmd.where}: {shown} not all in {offered}"
    else:
        assert sorted(offered) == sorted(shown), (
            f"{cmd.where}: the document shows {shown}, bash offers {offered}"
        )


def check_install(cmd: DocCommand) -> None:
    """The extras a `pip install 'bigtrain[...]' && ...` names exist (the install is not run)."""
    provided = importlib.metadata.metadata("bigtrain").get_all("Provides-Extra") or []
    for group in re.findall(r"bigtrain\[([\w,-]+)\]", cmd.install):
        for extra in group.split(","):
            assert extra in provided, (
                f"{cmd.where}: `{cmd.install}` names the extra {extra!r}, not in pyproject.toml"
            )


def check_bench(cmd: DocCommand, name: str, args: list[str], runs: Runs, cwd: Path) -> None:
    missing = bench_flags_missing(name, cwd)
    if missing:
        pytest.skip(f"{name} has no {' '.join(missing)} any more: LIMITS[{Path(name).name!r}] needs updating")
    full = [*args, *LIMITS[Path(name).name]]
    out, ran_in = runs.once(name, full, cwd)
    if out.returncode != 0 and "--check" not in args:  # a GPU benchmark on a machine without one
        check_needs_hardware(cmd, out, full, ran_in)
        return
    assert out.returncode == 0, _show(cmd, out, full)
    if "--json" in args:
        json.loads((ran_in / args[args.index("--json") + 1]).read_text())


@pytest.mark.parametrize("cmd", [pytest.param(c, id=c.where, marks=_marks(c)) for c in COMMANDS])
def test_documented_command(cmd: DocCommand, tmp_path, runs):
    """Each command of the documents, checked by its kind (see `kind`)."""
    cwd = tmp_path / "work"
    cwd.mkdir()
    k = kind(cmd)
    if k == "completion":
        check_completion(cmd, cwd)
        return
    check_install(cmd)
    prepare(cmd, cwd, runs)
    expanded = DocCommand(cmd.source, cmd.line, expand(cmd.text, cwd), cmd.comment, cmd.expected)
    name, args = program(expanded)

    if k == "launcher":
        check_plan(cmd, [*launched_bigtrain(expanded, REPO), "dry_run=true"], cwd)
    elif k == "expected":
        check_expected(cmd, execute(name, args, cwd))
    elif k == "show":
        out = execute(name, args, cwd)
        assert out.returncode == 0 and out.stdout.strip(), _show(cmd, out)
        assert not results_under(cwd)
    elif k == "plan":
        check_plan(cmd, args, cwd)
    elif k == "tool":  # bigtrain eval / predict on a run the inputs trained
        out = execute(name, args, cwd)
        assert out.returncode == 0 and out.stdout.strip(), _show(cmd, out)
    elif k == "train":
        full = train_limits(args)
        out, ran_in = runs.once(name, full, cwd)
        check_trained(cmd, out, full, ran_in)
    elif k == "hardware":
        # both checks, so that a failure reports each of them
        problems = []
        full = train_limits(args)
        out, ran_in = runs.once(name, full, cwd)
        plan_dir = tmp_path / "plan"
        plan_dir.mkdir()
        prepare(cmd, plan_dir, runs)
        for check in (
            lambda: check_needs_hardware(cmd, out, full, ran_in),
            lambda: check_plan(cmd, [*args, "dry_run=true"], plan_dir),
        ):
            try:
                check()
            except AssertionError as e:
                problems.append(str(e))
        assert not problems, "\n\n".join(problems)
    elif k == "placeholder":
        check_plan(cmd, [*args, "dry_run=true"], cwd)
        pytest.skip(f"{cmd.where} names a placeholder server (example.org, RFC 2606): only its dry run ran")
    elif k == "bench":
        check_bench(cmd, name, args, runs, cwd)
    elif k == "make":
        target = args[0] if args else ""
        if target not in MAKE_TARGETS:
            pytest.skip(f"`make {target}` changes the environment or the checkout, or runs this suite")
        out = execute(name, args, cwd)
        assert out.returncode == 0, _show(cmd, out)
    else:  # bigtrain-tokens, python -m bigtrain.<module>
        out = execute(name, args, cwd)
        assert out.returncode == 0, _show(cmd, out)
        if name == "bigtrain-tokens" and args[0] == "write":
            corpus = Corpus(str(cwd / args[1]))  # the index and every shard it names, checked
            assert corpus.n_tokens > 0 and corpus.meta["documents"] > 0
        if name == "-m bigtrain.runs.export":
            assert (cwd / args[1]).stat().st_size > 0


# ---------------------------------------------------------------------------------------------
# The extraction itself.
