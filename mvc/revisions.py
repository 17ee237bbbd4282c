"""Revision syntax: ``HEAD``, branch/tag/pin names, full or unique-prefix commit ids, ``REF~N``, ``REF^N``.

Names are looked up as ``refs/<name>`` (when given as ``heads/x``, ``tags/x``, ``pins/x`` or
``remotes/r/x``), then as a branch, tag, pin and remote-tracking ref, in that order, then as
a commit id prefix of at least 4 hex characters.
"""

from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING

from store.errors import InvalidRefName, ObjectCorrupt, UnknownRevision
from store.ids import is_object_id
from store.model import Commit, decode
from store.paths import check_ref_name

if TYPE_CHECKING:
    from mvc.repo import Repo

_SUFFIX = re.compile(r"(~\d*|\^\d*)$")
_HEX = re.compile(r"^[0-9a-f]{4,32}$")
MIN_PREFIX = 4


def parse(rev: str) -> tuple[str, list[tuple[str, int]]]:
    """Split ``rev`` into a base name and its ``~N`` / ``^N`` steps, in application order."""
    steps: list[tuple[str, int]] = []
    base = rev.strip()
    while True:
        m = _SUFFIX.search(base)
        if not m or m.start() == 0:
            break
        token = m.group(1)
        n = int(token[1:]) if len(token) > 1 else 1
        steps.append((token[0], n))
        base = base[: m.start()]
    steps.reverse()
    return base, steps


def _ref_candidates(name: str) -> list[str]:
    if name.startswith("refs/"):
        return [name]
    out = []
    if name.split("/", 1)[0] in ("heads", "tags", "pins", "remotes") and "/" in name:
        out.append(f"refs/{name}")
    out += [f"refs/heads/{name}", f"refs/tags/{name}", f"refs/pins/{name}", f"refs/remotes/{name}"]
    return out


def _by_prefix(repo: Repo, prefix: str) -> list[str]:
    fan = repo.objects.root / prefix[:2]
    if not fan.is_dir():
        return []
    rest = prefix[2:]
    found = []
    for entry in os.scandir(fan):
        if entry.name.startswith(rest):
            oid = prefix[:2] + entry.name
            try:
                if isinstance(decode(repo.objects.get(oid), oid), Commit):
                    found.append(oid)
            except (ObjectCorrupt, UnicodeDecodeError, ValueError):
                continue
    return found


def resolve_base(repo: Repo, name: str) -> str:
    if name in ("HEAD", "@"):
        branch, oid = repo.head()
        if oid is None:
            raise UnknownRevision(f"HEAD has no commits yet (branch {branch!r} is unborn)", hint="make the first commit with `mvc commit DIR -m ...`")
        return oid
    if is_object_id(name) and repo.objects.has(name):
        try:
            obj = decode(repo.objects.get(name), name)
        except ObjectCorrupt:
            obj = None
        if isinstance(obj, Commit):
            return name
        raise UnknownRevision(f"{name[:12]} is an object but not a commit", hint="pass a commit id, branch, tag or pin")
    try:
        if not name.startswith("refs/"):
            check_ref_name(name)
        for full in _ref_candidates(name):
            try:
                oid = repo.refs.read(full)
            except InvalidRefName:
                continue
            if oid:
                return oid
    except InvalidRefName:
        pass
    if _HEX.match(name):
        found = _by_prefix(repo, name)
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            raise UnknownRevision(
                f"commit id prefix {name!r} is ambiguous: {', '.join(f[:12] for f in sorted(found)[:5])}",
                hint="give more characters of the id",
            )
    raise UnknownRevision(f"unknown revision {name!r}: no branch, tag, pin or commit by that name")


def resolve(repo: Repo, rev: str) -> str:
    """The commit id that ``rev`` names, or UnknownRevision."""
    if not rev or not rev.strip():
        raise UnknownRevision("empty revision")
    base, steps = parse(rev)
    oid = resolve_base(repo, base)
    for kind, n in steps:
        commit = repo.read_commit(oid)
        if kind == "^":
            if n == 0:
                continue
            if n > len(commit.parents):
                raise UnknownRevision(f"{rev}: commit {oid[:12]} has {len(commit.parents)} parent(s), not {n}")
            oid = commit.parents[n - 1]
            continue
        for i in range(n):
            if not commit.parents:
                raise UnknownRevision(f"{rev}: history of {base} is only {i} commit(s) deep", hint="`mvc log` shows how far back it goes")
            oid = commit.parents[0]
            if i + 1 < n:
                commit = repo.read_commit(oid)
    return oid
