"""Moving objects between the local store and a remote backend, in parallel, verified.

Uploads re-hash each local object before sending it (a damaged local copy never spreads), ask
the remote whether it has the object first (an interrupted push resumes without re-sending
complete objects) and write it create-only. Downloads land in a quarantine directory under
``.mvc/tmp``, are re-hashed and size-checked there, and only then are renamed into
``objects/``; a tampered or truncated object raises ``RemoteCorrupt`` and never enters the store.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from store.backends.base import Backend
from store.errors import RemoteCorrupt
from store.ids import new_hasher
from store.objects import ObjectStore

T = TypeVar("T")
R = TypeVar("R")
READ_CHUNK = 8 * 1024 * 1024


def object_key(oid: str) -> str:
    """Where object ``oid`` lives on a remote (the local layout: ``objects/ab/cdef…``)."""
    return f"objects/{oid[:2]}/{oid[2:]}"


class Progress:
    """Receives transfer events from worker threads; the CLI draws a bar from them. Does nothing by default."""

    def set_total(self, nbytes: int) -> None:
        pass

    def moved(self, nbytes: int) -> None:
        """``nbytes`` were sent or received."""

    def skipped(self, nbytes: int) -> None:
        """``nbytes`` did not move because the other side had them already."""


@dataclass
class TransferStats:
    """What a push or fetch moved. Thread-safe counters."""

    objects_moved: int = 0
    bytes_moved: int = 0
    objects_skipped: int = 0
    bytes_skipped: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add_moved(self, nbytes: int, progress: Progress | None) -> None:
        with self._lock:
            self.objects_moved += 1
            self.bytes_moved += nbytes
        if progress:
            progress.moved(nbytes)

    def add_skipped(self, nbytes: int, progress: Progress | None) -> None:
        with self._lock:
            self.objects_skipped += 1
            self.bytes_skipped += nbytes
        if progress:
            progress.skipped(nbytes)

    def to_json(self) -> dict:
        return {"objects_moved": self.objects_moved, "bytes_moved": self.bytes_moved,
                "objects_skipped": self.objects_skipped, "bytes_skipped": self.bytes_skipped}


def run_parallel(fn: Callable[[T], R], items: Iterable[T], jobs: int) -> list[R]:
    """``[fn(x) for x in items]`` on ``jobs`` threads; the first failure cancels what has not started and is raised."""
    items = list(items)
    if not items:
        return []
    if jobs <= 1 or len(items) == 1:
        return [fn(x) for x in items]
    pool = ThreadPoolExecutor(max_workers=min(jobs, len(items)), thread_name_prefix="mvc-transfer")
    futures: list[Future] = []
    try:
        futures = [pool.submit(fn, x) for x in items]
        done, _pending = wait(futures, return_when=FIRST_EXCEPTION)
        for f in futures:
            if f.done() and not f.cancelled() and f.exception() is not None:
                raise f.exception()
        return [f.result() for f in futures]
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


# -- upload ---------------------------------------------------------------------------------
def upload(
    store: ObjectStore,
    backend: Backend,
    oids: Iterable[str],
    *,
    jobs: int = 8,
    stats: TransferStats,
    progress: Progress | None = None,
    check_remote: bool = True,
    remote_has: set[str] | None = None,
) -> None:
    """Send the objects ``oids`` that the remote lacks (create-only). Verifies each local copy first.

    Whether the remote has an object is asked per object (``check_remote``), or looked up in
    ``remote_has`` (keys from one listing) when the caller has it.
    """

    def one(oid: str) -> None:
        key = object_key(oid)
        known = remote_has is not None and key in remote_has
        if known or (check_remote and remote_has is None and backend.exists(key)):
            stats.add_skipped(store.size(oid), progress)
            return
        data = store.get(oid)  # re-hashed: a damaged local object raises ObjectCorrupt, nothing is sent
        if backend.put_new(key, data):
            stats.add_moved(len(data), progress)
        else:
            stats.add_skipped(len(data), progress)

    run_parallel(one, oids, jobs)


# -- download -------------------------------------------------------------------------------
def _verify_file(path: Path, oid: str, size: int | None, source: str) -> None:
    actual = path.stat().st_size
    if size is not None and actual != size:
        raise RemoteCorrupt(f"object {oid} from {source} has {actual} bytes, expected {size} (truncated or tampered with); it was not stored")
    h = new_hasher()
    with open(path, "rb") as f:
        while chunk := f.read(READ_CHUNK):
            h.update(chunk)
    if h.hexdigest() != oid:
        raise RemoteCorrupt(f"object {oid} from {source} does not match its id (damaged or tampered with); it was not stored")


def adopt(store: ObjectStore, path: Path, oid: str) -> None:
    """Move a verified file from quarantine into the store (same filesystem: a rename)."""
    final = store.path(oid)
    if final.exists():
        os.unlink(path)
        store.freshen(oid)
        return
    if store.fsync:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    final.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o444)
    os.replace(path, final)
    if store.fsync:
        fd = os.open(final.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def download(
    store: ObjectStore,
    backend: Backend,
    wanted: dict[str, int | None],
    quarantine: Path,
    *,
    jobs: int = 8,
    stats: TransferStats,
    progress: Progress | None = None,
    keep: bool = False,
) -> dict[str, Path]:
    """Fetch the objects in ``wanted`` (id -> expected size, or None) that the store lacks.

    Each lands in ``quarantine`` and is verified there. With ``keep`` the verified files stay in
    quarantine and are returned (id -> path) so the caller can move them in dependency order;
    otherwise they enter the store at once (blobs name nothing, so any order is safe for them).
    """
    quarantine.mkdir(parents=True, exist_ok=True)
    kept: dict[str, Path] = {}
    lock = threading.Lock()

    def one(item: tuple[str, int | None]) -> None:
        oid, size = item
        if store.has(oid):
            stats.add_skipped(size if size is not None else store.size(oid), progress)
            return
        path = quarantine / oid
        try:
            n = backend.get_file(object_key(oid), path)
            _verify_file(path, oid, size, backend.describe())
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        if keep:
            with lock:
                kept[oid] = path
        else:
            adopt(store, path, oid)
        stats.add_moved(n, progress)

    run_parallel(one, wanted.items(), jobs)
    return kept
