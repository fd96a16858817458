"""Resident memory of this process: the current RSS and the OS's high-water mark, in MiB."""

from __future__ import annotations

import os
import resource
import sys

# (pid, descriptor) of this process's /proc/self/statm, kept open: opening and parsing
# /proc/self/status took 45-190 us a sample, a pread of statm takes 3. A forked child must not
# read its parent's, hence the pid.
_statm: tuple[int, int] | None = None
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def peak_rss_mb() -> float:
    """The largest RSS this process has had since it started (getrusage's ru_maxrss)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, kB on Linux


def rss_mb() -> float:
    """Current resident set size in MiB (the peak where /proc is missing, e.g. macOS)."""
    global _statm
    try:
        if _statm is None or _statm[0] != os.getpid():
            _statm = (os.getpid(), os.open("/proc/self/statm", os.O_RDONLY))
        # statm: total program size, then resident pages.
        return int(os.pread(_statm[1], 256, 0).split()[1]) * _PAGE / 2**20
    except (OSError, AttributeError):  # no /proc, or no os.pread (Windows)
        return peak_rss_mb()
