"""Run a command and measure its peak RSS from outside, as ``/usr/bin/time -v`` does.

``wait4`` returns a finished child's resource usage; ``ru_maxrss`` is the kernel's high-water
mark of that process (kB on Linux). One trap: Linux carries ``ru_maxrss`` across ``exec``, and a
child forked (or vforked) from a large process starts from the parent's value — a training run
started from a 400 MB pytest would report 400 MB. So the command is forked from a small
launcher (a fresh interpreter), whose child starts from the launcher's few MB; the launcher
reports that grandchild's ``ru_maxrss``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

_LAUNCHER = """
import os, sys
pid = os.fork()
if pid == 0:
    os.execvp(sys.argv[2], sys.argv[2:])
_, status, usage = os.wait4(pid, 0)
with open(sys.argv[1], "w") as f:
    f.write(str(usage.ru_maxrss))
sys.exit(os.waitstatus_to_exitcode(status))
"""


@dataclass
class ChildRun:
    returncode: int
    stdout: str
    stderr: str
    peak_rss_bytes: int   # the command's own VmHWM at exit
    seconds: float


def run_measured(cmd: Sequence[str], env: Mapping[str, str] | None = None,
                 cwd: str | None = None) -> ChildRun:
    with tempfile.TemporaryDirectory() as tmp:
        report = os.path.join(tmp, "maxrss")
        t0 = time.monotonic()
        proc = subprocess.run([sys.executable, "-c", _LAUNCHER, report, *cmd], capture_output=True,
                              text=True, env=dict(env) if env else None, cwd=cwd)
        seconds = time.monotonic() - t0
        with open(report) as f:
            kb = int(f.read())
    return ChildRun(proc.returncode, proc.stdout, proc.stderr, kb * 1024, seconds)
