"""Pins: protected refs for known-good models that CI deploys, with recorded file checksums.

``refs/pins/<name>`` points at the pinned commit. Pinning also attaches a note to the commit
recording the sha256 of every file, so a deployed copy can be checked with standard tools and
``verify`` can prove the store still rebuilds exactly those bytes. Moving or removing a pin
needs ``force``; every move is in the pin's reflog with who, when and why.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mvc.errors import PinProtected, PinVerificationFailed, UnknownRevision
from store.errors import MvcError
from store.materialize import entry_parts
from store.refs import full_ref_name, whoami
from store.snapshot import scan

if TYPE_CHECKING:
    from mvc.repo import Repo

CHUNK = 8 * 1024 * 1024


@dataclass
class PinInfo:
    name: str
    commit: str
    reason: str = ""
    who: str = ""
    time: str = ""
    sha256: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "commit": self.commit, "reason": self.reason, "who": self.who, "time": self.time, "files": len(self.sha256)}


def stored_sha256(repo: Repo, cid: str) -> dict[str, str]:
    """sha256 of every file of commit ``cid``, rebuilt from the store (each part re-hashed)."""
    tree = repo.read_tree(repo.read_commit(cid).tree)
    out = {}
    for path, entry in sorted(tree.entries.items()):
        h = hashlib.sha256()
        for part in entry_parts(repo.objects, entry):
            h.update(repo.objects.get(part.id))
        out[path] = h.hexdigest()
    return out


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def pin(repo: Repo, name: str, rev: str = "HEAD", *, reason: str = "", force: bool = False, who: str | None = None) -> PinInfo:
    """Pin ``rev`` as ``name``; moving an existing pin to another commit needs ``force``."""
    ref = full_ref_name("pins", name)
    cid = repo.resolve(rev)
    current = repo.refs.read(ref)
    if current is not None and current != cid and not force:
        raise PinProtected(f"pin {name!r} is at {current[:12]}; moving it to {cid[:12]} needs --force")
    who = who or whoami()
    checksums = stored_sha256(repo, cid)
    repo.notes.add(cid, {"kind": "pin", "pin": name, "reason": reason, "sha256": checksums}, who)
    if current != cid:
        verb = "moved" if current else "created"
        repo.refs.compare_and_swap(ref, current, cid, message=f"pin: {verb} at {rev}" + (f": {reason}" if reason else ""), who=who)
        repo.index().sync_refs()
    return info(repo, name)


def unpin(repo: Repo, name: str, *, force: bool = False, reason: str = "", who: str | None = None) -> str:
    ref = full_ref_name("pins", name)
    current = repo.refs.read(ref)
    if current is None:
        raise UnknownRevision(f"no pin named {name!r}", hint="list pins with `mvc pin --list`")
    if not force:
        raise PinProtected(f"pin {name!r} is protected; removing it needs --force")
    repo.refs.compare_and_swap(ref, current, None, message="pin: removed" + (f": {reason}" if reason else ""), who=who)
    repo.index().sync_refs()
    return current


def info(repo: Repo, name: str) -> PinInfo:
    """The pin ``name`` with the record made when it was (last) pinned at its commit."""
    cid = repo.refs.read(full_ref_name("pins", name))
    if cid is None:
        raise UnknownRevision(f"no pin named {name!r}", hint="list pins with `mvc pin --list`")
    result = PinInfo(name, cid)
    for _oid, note in repo.notes.list(cid):
        if note.data.get("kind") == "pin" and note.data.get("pin") == name:
            result.reason = str(note.data.get("reason", ""))
            result.who = note.author
            result.time = note.time
            sha = note.data.get("sha256")
            result.sha256 = dict(sha) if isinstance(sha, dict) else {}
    return result


def list_pins(repo: Repo) -> list[PinInfo]:
    return [info(repo, full[len("refs/pins/") :]) for full in repo.refs.list("refs/pins/")]


def verify(repo: Repo, name: str, directory: Path | str | None = None) -> PinInfo:
    """Re-hash the pinned commit's objects and compare with the recorded sha256 values;
    with ``directory``, also check a deployed copy file by file. Raises PinVerificationFailed."""
    p = info(repo, name)
    if not p.sha256:
        raise PinVerificationFailed(f"pin {name!r} has no checksum record for {p.commit[:12]}", hint=f"re-pin it: mvc pin {name} {p.commit[:12]} --force")
    problems: list[str] = []
    try:
        stored = stored_sha256(repo, p.commit)
    except MvcError as e:
        raise PinVerificationFailed(f"pin {name!r}: the store cannot rebuild {p.commit[:12]}: {e.message}") from None
    for path in sorted(set(stored) | set(p.sha256)):
        if stored.get(path) != p.sha256.get(path):
            problems.append(f"store: {path} does not match the pinned checksum")
    if directory is not None:
        root = Path(directory)
        if not root.is_dir():
            raise PinVerificationFailed(f"{root} is not a directory")
        present = {f.rel: f.path for f in scan(root, follow_symlinks=True)}
        for path, digest in sorted(p.sha256.items()):
            if path not in present:
                problems.append(f"{root}: {path} is missing")
            elif file_sha256(present[path]) != digest:
                problems.append(f"{root}: {path} differs from the pinned file")
        for path in sorted(set(present) - set(p.sha256)):
            problems.append(f"{root}: {path} is not part of the pinned model")
    if problems:
        shown = "; ".join(problems[:5]) + (f" (and {len(problems) - 5} more)" if len(problems) > 5 else "")
        raise PinVerificationFailed(f"pin {name!r} at {p.commit[:12]} failed verification: {shown}")
    return p
