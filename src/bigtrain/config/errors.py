"""ConfigError and the pieces of its messages: values as YAML writes them, close-match hints.

A ConfigError holds one line per mistake; each line says what is wrong and which override
fixes it. The command prints each line as `bigtrain: error: <line>`.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterable
from typing import Any


class ConfigError(ValueError):
    """A bad configuration: one line per mistake, each naming the override that fixes it."""

    @property
    def lines(self) -> list[str]:
        """The mistakes, one per line."""
        return str(self).split("\n")


def config_error(lines: Iterable[str]) -> ConfigError:
    """One ConfigError reporting every line of `lines` (in order, duplicates dropped)."""
    unique = list(dict.fromkeys(lines))
    return ConfigError("\n".join(unique))


def fmt(value: Any) -> str:
    """`value` as it is written in YAML and on the command line (null, true, 0.5)."""
    if isinstance(value, str):
        return value
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def close_match(word: Any, choices: Iterable[Any]) -> str | None:
    """The choice closest to `word`, or None when none is close (for 'did you mean ...?')."""
    found = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1)
    return found[0] if found else None


def did_you_mean(word: Any, choices: Iterable[Any], prefix: str = "") -> str:
    """' (did you mean PREFIXchoice?)' for the closest choice, or '' when none is close."""
    close = close_match(word, choices)
    return f" (did you mean {prefix}{close}?)" if close else ""


def files_in(folder: str, suffixes: Iterable[str], limit: int = 3) -> str:
    """' (in it: a.csv, b.csv)' naming up to `limit` entries of `folder` that end in one of
    `suffixes`, or '' when there is none: the fix of a line that says a folder was given where a
    file is wanted."""
    ends = tuple(s.lower() for s in suffixes)
    try:
        names = sorted(e.name for e in os.scandir(folder) if e.name.lower().endswith(ends))
    except OSError:
        return ""
    if not names:
        return ""
    more = ", ..." if len(names) > limit else ""
    return f" (in it: {', '.join(names[:limit])}{more})"


def first_line(e: BaseException) -> str:
    """The first line of an exception's message (its type's name when it has none): what a
    one-line error quotes as the reason."""
    return (str(e).strip().splitlines() or [type(e).__name__])[0].strip()
