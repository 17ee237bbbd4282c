"""Checking a repository: refs point at commits, every reachable object is present and intact."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from store.errors import MvcError, ObjectCorrupt, ObjectMissing
from store.ids import hash_bytes
from store.notes import NoteStore
from store.objects import ObjectStore
from store.refs import RefStore
from store.walk import walk


@dataclass
class FsckReport:
    refs: int = 0
    commits: int = 0
    objects: int = 0
    unreachable: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def fsck(store: ObjectStore, refs: RefStore, *, full: bool = False, progress: Callable[[int], None] | None = None) -> FsckReport:
    """Check refs and re-hash every reachable object; with ``full`` every object in the store too."""
    report = FsckReport()
    tips = set()
    names: list[tuple[str, str]] = []
    try:
        listed = refs.list()
    except MvcError as e:
        report.problems.append(e.message)
        listed = {}
    names.extend(listed.items())
    try:
        branch, head = refs.head()
        if head and branch is None:
            names.append(("HEAD", head))
    except MvcError as e:
        report.problems.append(e.message)
    report.refs = len(names)
    for name, oid in names:
        if not store.has(oid):
            report.problems.append(f"{name} points at missing commit {oid}")
        else:
            tips.add(oid)
    notes = list(NoteStore(refs.root, store).all_ids())
    result = walk(store, tips, notes=notes, verify=True, on_object=progress)
    report.commits = len(result.commits)
    report.objects = len(result.objects)
    report.problems.extend(f"{msg}" for _oid, msg in result.problems)
    if full:
        for oid in store.iter_ids():
            if oid in result.objects:
                continue
            report.unreachable += 1
            try:
                data = store.path(oid).read_bytes()
                if hash_bytes(data) != oid:
                    raise ObjectCorrupt(f"unreachable object {oid} is corrupt")
            except (ObjectCorrupt, ObjectMissing, OSError) as e:
                report.problems.append(getattr(e, "message", str(e)))
    return report
