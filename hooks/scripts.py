"""Git-style hook scripts: executables in ``.mvc/hooks/<name>`` run at fixed points.

A hook gets the operation's details as ``MVC_*`` environment variables and runs with the
repository's top directory as its working directory. A ``pre-*`` hook that exits non-zero
aborts the operation (its output becomes the error message); a ``post-*`` hook's failure is
reported but changes nothing, since the operation has already happened.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

HOOK_NAMES = ("pre-commit", "post-commit")
HOOK_TIMEOUT = 600.0


@dataclass(frozen=True)
class HookResult:
    name: str
    returncode: int
    output: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0


def hook_path(hooks_dir: Path, name: str) -> Path | None:
    """The hook script ``name`` if it exists and is executable."""
    if name not in HOOK_NAMES:
        raise ValueError(f"unknown hook {name!r}")
    path = Path(hooks_dir) / name
    if path.is_file() and os.access(path, os.X_OK):
        return path
    return None


def run_hook(hooks_dir: Path, name: str, env: dict[str, str], cwd: Path) -> HookResult | None:
    """Run hook ``name`` with ``env`` added to the environment; None when there is no such hook."""
    path = hook_path(hooks_dir, name)
    if path is None:
        return None
    full_env = dict(os.environ)
    full_env.update({k: str(v) for k, v in env.items()})
    try:
        proc = subprocess.run([str(path)], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=HOOK_TIMEOUT)
    except subprocess.TimeoutExpired:
        return HookResult(name, 124, f"hook {name} timed out after {HOOK_TIMEOUT:.0f} s")
    except OSError as e:
        return HookResult(name, 126, f"hook {name} could not run: {e}")
    output = (proc.stderr.strip() + "\n" + proc.stdout.strip()).strip()
    return HookResult(name, proc.returncode, output)
