"""Garbage collection: delete objects that nothing can reach and that are older than a grace period.

Roots are every ref (branches, tags, pins, remote-tracking refs), HEAD, every commit any
reflog entry names, and every note (with the commit it is attached to), so anything a user could still ask for by ``mvc reflog`` survives. The
grace period protects objects written by a command that has not moved its ref yet.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from store.errors import ObjectMissing
from store.notes import NoteStore
from store.objects import ObjectStore
from store.refs import ZERO, RefLock, RefStore
from store.walk import walk


@dataclass
class GcReport:
    reachable: int
    removed: int
    removed_bytes: int
    kept_recent: int
    tmp_removed: int


def roots(refs: RefStore) -> set[str]:
    """Every commit id a ref, HEAD or reflog entry names (notes are added by ``gc``)."""
    tips = set(refs.list().values())
    _branch, head = refs.head()
    if head:
        tips.add(head)
    for _name, entries in refs.iter_reflogs():
        for e in entries:
            tips.update(x for x in (e.old, e.new) if x != ZERO)
    return tips


def gc(
    store: ObjectStore, refs: RefStore, *, grace_seconds: float, dry_run: bool = False, progress: Callable[[int], None] | None = None
) -> GcReport:
    """Delete unreachable objects older than ``grace_seconds``. Holds the repository's gc lock."""
    with RefLock(refs.root / "locks" / "gc.lock", "gc", timeout=0.5):
        tips = {t for t in roots(refs) if store.has(t)}
        notes = [n for n in NoteStore(refs.root, store).all_ids() if store.has(n)]
        live = walk(store, tips, notes=notes).objects
        cutoff = time.time() - grace_seconds
        removed = removed_bytes = recent = 0
        for oid in list(store.iter_ids()):
            if progress:
                progress(1)
            if oid in live:
                continue
            try:
                if store.mtime(oid) > cutoff:
                    recent += 1
                    continue
                size = store.size(oid)
            except (FileNotFoundError, ObjectMissing):
                continue
            if not dry_run:
                store.delete(oid)
            removed += 1
            removed_bytes += size
        tmp_removed = 0 if dry_run else store.clean_tmp(max(grace_seconds, 3600.0))
        return GcReport(len(live), removed, removed_bytes, recent, tmp_removed)
