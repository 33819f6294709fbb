"""Running the `pipeline` command as a user does: a subprocess in the current directory."""

from __future__ import annotations

import subprocess
import sys


def run_cli(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run ``pipeline ARGS`` and return the finished process (stdout/stderr as text)."""
    done = subprocess.run(
        [sys.executable, "-m", "stages.cli", *args], capture_output=True, text=True, check=False
    )
    if check and done.returncode != 0:
        raise AssertionError(f"pipeline {' '.join(args)} failed:\n{done.stderr}")
    return done
