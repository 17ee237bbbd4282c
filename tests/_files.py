"""Reading directory trees in tests."""

from __future__ import annotations

import os
from pathlib import Path


def files_under(d: Path) -> dict[str, bytes]:
    """Every regular file under ``d`` (hidden ones included) as ``{relative posix path: bytes}``."""
    out = {}
    for dirpath, _dirs, names in os.walk(d):
        for n in names:
            p = Path(dirpath) / n
            out[p.relative_to(d).as_posix()] = p.read_bytes()
    return out
