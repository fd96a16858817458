"""Runs `bigtrain ARGS` (or a Python script) with a kill planted in the Nth checkpoint write.

Usage: python tests/fault_launch.py N -m bigtrain ARGS...  |  python tests/fault_launch.py N -c CODE ARGS...

The product has no fault hooks: this launcher wraps `torch.save` in the child process, so that
its Nth call writes half of the bytes to the (temporary) file, fsyncs them and SIGKILLs the
process: a real kill in the middle of a real checkpoint write.
"""

from __future__ import annotations

import io
import os
import runpy
import signal
import sys

import torch

_real_save = torch.save
_calls = 0


def _save(obj, f, *args, **kwargs):
    global _calls
    _calls += 1
    if _calls != KILL_AT or isinstance(f, (str, os.PathLike)):
        return _real_save(obj, f, *args, **kwargs)
    buf = io.BytesIO()
    _real_save(obj, buf, *args, **kwargs)
    data = buf.getvalue()
    f.write(data[: len(data) // 2])
    f.flush()
    os.fsync(f.fileno())
    os.kill(os.getpid(), signal.SIGKILL)


if __name__ == "__main__":
    KILL_AT = int(sys.argv[1])
    torch.save = _save
    mode, rest = sys.argv[2], sys.argv[3:]
    if mode == "-m":
        sys.argv = [rest[0], *rest[1:]]
        runpy.run_module(rest[0], run_name="__main__", alter_sys=True)
    else:
        sys.argv = ["-c", *rest[1:]]
        exec(compile(rest[0], "<fault_launch>", "exec"), {"__name__": "__main__"})
