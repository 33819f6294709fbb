"""Running the `pipeline` command as a user does, inside the test's process.

A `pipeline` subprocess spends 3 to 6 seconds importing torch (and torch's compiler, which the
optimisers and torchvision load) before it does any work; the suite runs hundreds of commands,
so they run here through the console script's own entry point, `stages.cli.main`, with what a
fresh process would give them: ``sys.argv``, empty stdout and stderr, the root logger without
pytest's handlers, Python's default warning filters and torch's random state seeded afresh
(as every process seeds it: code that draws from it unseeded is not made reproducible here). What
only a separate process shows (an address-space limit, a killed process, another
environment) is tested with subprocesses where it is tested.
"""

from __future__ import annotations

import contextlib
import io
import logging
import subprocess
import sys
import traceback
import warnings
from collections.abc import Iterator

import torch

from stages.cli import main

# the filters of a Python started without -W (the warnings module's documentation)
DEFAULT_WARNING_FILTERS = (
    ("default", DeprecationWarning, "__main__"),
    ("ignore", DeprecationWarning, ""),
    ("ignore", PendingDeprecationWarning, ""),
    ("ignore", ImportWarning, ""),
    ("ignore", ResourceWarning, ""),
)


def run_cli(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run ``pipeline ARGS`` in the current directory and return what a subprocess would:
    its exit status and stdout/stderr as text (an exception the command lets through ends as
    Python prints it, with status 1). AssertionError with stderr when `check` and it fails."""
    stdout, stderr = io.StringIO(), io.StringIO()
    with as_a_new_process(args, stdout, stderr):
        try:
            main()
            status = 0
        except SystemExit as exit_:
            status = exit_code(exit_.code, stderr)
        except Exception:
            traceback.print_exc(file=stderr)
            status = 1
    done = subprocess.CompletedProcess(
        ["pipeline", *args], status, stdout.getvalue(), stderr.getvalue()
    )
    if check and status != 0:
        raise AssertionError(f"pipeline {' '.join(args)} failed:\n{done.stderr}")
    return done


def exit_code(code: object, stderr: io.StringIO) -> int:
    """The status a process ends with after ``sys.exit(code)`` (a message is printed, 1)."""
    if code is None or isinstance(code, int):
        return code or 0
    print(code, file=stderr)
    return 1


@contextlib.contextmanager
def as_a_new_process(
    args: tuple[str, ...], stdout: io.StringIO, stderr: io.StringIO
) -> Iterator[None]:
    """Give the command the state of a process of its own for the duration of the block."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    root.handlers = []  # so that the command's logging.basicConfig writes to `stderr`
    argv = sys.argv
    sys.argv = ["pipeline", *args]
    try:
        with (
            contextlib.redirect_stdout(stdout),
            contextlib.redirect_stderr(stderr),
            warnings.catch_warnings(),
            torch.random.fork_rng(devices=[]),
        ):
            warnings.resetwarnings()
            for action, category, module in reversed(DEFAULT_WARNING_FILTERS):
                warnings.filterwarnings(action, category=category, module=module)
            torch.seed()
            yield
    finally:
        sys.argv = argv
        for handler in root.handlers:
            handler.close()
        root.handlers, root.level = handlers, level
