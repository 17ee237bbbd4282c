"""What push, fetch and pull share: result types, local history walks, quarantine, parsing of remote refs and notes lists."""

from __future__ import annotations

import os
import shutil
import socket
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from store.errors import ObjectCorrupt, RemoteCorrupt
from store.ids import is_object_id
from store.model import Commit, FileManifest, Tree, decode
from store.objects import ObjectStore
from store.refs import pid_alive
from store.transfer import TransferStats
from store.walk import ancestors

if TYPE_CHECKING:
    from mvc.repo import Repo

PUSHABLE = ("refs/heads/", "refs/tags/", "refs/pins/")


@dataclass
class RefUpdate:
    """One ref a push or fetch looked at."""

    ref: str
    old: str | None
    new: str | None
    status: str  # up-to-date, created, fast-forward, forced, kept-local

    def to_json(self) -> dict:
        return {"ref": self.ref, "old": self.old, "new": self.new, "status": self.status}


@dataclass
class PushResult:
    remote: str
    updates: list[RefUpdate] = field(default_factory=list)
    stats: TransferStats = field(default_factory=TransferStats)
    commits: int = 0
    notes: int = 0

    def to_json(self) -> dict:
        return {"remote": self.remote, "updates": [u.to_json() for u in self.updates], "commits": self.commits, "notes": self.notes, **self.stats.to_json()}


@dataclass
class FetchResult:
    remote: str
    updates: list[RefUpdate] = field(default_factory=list)
    stats: TransferStats = field(default_factory=TransferStats)
    commits: int = 0
    notes: int = 0
    remote_head: str | None = None  # the branch the remote's HEAD names

    def to_json(self) -> dict:
        return {"remote": self.remote, "updates": [u.to_json() for u in self.updates], "commits": self.commits, "notes": self.notes,
                "remote_head": self.remote_head, **self.stats.to_json()}


@dataclass
class PullResult:
    fetch: FetchResult
    branch: str
    old: str | None
    new: str | None
    status: str  # up-to-date, fast-forward
    worktree: Path | None = None

    def to_json(self) -> dict:
        return {"branch": self.branch, "old": self.old, "new": self.new, "status": self.status,
                "worktree": str(self.worktree) if self.worktree else None, "fetch": self.fetch.to_json()}


# -- local history helpers --------------------------------------------------------------------
def is_ancestor(store: ObjectStore, a: str, b: str) -> bool:
    """True when commit ``a`` is ``b`` or in ``b``'s history (both present locally)."""
    return a == b or a in ancestors(store, [b])


def parents_first(commits: set[str], cache: dict[str, Commit]) -> list[str]:
    """``commits`` with every parent before its children."""
    order: list[str] = []
    state: dict[str, int] = {}
    for root in sorted(commits):
        stack = [(root, False)]
        while stack:
            cid, expanded = stack.pop()
            if expanded:
                order.append(cid)
                continue
            if state.get(cid):
                continue
            state[cid] = 1
            stack.append((cid, True))
            stack.extend((p, False) for p in cache[cid].parents if p in commits and not state.get(p))
    return order


@dataclass
class TreeObjects:
    """The objects of some commits' trees: structured objects by kind, and blob sizes."""

    trees: set[str] = field(default_factory=set)
    manifests: set[str] = field(default_factory=set)
    blobs: dict[str, int] = field(default_factory=dict)

    def all(self) -> set[str]:
        return self.trees | self.manifests | set(self.blobs)


def tree_objects(store: ObjectStore, commits: Iterable[Commit]) -> TreeObjects:
    out = TreeObjects()
    for commit in commits:
        if commit.tree in out.trees:
            continue
        out.trees.add(commit.tree)
        tree = decode(store.get(commit.tree), commit.tree)
        if not isinstance(tree, Tree):
            raise ObjectCorrupt(f"object {commit.tree} should be a tree")
        for entry in tree.entries.values():
            if entry.kind == "blob":
                out.blobs[entry.id] = entry.size
            elif entry.id not in out.manifests:
                out.manifests.add(entry.id)
                manifest = decode(store.get(entry.id), entry.id)
                if not isinstance(manifest, FileManifest):
                    raise ObjectCorrupt(f"object {entry.id} should be a file manifest")
                for part in manifest.parts():
                    out.blobs[part.id] = part.size
    return out


def local_tips(repo: Repo) -> set[str]:
    tips = set(repo.refs.list().values())
    _branch, head = repo.refs.head()
    if head:
        tips.add(head)
    return {t for t in tips if repo.objects.has(t)}


def noted_commits(repo: Repo) -> set[str]:
    d = repo.notes.dir
    if not d.is_dir():
        return set()
    return {e.name for e in os.scandir(d) if is_object_id(e.name)}


def parse_ref(key: str, state: tuple[bytes, str] | None, where: str) -> str | None:
    if state is None:
        return None
    text = state[0].decode("utf-8", "replace").strip()
    if not is_object_id(text):
        raise RemoteCorrupt(f"ref {key} on {where} is damaged: {text[:40]!r}", hint="repair it on the remote (push --force from a good copy)")
    return text


def parse_note_ids(state: tuple[bytes, str] | None) -> list[str]:
    if state is None:
        return []
    return [x for x in state[0].decode("utf-8", "replace").split() if is_object_id(x)]


def note_lines(ids: list[str]) -> bytes:
    return "".join(i + "\n" for i in ids).encode()



class Quarantine:
    """A private directory under ``.mvc/tmp`` for downloads; removed (with anything unverified) on exit.

    A fetch killed with SIGKILL cannot clean up: the next one removes quarantines left by dead
    processes of this host (and any older than a day).
    """

    def __init__(self, repo: Repo) -> None:
        self.tmp = repo.dir / "tmp"
        self.host = socket.gethostname().replace("-", "_")[:40]
        self.path = self.tmp / f"quarantine-{self.host}-{os.getpid()}-{uuid.uuid4().hex[:8]}"

    def _sweep(self) -> None:
        for entry in self.tmp.glob("quarantine-*"):
            parts = entry.name.split("-")
            try:
                host, pid = parts[1], int(parts[2])
                stale = (host == self.host and pid != os.getpid() and not pid_alive(pid)) or time.time() - entry.stat().st_mtime > 86400
            except (IndexError, ValueError, OSError):
                continue
            if stale:
                shutil.rmtree(entry, ignore_errors=True)

    def __enter__(self) -> Path:
        self.path.mkdir(parents=True, exist_ok=True)
        self._sweep()
        return self.path

    def __exit__(self, *exc: object) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def read_structured(store: ObjectStore, oid: str, fetched: dict[str, Path], kind: type):
    what = kind.__name__.lower().replace("filemanifest", "file manifest")
    if oid not in fetched:
        obj = decode(store.get(oid), oid)
    else:
        try:
            obj = decode(fetched[oid].read_bytes(), oid)
        except ObjectCorrupt as e:
            raise RemoteCorrupt(f"object {oid} from the remote should be a {what}: {e.message}") from None
    if not isinstance(obj, kind):
        raise RemoteCorrupt(f"object {oid} should be a {what}, but is a {type(obj).__name__.lower()}")
    return obj

