"""The shell commands the documentation shows, read from the documents themselves.

A command is a line of a fenced code block (```bash, ```sh, ```shell, ```console or an unlabelled
fence) of a Markdown file that starts, after an optional `$ ` prompt, with one of the programs in
`PROGRAMS`, or with `pip install ... && ` followed by one of them (the install part is kept
apart: install instructions are not commands to test). A line ending in `\\` continues on the
next. A trailing `# comment` is cut off (a `#` inside quotes or inside a word is not a comment).
The lines after a `$ ` command, up to the next `$ ` line, an empty line or the end of the block,
are the output the document expects.

`bigtrain --help` shows examples too: every line of its output that starts with `bigtrain `, the
command being what precedes the first run of two or more spaces (the rest describes it).
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

# The programs whose lines are commands. `python -m bigtrain` covers its sub-modules too
# (`python -m bigtrain.runs.export`).
PROGRAMS = re.compile(
    r"""^(?:
        bigtrain(?:-tokens)?(?=\s|$)
      | python3?\ -m\ bigtrain(?:\.[\w.]+)?(?=\s|$)
      | python3?\ scripts/\S+
      | (?:srun|torchrun|sbatch)(?=\s)
      | make(?=\s|$)
    )""",
    re.VERBOSE,
)
SHELL_FENCES = {"", "bash", "sh", "shell", "console"}
INSTALL = re.compile(r"^pip3?\s+install\s")


@dataclass(frozen=True)
class DocCommand:
    """One command as a document shows it."""

    source: str  # the file, relative to the repository root, or "bigtrain --help"
    line: int  # its first line (1-based) in that file or in the help output
    text: str  # the command: continuations joined, prompt, install part and comment removed
    comment: str = ""  # the trailing comment, or the description in the help
    expected: tuple[str, ...] = ()  # the output lines shown after a `$ ` command
    install: str = ""  # the `pip install ...` that precedes it with `&&`, if any

    @property
    def where(self) -> str:
        return f"{self.source}:{self.line}"

    @property
    def argv(self) -> list[str]:
        return shlex.split(self.text)


def split_comment(line: str) -> tuple[str, str]:
    """(code, comment) of one shell line: a comment starts with a `#` at the start of a word,
    outside quotes."""
    quote = ""
    escaped = False
    for i, ch in enumerate(line):
        if escaped:
            escaped = False
        elif ch == "\\" and quote != "'":
            escaped = True
        elif quote:
            if ch == quote:
                quote = ""
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip(), line[i + 1 :].strip()
    return line.rstrip(), ""


def split_and(code: str) -> list[str]:
    """The parts of `a && b && c`, split outside quotes."""
    parts, quote, start, i = [], "", 0, 0
    while i < len(code):
        ch = code[i]
        if quote:
            if ch == quote:
                quote = ""
        elif ch in "'\"":
            quote = ch
        elif code.startswith("&&", i):
            parts.append(code[start:i].strip())
            start = i + 2
            i += 1
        i += 1
    parts.append(code[start:].strip())
    return parts


def as_command(code: str) -> tuple[str, str] | None:
    """(install, command) when the shell line `code` is a command, else None."""
    parts = split_and(code)
    install = ""
    if len(parts) > 1 and INSTALL.match(parts[0]):
        install, parts = parts[0], parts[1:]
    if len(parts) != 1 or not PROGRAMS.match(parts[0]):
        return None
    return install, parts[0]


def _blocks(text: str) -> list[tuple[int, list[str]]]:
    """(line number of the first line, lines) of each shell code block."""
    blocks, current, start, label = [], None, 0, ""
    for number, line in enumerate(text.splitlines(), 1):
        fence = re.match(r"^\s*```\s*([\w+-]*)", line)
        if fence and current is None:
            current, start, label = [], number + 1, fence.group(1).lower()
        elif fence:
            if label in SHELL_FENCES:
                blocks.append((start, current))
            current = None
        elif current is not None:
            current.append(line)
    return blocks


def commands_in_markdown(text: str, source: str) -> list[DocCommand]:
    """Every command in the shell code blocks of one Markdown document."""
    found = []
    for start, lines in _blocks(text):
        i = 0
        while i < len(lines):
            first = i
            raw = lines[i].strip()
            while raw.endswith("\\") and i + 1 < len(lines):
                i += 1
                raw = raw[:-1].rstrip() + " " + lines[i].strip()
            i += 1
            prompt = raw.startswith("$ ")
            code, comment = split_comment(raw[2:] if prompt else raw)
            parsed = as_command(code)
            if parsed is None:
                continue
            expected = []
            if prompt:
                while i < len(lines) and lines[i].strip() and not lines[i].startswith("$ "):
                    expected.append(lines[i].strip())
                    i += 1
            install, command = parsed
            found.append(
                DocCommand(
                    source=source,
                    line=start + first,
                    text=command,
                    comment=comment,
                    expected=tuple(expected),
                    install=install,
                )
            )
    return found


def commands_in_help(text: str) -> list[DocCommand]:
    """The examples of `bigtrain --help`: lines that start with `bigtrain `."""
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if stripped.startswith("bigtrain "):
            command, *description = re.split(r"\s{2,}", stripped, maxsplit=1)
            found.append(DocCommand("bigtrain --help", number, command, comment=" ".join(description)))
    return found


def program(cmd: DocCommand) -> tuple[str, list[str]]:
    """(program, its arguments): bigtrain, bigtrain-tokens, a python module or script, a launcher."""
    argv = cmd.argv
    if argv[0] in ("python", "python3") and argv[1] == "-m":
        name = "bigtrain" if argv[2] == "bigtrain" else f"-m {argv[2]}"
        return ("bigtrain-tokens" if argv[2] == "bigtrain.data.tokens_cli" else name), argv[3:]
    if argv[0] in ("python", "python3"):
        return argv[1], argv[2:]
    return argv[0], argv[1:]


def launched_bigtrain(cmd: DocCommand, repo: Path) -> list[str]:
    """The bigtrain arguments an sbatch, srun or torchrun line runs on every task."""
    name, args = program(cmd)
    if name == "srun":
        start = next(i for i, a in enumerate(args) if a in ("bigtrain", "python"))
        return args[start + 1 :] if args[start] == "bigtrain" else args[start + 3 :]
    if name == "torchrun":
        start = next(i for i, a in enumerate(args) if a == "-m")
        assert args[start + 1] == "bigtrain", cmd.text
        return args[start + 2 :]
    # sbatch OPTIONS SCRIPT ARGS: the script's own srun line, with SLURM's values for the options
    start = next(i for i, a in enumerate(args) if a.endswith(".sbatch"))
    options, script, forwarded = args[:start], repo / args[start], args[start + 1 :]
    text = script.read_text()
    defaults = dict(re.findall(r"^#SBATCH --([\w-]+)=(\S+)", text, flags=re.M))
    given = dict(re.findall(r"--([\w-]+)=(\S+)", " ".join(options)))
    slurm = {**defaults, **given}
    values = {"SLURM_NNODES": slurm["nodes"], "SLURM_NTASKS_PER_NODE": slurm["ntasks-per-node"]}
    joined = re.sub(r"\\\n\s*", " ", text)
    (line,) = [s for s in joined.splitlines() if s.startswith("srun ")]
    words = shlex.split(split_comment(line)[0])
    start = next(i for i, w in enumerate(words) if w == "${BIGTRAIN_CMD[@]}")
    result = []
    for word in words[start + 1 :]:
        if word == "$@":
            result += forwarded
        else:
            result.append(re.sub(r"\$\{(\w+)\}", lambda m: values[m.group(1)], word))
    return result
