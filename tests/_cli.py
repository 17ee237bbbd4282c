"""Running the mvc CLI from tests: in this process (fast) or as a real subprocess."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
from pathlib import Path

# Variables a developer's shell may set that would change what the CLI does.
CLEARED = ("MVC_REPO", "MVC_DEBUG", "MVC_BUSY_TIMEOUT")


@contextlib.contextmanager
def environ(extra: dict[str, str]):
    """``os.environ`` without ``CLEARED`` and with ``extra``, restored afterwards."""
    saved = dict(os.environ)
    for k in CLEARED:
        os.environ.pop(k, None)
    os.environ.update(extra)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def run_cli(*args: str, cwd: Path, env: dict | None = None, check: bool = False, process: bool = False) -> subprocess.CompletedProcess:
    """``mvc ARGS`` in ``cwd``: through the console entry point in a subprocess with ``process``,
    otherwise through the same ``mvc.cli.main`` in this process (no import cost per call)."""
    if process:
        full = {k: v for k, v in os.environ.items() if k not in CLEARED}
        full.update(env or {})
        proc = subprocess.run([sys.executable, "-m", "mvc", *args], cwd=cwd, env=full, capture_output=True, text=True, timeout=120)
    else:
        from mvc.cli import main

        out, err = io.StringIO(), io.StringIO()
        here = os.getcwd()
        with environ(env or {}), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            os.chdir(cwd)
            try:
                main(list(args))
                rc = 0
            except SystemExit as e:
                rc = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
            finally:
                os.chdir(here)
        proc = subprocess.CompletedProcess(["mvc", *args], rc, out.getvalue(), err.getvalue())
    if check and proc.returncode != 0:
        raise AssertionError(f"mvc {' '.join(args)} exited {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    return proc
