"""Inputs docs/audio.md names, for tests/test_docs.py (through doc_inputs.INPUTS): spoken
digits made with espeak-ng (scripts/make_spoken_digits.py), the runs trained on them, and clips."""

from __future__ import annotations

import shlex
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from doc_inputs import Runs


def spoken_digits(path: Path, runs: Runs) -> None:
    """docs/audio.md's spoken digits, small: scripts/make_spoken_digits.py with 3 voices x 8
    variants (2 held out for test), 2 speeds and pitches per word, 4 strings per speaker; made
    once per folder (`path` is its words/ or strings/)."""
    import sys

    out = path.parent
    if not (out / "words").exists():
        script = Path(__file__).resolve().parents[1] / "scripts" / "make_spoken_digits.py"
        args = ["--voices", "en-us,en-gb,en-029", "--variants", "8", "--test-variants", "2"]
        made = out.with_name(out.name + "_making")  # the script writes a new folder only
        cmd = [
            sys.executable,
            str(script),
            str(made),
            *args,
            "--val-variants",
            "1",
            "--combos",
            "2",
            "--strings",
            "4",
        ]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        out.mkdir(parents=True, exist_ok=True)
        for part in ("words", "strings"):
            shutil.move(made / part, out / part)
        made.rmdir()


def _spoken_digits_copy(runs: Runs) -> Path:
    """One set of spoken digits for the inputs made from it (clips, new clips)."""
    made = runs.base / "spoken_digits_source" / "spoken_digits"
    spoken_digits(made / "words", runs)
    return made


def speech_run(*args: str) -> Callable:
    """The run directory of a documented speech training command, trained beside the spoken
    digits (shortened by LIMITS, and run once for all the commands that use it)."""

    def build(run_dir: Path, runs: Runs) -> None:
        cwd = runs.base / "speech_runs"
        if not cwd.exists():
            cwd.mkdir()
            spoken_digits(cwd / "spoken_digits" / "words", runs)
        full = runs.limits(list(args))
        out, ran_in = runs.once("bigtrain", full, cwd)
        assert out.returncode == 0, f"`bigtrain {shlex.join(full)}` failed:\n{out.stderr[-3000:]}"
        made = ran_in / [a.split("=", 1)[1] for a in args if a.startswith("hydra.run.dir=")][0]
        shutil.copytree(made, run_dir)

    return build


def word_clip(path: Path, runs: Runs) -> None:
    """A spoken "four" by a held-out voice."""
    shutil.copy(
        next(iter(sorted((_spoken_digits_copy(runs) / "words" / "test" / "four").glob("*.wav")))), path
    )


def digits_clip(path: Path, runs: Runs) -> None:
    """A spoken digit string."""
    shutil.copy(next(iter(sorted((_spoken_digits_copy(runs) / "strings" / "clips").glob("*.wav")))), path)


def new_clips(path: Path, runs: Runs) -> None:
    """Class folders of the held-out voices' words (120 clips)."""
    shutil.copytree(_spoken_digits_copy(runs) / "words" / "test", path)


def speech_commands(path: Path, runs: Runs) -> None:
    """A folder laid out as Speech Commands is (one folder per word, no splits): every word of
    the small spoken digits."""
    for split in (_spoken_digits_copy(runs) / "words").iterdir():
        shutil.copytree(split, path, dirs_exist_ok=True)


def clips_8k(path: Path, runs: Runs) -> None:
    """Two class folders of one 8 kHz tone each (docs/audio.md's refused resampling)."""
    import numpy as np
    import soundfile as sf

    tone = (0.3 * np.sin(2 * np.pi * 440 * np.arange(4000) / 8000)).astype("float32")
    for word in ("no", "yes"):
        (path / word).mkdir(parents=True)
        sf.write(path / word / "1.wav", tone, 8000, subtype="PCM_16")


AUDIO_INPUTS: dict[str, tuple[str, Callable]] = {
    "spoken_digits/words": ("spoken_digits/words", spoken_digits),
    "spoken_digits/strings": ("spoken_digits/strings", spoken_digits),
    "outputs/spoken_digits": (
        "outputs/spoken_digits",
        speech_run(
            "+experiment=spoken_digits",
            "data.root=spoken_digits/words",
            "hydra.run.dir=outputs/spoken_digits",
        ),
    ),
    "outputs/spoken_digits_ctc": (
        "outputs/spoken_digits_ctc",
        speech_run(
            "+experiment=spoken_digits_ctc",
            "data.root=spoken_digits/strings",
            "data.manifest=spoken_digits/strings/transcripts.csv",
            "hydra.run.dir=outputs/spoken_digits_ctc",
        ),
    ),
    "clip.wav": ("clip.wav", word_clip),
    "digits.wav": ("digits.wav", digits_clip),
    "new_clips/": ("new_clips", new_clips),
    "speech_commands": ("speech_commands", speech_commands),
    "clips_8k": ("clips_8k", clips_8k),
}
