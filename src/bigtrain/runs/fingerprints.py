"""The fingerprints of the data files a run trained on (inputs.json), and the check that they are unchanged.

A run records, when its data is set up, the size and SHA-256 of every input file (tables, the
token corpus's .bin and .json, text files, a tokenizer file) and, for an image folder, the
SHA-256 of its listing (relative path and size of every image, sorted); the standard library's
corpus is one listing entry too, hashed over the bytes the run reads. `bigtrain resume=RUN` and
`bigtrain eval RUN` on the run's own split compare the files as they are now with the record
and refuse a changed one with one line, unless `accept_changed_data=true`.

inputs.json: {"files": [{"path", "bytes", "sha256"}], "listings": [{"what", "path", "files",
"bytes", "sha256"}]}. Paths are written as the config gives them (a relative path stays
relative, so a project moved as a whole still matches). Hashing reads every byte once: about 1 s
per GB (docs/data.md). No torch here.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from bigtrain.config.errors import ConfigError, first_line

FILE = "inputs.json"
ACCEPT = "accept_changed_data=true"
BLOCK = 1 << 20


def file_entry(path: str | Path) -> dict:
    """{"path", "bytes", "sha256"} of one file, read in 1 MiB blocks."""
    sha, size = hashlib.sha256(), 0
    with open(path, "rb") as f:
        while block := f.read(BLOCK):
            sha.update(block)
            size += len(block)
    return {"path": str(path), "bytes": size, "sha256": sha.hexdigest()}


def input_paths(data: Any) -> list[Path]:
    """The single files the data config `data` reads (its source's record names them: none for
    scikit-learn's sets and your own data module)."""
    from bigtrain.data import source

    return source(data.name).files(data)


def fingerprints(data: Any) -> dict:
    """{"files": [...], "listings": [...]} of the data config `data`, as the files are now; a
    listing stands for a folder of many files (an image folder, the standard library)."""
    from bigtrain.data import source

    listing = source(data.name).listing
    listings = [entry for entry in [listing(data) if listing else None] if entry is not None]
    files = [file_entry(p) for p in dict.fromkeys(input_paths(data)) if p.is_file()]
    return {"files": files, "listings": listings}


def record(run_dir: str | Path, data: Any, found: dict | None = None) -> dict:
    """Write RUN_DIR/inputs.json (atomically) with the fingerprints of `data` (`found`, when the
    caller computed them just now); returns them."""
    from bigtrain.util import write_text_atomic

    found = fingerprints(data) if found is None else found
    write_text_atomic(Path(run_dir) / FILE, json.dumps(found, indent=1) + "\n")
    return found


def recorded(run_dir: str | Path) -> dict | None:
    """The run's inputs.json, None when it has none (a run from before bigtrain recorded them);
    ConfigError naming the file when it is damaged."""
    path = Path(run_dir) / FILE
    if not path.is_file():
        return None
    fix = f"restore it from a copy of the run, or add {ACCEPT} to skip the check"
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        reason = first_line(e)
        raise ConfigError(f"{path} cannot be read ({reason}): {fix}") from e
    if not (isinstance(saved, dict) and _entries(saved, "files") and _entries(saved, "listings")):
        raise ConfigError(f"{path} is not a record of the run's inputs (files and listings): {fix}")
    return saved


def _entries(saved: dict, key: str) -> bool:
    keys = ("path", "bytes", "sha256")
    value = saved.get(key, [])
    return isinstance(value, list) and all(isinstance(e, dict) and all(k in e for k in keys) for e in value)


def changed_line(path: str, was: dict, now: dict | None, unit: str = "") -> str:
    """The one line for an input that is not what the run trained on."""
    old = f"{_count(was, unit)}{was['bytes']} bytes, sha256 {str(was['sha256'])[:12]}..."
    if now is None:
        return (
            f"{path} is gone since the run trained on it ({old}): restore it, or add {ACCEPT} "
            "to go on without it"
        )
    new = f"{_count(now, unit)}{now['bytes']} bytes, {now['sha256'][:12]}..."
    return (
        f"{path} changed since the run trained on it ({old} -> {new}): restore it, or add {ACCEPT} "
        "to use it as it is now"
    )


def _count(entry: dict, unit: str) -> str:
    return f"{entry['files']} {unit}, " if unit and "files" in entry else ""


def check(run_dir: str | Path, data: Any) -> dict | None:
    """ConfigError (one line, the first difference) unless the inputs of `data` are the ones
    RUN_DIR/inputs.json records; returns their fingerprints. Nothing to compare (no inputs.json)
    passes and returns None."""
    saved = recorded(run_dir)
    if saved is None:
        return None
    now = fingerprints(data)
    have = {e["path"]: e for e in now["files"]}
    for was in saved["files"]:
        entry = have.pop(was["path"], None)
        if entry is None or (entry["bytes"], entry["sha256"]) != (was["bytes"], was["sha256"]):
            raise ConfigError(changed_line(was["path"], was, entry))
    for path in have:  # a file the run did not read (a new file in a folder of data.paths)
        raise ConfigError(
            f"{path} is new since the run trained on its data (data.paths): move it away, or add "
            f"{ACCEPT} to use it as it is now"
        )
    listings = {e.get("what"): e for e in now["listings"]}
    for was in saved["listings"]:
        entry = listings.get(was.get("what"))
        if entry is not None and (entry["bytes"], entry["sha256"]) != (was["bytes"], was["sha256"]):
            unit = "images" if was.get("what") == "data.root" else "files"
            raise ConfigError(changed_line(entry["path"], was, entry, unit))
    return now
