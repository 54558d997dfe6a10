"""Running a benchmark script's ``--smoke`` mode the way a user runs the script."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parents[1] / "bench"


def run_smoke(
    script: str, *args: str, single_thread: bool = False, timeout: int = 300, block: tuple[str, ...] = ()
) -> subprocess.CompletedProcess:
    """Run ``bench/<script> --smoke <args>`` in a fresh interpreter; fail the test with its stderr.

    ``single_thread`` sets OMP_NUM_THREADS=1 (tiny tensors run faster on one thread).
    ``block`` names modules that cannot be imported in that run (``sys.modules[name] = None``),
    to show a mode does without them.
    """
    env = {**os.environ, "OMP_NUM_THREADS": "1"} if single_thread else None
    launcher = []
    if block:
        launcher = ["-c", f"import runpy, sys; sys.modules.update(dict.fromkeys({list(block)!r})); "
                    "sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')"]
    proc = subprocess.run([sys.executable, *launcher, str(BENCH_DIR / script), "--smoke", *args],
                          capture_output=True, text=True, timeout=timeout, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc
