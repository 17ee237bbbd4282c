"""Notes: results attached to a commit after the fact, never by rewriting the commit.

A note is a ``note`` object in the store. ``notes/<commit id>`` lists the ids of the notes
attached to that commit, one per line, append-only; gc treats every listed note (and the
commit it names) as reachable.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from store.errors import ObjectCorrupt
from store.ids import is_object_id
from store.model import Note, decode
from store.objects import ObjectStore
from store.refs import utc_now


class NoteStore:
    def __init__(self, root: Path, objects: ObjectStore, *, fsync: bool = True) -> None:
        self.dir = Path(root) / "notes"
        self.objects = objects
        self.fsync = fsync

    def add(self, commit: str, data: dict[str, Any], author: str) -> str:
        """Store a note on ``commit`` and return its id."""
        if not is_object_id(commit):
            raise ValueError(f"not a commit id: {commit!r}")
        note = Note(commit, author, utc_now(), data)
        oid = self.objects.put(note.encode())
        self._append(commit, oid)
        return oid

    def attach(self, commit: str, oid: str) -> bool:
        """List the stored note ``oid`` on ``commit`` (fetch brings notes this way); False if listed already."""
        if not is_object_id(commit) or not is_object_id(oid):
            raise ValueError(f"not an object id: {commit!r} / {oid!r}")
        if oid in self.ids(commit):
            return False
        self._append(commit, oid)
        return True

    def _append(self, commit: str, oid: str) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.dir / commit, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, (oid + "\n").encode())
            if self.fsync:
                os.fsync(fd)
        finally:
            os.close(fd)

    def ids(self, commit: str) -> list[str]:
        try:
            lines = (self.dir / commit).read_text().split()
        except FileNotFoundError:
            return []
        return [x for x in lines if is_object_id(x)]

    def list(self, commit: str) -> list[tuple[str, Note]]:
        """The notes on ``commit``, oldest first."""
        out = []
        for oid in self.ids(commit):
            note = decode(self.objects.get(oid), oid)
            if not isinstance(note, Note) or note.commit != commit:
                raise ObjectCorrupt(f"object {oid} listed as a note on {commit[:12]} is not one")
            out.append((oid, note))
        return out

    def all_ids(self) -> Iterator[str]:
        """Every listed note id (gc roots)."""
        if not self.dir.is_dir():
            return
        for entry in os.scandir(self.dir):
            if is_object_id(entry.name):
                yield from self.ids(entry.name)
