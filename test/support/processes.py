"""Subprocesses for multi-process tests: own session, captured output, always stopped."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess


@contextlib.contextmanager
def captured_process(cmd: list[str], env: dict, cwd=None):
    """Run ``cmd`` in its own process group with stdout+stderr captured as text. On exit the group gets SIGINT (then
    SIGKILL after 10 s) and ``proc.output`` holds everything it printed."""
    proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        proc.output = proc.stdout.read()
        proc.stdout.close()
