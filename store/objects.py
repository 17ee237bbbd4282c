"""The local object store: ``objects/ab/cdef...``, each object named by the xxh3-128 of its bytes.

Write order (docs/format.md, "Write order"): an object becomes visible only when complete.
Bytes go to a temporary file in ``tmp/`` on the same filesystem, are fsynced, and the file is
renamed into place. Writing an object that already exists succeeds and refreshes its mtime, so
that a concurrent ``gc`` treats it as recent.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from store.errors import ObjectCorrupt, ObjectMissing
from store.ids import hash_bytes, is_object_id


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class ObjectStore:
    """Create-only, content-addressed storage of byte strings on the local filesystem."""

    def __init__(self, objects_dir: Path, tmp_dir: Path, *, fsync: bool = True) -> None:
        self.root = Path(objects_dir)
        self.tmp_dir = Path(tmp_dir)
        self.fsync = fsync

    def path(self, oid: str) -> Path:
        """Where object ``oid`` lives (it may not exist)."""
        if not is_object_id(oid):
            raise ObjectMissing(f"not an object id: {oid!r}")
        return self.root / oid[:2] / oid[2:]

    def has(self, oid: str) -> bool:
        return self.path(oid).is_file()

    def size(self, oid: str) -> int:
        try:
            return self.path(oid).stat().st_size
        except FileNotFoundError:
            raise ObjectMissing(f"object {oid} is missing") from None

    def get(self, oid: str, *, verify: bool = True) -> bytes:
        """Return the bytes of ``oid``; with ``verify`` (the default) re-hash them first."""
        try:
            data = self.path(oid).read_bytes()
        except FileNotFoundError:
            raise ObjectMissing(f"object {oid} is missing") from None
        if verify and hash_bytes(data) != oid:
            raise ObjectCorrupt(f"object {oid} is corrupt: its content does not match its id")
        return data

    def put(self, data: bytes | bytearray | memoryview, oid: str | None = None) -> str:
        """Store ``data`` and return its id. ``oid`` may be passed when the caller already hashed it."""
        with self.batch() as batch:
            oid = batch.add(data, oid)
        return oid

    def batch(self) -> ObjectBatch:
        """A group of writes that are fsynced together and then made visible together."""
        return ObjectBatch(self)

    def freshen(self, oid: str) -> None:
        """Mark an existing object as recently used, so gc's grace period protects it."""
        try:
            os.utime(self.path(oid))
        except PermissionError:
            pass

    def iter_ids(self) -> Iterator[str]:
        """Every object id present, in no particular order."""
        if not self.root.is_dir():
            return
        for fan in os.scandir(self.root):
            if not fan.is_dir() or len(fan.name) != 2:
                continue
            for entry in os.scandir(fan.path):
                oid = fan.name + entry.name
                if is_object_id(oid):
                    yield oid

    def mtime(self, oid: str) -> float:
        return self.path(oid).stat().st_mtime

    def delete(self, oid: str) -> None:
        try:
            self.path(oid).unlink()
        except FileNotFoundError:
            pass

    def clean_tmp(self, older_than: float) -> int:
        """Remove temporary files older than ``older_than`` seconds; return how many."""
        removed = 0
        if not self.tmp_dir.is_dir():
            return 0
        cutoff = time.time() - older_than
        for entry in os.scandir(self.tmp_dir):
            try:
                if entry.is_file(follow_symlinks=False) and entry.stat().st_mtime <= cutoff:
                    os.unlink(entry.path)
                    removed += 1
            except FileNotFoundError:
                pass
        return removed


class ObjectBatch:
    """Writes objects into ``tmp/``; ``commit`` fsyncs them all, then renames them into place.

    Used as a context manager: leaving the block normally commits, leaving it through an
    exception (Ctrl-C included) removes the temporary files and makes nothing visible.
    Batching lets the kernel write many objects back at once instead of one fsync at a time.
    """

    def __init__(self, store: ObjectStore) -> None:
        self.store = store
        self._pending: dict[str, str] = {}  # oid -> tmp path
        self.bytes_written = 0
        self.bytes_existing = 0

    def add(self, data: bytes | bytearray | memoryview, oid: str | None = None) -> str:
        if oid is None:
            oid = hash_bytes(data)
        if oid in self._pending:
            return oid
        final = self.store.path(oid)
        if final.exists():
            self.store.freshen(oid)
            self.bytes_existing += len(data)
            return oid
        self.store.tmp_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix="obj-", dir=self.store.tmp_dir)
        try:
            with os.fdopen(fd, "wb", buffering=0) as f:
                view = memoryview(data)
                while view:
                    n = f.write(view)
                    view = view[n:]
        except BaseException:
            os.unlink(tmp)
            raise
        self._pending[oid] = tmp
        self.bytes_written += len(data)
        return oid

    def commit(self) -> None:
        pending, self._pending = self._pending, {}
        try:
            if self.store.fsync:
                for tmp in pending.values():
                    fd = os.open(tmp, os.O_RDONLY)
                    try:
                        os.fsync(fd)
                    finally:
                        os.close(fd)
            dirs: set[Path] = set()
            for oid, tmp in list(pending.items()):
                final = self.store.path(oid)
                final.parent.mkdir(parents=True, exist_ok=True)
                os.chmod(tmp, 0o444)
                os.replace(tmp, final)
                del pending[oid]
                dirs.add(final.parent)
            if self.store.fsync:
                for d in dirs:
                    _fsync_dir(d)
        finally:
            for tmp in pending.values():
                try:
                    os.unlink(tmp)
                except FileNotFoundError:
                    pass

    def abort(self) -> None:
        for tmp in self._pending.values():
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
        self._pending = {}

    def __enter__(self) -> ObjectBatch:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()

