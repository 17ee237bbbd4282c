"""Reachability: from commits to every object they need (trees, manifests, blobs)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from store.errors import MvcError, ObjectCorrupt, ObjectMissing
from store.model import Commit, FileManifest, Note, Tree, decode
from store.objects import ObjectStore


@dataclass
class WalkResult:
    """Objects reached, and the problems met on the way (for fsck)."""

    commits: set[str] = field(default_factory=set)
    objects: set[str] = field(default_factory=set)
    sizes: dict[str, int] = field(default_factory=dict)  # expected sizes of blobs
    problems: list[tuple[str, str]] = field(default_factory=list)  # (object id, message)


def load_commit(store: ObjectStore, oid: str) -> Commit:
    obj = decode(store.get(oid), oid)
    if not isinstance(obj, Commit):
        raise ObjectCorrupt(f"object {oid} is not a commit")
    return obj


def load_tree(store: ObjectStore, oid: str) -> Tree:
    obj = decode(store.get(oid), oid)
    if not isinstance(obj, Tree):
        raise ObjectCorrupt(f"object {oid} is not a tree")
    return obj


def load_cached(store: ObjectStore, cid: str, cache: dict[str, Commit]) -> Commit:
    """Commit ``cid``, read once per walk (``cache`` keeps what was read)."""
    if cid not in cache:
        cache[cid] = load_commit(store, cid)
    return cache[cid]


def ancestors(
    store: ObjectStore,
    tips: Iterable[str],
    *,
    stop: set[str] | frozenset[str] = frozenset(),
    cache: dict[str, Commit] | None = None,
    missing_ok: bool = False,
) -> set[str]:
    """Commits reachable from ``tips`` (included), not walking into ``stop``. Local reads only.

    With ``missing_ok`` a commit that is not in the store is left out instead of raising.
    """
    cache = {} if cache is None else cache
    seen: set[str] = set()
    found: set[str] = set()
    stack = [t for t in tips if t not in stop]
    while stack:
        cid = stack.pop()
        if cid in seen:
            continue
        seen.add(cid)
        try:
            commit = load_cached(store, cid, cache)
        except ObjectMissing:
            if missing_ok:
                continue
            raise
        found.add(cid)
        stack.extend(p for p in commit.parents if p not in seen and p not in stop)
    return found


def walk(
    store: ObjectStore,
    tips: Iterable[str],
    *,
    notes: Iterable[str] = (),
    verify: bool = False,
    strict: bool = False,
    on_object: Callable[[int], None] | None = None,
) -> WalkResult:
    """Everything reachable from the commits ``tips`` and the note objects ``notes``.

    Structured objects are always re-hashed and parsed. Blobs are checked for presence and
    size, and re-hashed too with ``verify``. With ``strict`` the first problem raises;
    otherwise problems are collected and the walk goes on.
    """
    result = WalkResult()
    stack = list(tips)

    def problem(oid: str, err: MvcError) -> None:
        if strict:
            raise err
        result.problems.append((oid, err.message))

    def structured(oid: str):
        result.objects.add(oid)
        try:
            return decode(store.get(oid), oid)
        except (ObjectMissing, ObjectCorrupt) as e:
            problem(oid, e)
            return None

    for noid in notes:
        note = structured(noid)
        if isinstance(note, Note):
            stack.append(note.commit)

    trees: set[str] = set()
    manifests: set[str] = set()
    while stack:
        cid = stack.pop()
        if cid in result.commits:
            continue
        result.commits.add(cid)
        commit = structured(cid)
        if commit is None:
            continue
        if not isinstance(commit, Commit):
            problem(cid, ObjectCorrupt(f"object {cid} should be a commit"))
            continue
        stack.extend(commit.parents)
        if commit.tree in trees:
            continue
        trees.add(commit.tree)
        tree = structured(commit.tree)
        if tree is None:
            continue
        if not isinstance(tree, Tree):
            problem(commit.tree, ObjectCorrupt(f"object {commit.tree} should be a tree"))
            continue
        for entry in tree.entries.values():
            if entry.kind == "blob":
                result.sizes[entry.id] = entry.size
                continue
            if entry.id in manifests:
                continue
            manifests.add(entry.id)
            manifest = structured(entry.id)
            if manifest is None:
                continue
            if not isinstance(manifest, FileManifest):
                problem(entry.id, ObjectCorrupt(f"object {entry.id} should be a file manifest"))
                continue
            for part in manifest.parts():
                result.sizes[part.id] = part.size
    for oid, size in result.sizes.items():
        result.objects.add(oid)
        try:
            actual = store.size(oid)
            if actual != size:
                raise ObjectCorrupt(f"object {oid} has {actual} bytes, expected {size}")
            if verify:
                store.get(oid)
        except (ObjectMissing, ObjectCorrupt) as e:
            problem(oid, e)
        if on_object:
            on_object(size)
    return result
