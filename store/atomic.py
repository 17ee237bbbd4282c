"""Replacing a small file atomically: write a temporary file beside it, fsync, rename over it."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


def write_atomic(path: Path, data: bytes, *, tmp_dir: Path, fsync: bool = True, prefix: str = "tmp-") -> None:
    """Make ``path`` hold ``data``: readers see the old content or the new, never a mix.

    ``tmp_dir`` must be on the same filesystem as ``path``. On any failure (Ctrl-C included)
    the temporary file is removed and ``path`` is unchanged.
    """
    Path(tmp_dir).mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=prefix, dir=tmp_dir)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
