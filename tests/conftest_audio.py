"""Spoken digits for the speech tests: real espeak-ng speech made by scripts/make_spoken_digits.py,
once per test session (a few seconds), and helpers that write bad audio files.

Test modules import the fixtures they use (`from conftest_audio import spoken_digits`)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "make_spoken_digits.py"
WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


def make_digits(out: Path, *args: str) -> Path:
    """scripts/make_spoken_digits.py OUT ARGS, run as a user would."""
    if shutil.which("espeak-ng") is None:
        pytest.fail("espeak-ng is not installed: apt-get install espeak-ng (.ci/run does)")
    cmd = [sys.executable, str(SCRIPT), str(out), *args]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return out


@pytest.fixture(scope="session")
def spoken_digits(tmp_path_factory) -> Path:
    """A small set: 3 voices x 12 variants (2 held out for test, 1 for validation), one speed and
    pitch per clip; 360 words in class folders and 144 transcribed digit strings."""
    out = tmp_path_factory.mktemp("speech") / "digits"
    return make_digits(
        out, "--voices", "en-us,en-gb,en-029", "--variants", "12", "--test-variants", "2",
        "--val-variants", "1", "--strings", "4",
    )  # fmt: skip


def write_wav(path: Path, seconds: float = 0.5, rate: int = 16_000, channels: int = 1) -> Path:
    """A tone as a 16-bit WAV file."""
    import numpy as np
    import soundfile as sf

    t = np.arange(int(seconds * rate)) / rate
    tone = (0.3 * np.sin(2 * np.pi * 440 * t)).astype("float32")
    data = np.stack([tone] * channels, axis=1) if channels > 1 else tone
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, data, rate, subtype="PCM_16")
    return path


def copy_words(src: Path, dst: Path, per_class: int | None = None) -> Path:
    """The class folders of `src` (one split of the words), `per_class` clips each, in `dst`."""
    for word in WORDS:
        clips = sorted((src / word).glob("*.wav"))[:per_class]
        (dst / word).mkdir(parents=True, exist_ok=True)
        for clip in clips:
            shutil.copy(clip, dst / word / clip.name)
    return dst
