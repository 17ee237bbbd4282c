"""The stat cache: lets ``status`` and a re-``commit`` of an unchanged model skip reading it.

For each file it remembers (size, mtime_ns, inode, ctime_ns) and the tree entry that content
produced. An entry is trusted only while all four match. A file whose mtime is too close to
the moment it was read is never cached ("racily clean", as git calls it): a write in the same
clock tick would otherwise go unnoticed.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

from store.ids import is_object_id
from store.model import MODES, TreeEntry

RACY_MARGIN_NS = 50_000_000  # 50 ms, well above the mtime tick of common filesystems
COARSE_RACY_MARGIN_NS = 2_000_000_000  # for filesystems whose mtimes are whole seconds


def stat_key(st: os.stat_result) -> list[int]:
    return [st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns]


class StatCache:
    """A JSON file mapping ``directory -> path -> [stat key..., kind, id, hash, mode]``."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._data: dict[str, dict[str, list]] | None = None
        self._dirty = False

    def _load(self) -> dict[str, dict[str, list]]:
        if self._data is None:
            try:
                data = json.loads(self.path.read_text())
                self._data = data if isinstance(data, dict) else {}
            except (FileNotFoundError, ValueError, UnicodeDecodeError):
                self._data = {}
        return self._data

    def lookup(self, directory: Path, rel: str, st: os.stat_result) -> TreeEntry | None:
        row = self._load().get(str(directory), {}).get(rel)
        if not isinstance(row, list) or len(row) != 8 or row[:4] != stat_key(st):
            return None
        kind, oid, whole, mode = row[4:]
        if kind not in ("blob", "file") or not is_object_id(str(oid)) or not is_object_id(str(whole)) or mode not in MODES:
            return None
        return TreeEntry(kind, oid, st.st_size, whole, mode)

    def record(self, directory: Path, rel: str, st: os.stat_result, entry: TreeEntry, read_started_ns: int) -> None:
        margin = COARSE_RACY_MARGIN_NS if st.st_mtime_ns % 1_000_000_000 == 0 else RACY_MARGIN_NS
        if st.st_mtime_ns >= read_started_ns - margin:
            return
        self._load().setdefault(str(directory), {})[rel] = stat_key(st) + [entry.kind, entry.id, entry.hash, entry.mode]
        self._dirty = True

    def forget_missing(self, directory: Path, present: set[str]) -> None:
        rows = self._load().get(str(directory))
        if rows:
            for rel in set(rows) - present:
                del rows[rel]
                self._dirty = True

    def save(self) -> None:
        """Write the cache atomically; a failure only costs a re-read next time."""
        if not self._dirty:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix="statcache-", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(self._data, f, separators=(",", ":"))
            os.replace(tmp, self.path)
            self._dirty = False
        except OSError:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass


def now_ns() -> int:
    return time.time_ns()
