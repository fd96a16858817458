"""Spoken digits synthesised offline with espeak-ng: a keyword set and a transcription set.

    python scripts/make_spoken_digits.py spoken_digits
    python scripts/make_spoken_digits.py small --voices en-us,en-gb --variants 12 --strings 2

Every clip is "zero" to "nine" (or, for transcription, a string of 2-5 of them) spoken by one
espeak-ng English voice (an accent: en-us, en-gb-scotland, ...) with one variant (a speaker:
adam, f3, klatt, ...), at one speed (words per minute) and pitch (0-99), resampled to 16 kHz
mono and written as 16-bit WAV, with silence trimmed to 50 ms either side. The split is by
variant: the test and validation variants speak no training clip, so a test score measures
how the model does on speakers it never heard.

    OUT/words/{train,val,test}/<word>/<voice>+<variant>_s<speed>_p<pitch>.wav   class folders
    OUT/strings/clips/<voice>+<variant>_<n>.wav                                   digit strings
    OUT/strings/transcripts.csv        path,text,split,voice  (path relative to the CSV)

Needs the espeak-ng program (Debian/Ubuntu: apt-get install espeak-ng) and bigtrain's audio
extra (pip install 'bigtrain[audio]'). The same arguments make the same files.
"""

from __future__ import annotations

import argparse
import csv
import io
import random
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
RATE = 16_000


def espeak() -> str:
    path = shutil.which("espeak-ng")
    if path is None:
        sys.exit("make_spoken_digits: espeak-ng is not installed: run apt-get install espeak-ng")
    return path


def _listing(program: str, what: str) -> list[list[str]]:
    out = subprocess.run([program, f"--voices={what}"], capture_output=True, text=True, check=True)
    return [line.split() for line in out.stdout.splitlines()[1:] if line.strip()]


def english_voices(program: str) -> list[str]:
    """espeak-ng's own English voices (mbrola voices need a separate program and are left out)."""
    return sorted({row[1] for row in _listing(program, "en") if len(row) > 4 and row[4].startswith("gmw/")})


def variants(program: str) -> list[str]:
    """Every variant espeak-ng ships (`!v/<name>` files), by file name."""
    return sorted({row[4].split("/", 1)[1] for row in _listing(program, "variant") if len(row) > 4})


def synthesize(program: str, voice: str, variant: str, speed: int, pitch: int, text: str):
    """The clip as float32 samples at 16 kHz, silence trimmed to 50 ms either side."""
    import numpy as np
    import soundfile as sf
    import soxr

    argv = [program, "--stdout", "-v", f"{voice}+{variant}", "-s", str(speed), "-p", str(pitch), text]
    wav = subprocess.run(argv, capture_output=True, check=True).stdout
    samples, rate = sf.read(io.BytesIO(wav), dtype="float32")
    if samples.ndim > 1:
        samples = samples.mean(axis=1)
    samples = soxr.resample(samples, rate, RATE).astype(np.float32)
    loud = np.flatnonzero(np.abs(samples) > 0.01 * max(float(np.abs(samples).max()), 1e-6))
    if loud.size:
        margin = RATE // 20
        samples = samples[max(0, loud[0] - margin) : loud[-1] + margin]
    return samples


def split_variants(names: list[str], test: int, val: int, seed: int) -> dict[str, str]:
    """variant -> split: `test` and `val` variants drawn at random (seeded), the rest train."""
    order = sorted(names)
    random.Random(seed).shuffle(order)
    if test + val >= len(order):
        sys.exit(
            f"make_spoken_digits: {len(order)} variants leave none to train on: lower --test/--val-variants"
        )
    return {v: "test" if i < test else "val" if i < test + val else "train" for i, v in enumerate(order)}


def _pick(value: str, known: list[str], what: str, seed: int) -> list[str]:
    """'all', a count (that many, drawn at random), or a comma-separated list of names."""
    if value == "all":
        return known
    if value.isdigit():
        n = int(value)
        return sorted(random.Random(seed).sample(known, min(n, len(known))))
    names = [v for v in value.split(",") if v]
    unknown = [v for v in names if v not in known]
    if unknown:
        sys.exit(f"make_spoken_digits: no {what} {unknown[0]!r}: choose from {', '.join(known)}")
    return names


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out", type=Path, help="folder to write (must not exist)")
    p.add_argument("--voices", default="all", help="'all', a count, or a list such as en-us,en-gb")
    p.add_argument("--variants", default="all", help="'all', a count drawn at random, or a list")
    p.add_argument("--speeds", default="130,175", help="words per minute, comma-separated")
    p.add_argument("--pitches", default="35,65", help="0-99, comma-separated")
    p.add_argument(
        "--combos", type=int, default=1, help="speed x pitch pairs per clip (drawn at random); 0 = all"
    )
    p.add_argument("--strings", type=int, default=4, help="digit strings per voice and variant; 0 = none")
    p.add_argument("--test-variants", type=int, default=0, help="held-out variants for test; 0 = a fifth")
    p.add_argument(
        "--val-variants", type=int, default=0, help="held-out variants for validation; 0 = a tenth"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--jobs", type=int, default=4, help="espeak-ng processes at a time")
    args = p.parse_args(argv)
    if args.out.exists():
        sys.exit(f"make_spoken_digits: {args.out} exists: give a new folder")
    program = espeak()
    voices = _pick(args.voices, english_voices(program), "voice", args.seed)
    chosen = _pick(args.variants, variants(program), "variant", args.seed)
    test = args.test_variants or max(1, len(chosen) // 5)
    val = args.val_variants or max(1, len(chosen) // 10)
    split = split_variants(chosen, test, val, args.seed)
    speeds = [int(s) for s in args.speeds.split(",")]
    pitches = [int(s) for s in args.pitches.split(",")]
    combos = [(s, q) for s in speeds for q in pitches]
    rng = random.Random(args.seed)

    jobs = []  # (path, voice, variant, speed, pitch, text)
    for voice in voices:
        for variant in chosen:
            for word in WORDS:
                drawn = rng.sample(combos, args.combos) if 0 < args.combos < len(combos) else combos
                for speed, pitch in drawn:
                    name = f"{voice}+{variant}_s{speed}_p{pitch}.wav"
                    path = args.out / "words" / split[variant] / word / name
                    jobs.append((path, voice, variant, speed, pitch, word))
    rows = []
    for voice in voices:
        for variant in chosen:
            for n in range(args.strings):
                digits = [rng.choice(WORDS) for _ in range(rng.randint(2, 5))]
                speed, pitch = rng.choice(combos)
                rel = f"clips/{voice}+{variant}_{n}.wav"
                text = " ".join(digits)
                jobs.append((args.out / "strings" / rel, voice, variant, speed, pitch, text))
                rows.append(
                    {"path": rel, "text": text, "split": split[variant], "voice": f"{voice}+{variant}"}
                )

    def make(job) -> None:
        import soundfile as sf

        path, voice, variant, speed, pitch, text = job
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, synthesize(program, voice, variant, speed, pitch, text), RATE, subtype="PCM_16")

    with ThreadPoolExecutor(max(1, args.jobs)) as pool:
        list(pool.map(make, jobs))
    if rows:
        with open(args.out / "strings" / "transcripts.csv", "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=["path", "text", "split", "voice"])
            writer.writeheader()
            writer.writerows(rows)
    held = sorted(v for v, s in split.items() if s == "test")
    print(
        f"{len(jobs)} clips in {args.out}: {len(voices)} voices x {len(chosen)} variants "
        f"(test variants: {', '.join(held)})"
    )


if __name__ == "__main__":
    main()
