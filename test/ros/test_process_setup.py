"""limit_malloc_arenas: glibc's mallopt takes the arena cap; the user's MALLOC_ARENA_MAX wins; bad values refused."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

from da3_ros.process_setup import limit_malloc_arenas

CODE = "from da3_ros.process_setup import limit_malloc_arenas; print(limit_malloc_arenas(2))"


def _run(env_extra: dict[str, str]) -> str:
    import os

    env = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"} | env_extra
    return subprocess.run([sys.executable, "-c", CODE], env=env, capture_output=True, text=True, check=True
                          ).stdout.strip()


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt(M_ARENA_MAX) is glibc's")
def test_glibc_accepts_the_cap_unless_the_environment_sets_it():
    assert _run({}) == "True"  # mallopt returned 1: glibc took the setting
    assert _run({"MALLOC_ARENA_MAX": "4"}) == "False"  # the user's choice is left alone


def test_bad_arena_count_is_refused():
    with pytest.raises(ValueError, match="arenas must be >= 1"):
        limit_malloc_arenas(0)
