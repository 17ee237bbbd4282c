"""Turning a model directory into a tree: scanning, validating, splitting and storing files.

safetensors files are split per tensor (tensors over ``MAX_PART`` into fixed-size parts) so an
identical tensor is stored once whatever file, shard or offset it sits at. Other files are
stored whole when small and as content-defined chunks (FastCDC) when large. Every header is
validated before any object is written, so a malformed file stores nothing.
"""

from __future__ import annotations

import fnmatch
import json
import mmap
import os
import stat as stat_mod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from store.errors import MalformedFile, SourceChanged, UnsafePath
from store.ids import hash_bytes, new_hasher
from store.model import FileManifest, Part, TensorEntry, Tree, TreeEntry, decode
from store.objects import ObjectBatch, ObjectStore
from store.paths import check_tree_path
from store.safetensors import Header, read_header
from store.statcache import StatCache, now_ns

MAX_PART = 64 * 1024 * 1024
SMALL_FILE = 4 * 1024 * 1024
CDC_MIN, CDC_AVG, CDC_MAX = 512 * 1024, 2 * 1024 * 1024, 8 * 1024 * 1024
ALWAYS_IGNORED = {".mvc", ".git", "__pycache__", ".DS_Store"}
IGNORE_FILE = ".mvcignore"
SHARD_INDEX_SUFFIX = ".safetensors.index.json"

Progress = Callable[[int], None]


@dataclass
class SnapshotStats:
    """What a snapshot cost: bytes written as new objects, bytes already stored, files read."""

    bytes_written: int = 0
    bytes_existing: int = 0
    files_read: int = 0
    files_cached: int = 0


@dataclass
class SourceFile:
    """A regular file found in a model directory."""

    rel: str
    path: Path
    stat: os.stat_result
    header: Header | None = None  # set for safetensors files


def _ignore_patterns(root: Path) -> list[str]:
    try:
        lines = (root / IGNORE_FILE).read_text().splitlines()
    except FileNotFoundError:
        return []
    return [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]


def _ignored(rel: str, patterns: list[str]) -> bool:
    name = rel.rsplit("/", 1)[-1]
    return any(fnmatch.fnmatchcase(rel, p) or fnmatch.fnmatchcase(name, p) or rel.startswith(p.rstrip("/") + "/") for p in patterns)


def scan(root: Path, *, follow_symlinks: bool = False) -> list[SourceFile]:
    """Every file to snapshot under ``root``, sorted by path, with safetensors headers validated.

    Symlinks are refused unless ``follow_symlinks`` (their target's content is then stored);
    devices, sockets and FIFOs are always refused; paths are checked like tree paths.
    """
    root = Path(root)
    if not root.is_dir():
        raise UnsafePath(f"{root} is not a directory", hint="pass the directory a model was saved to with save_pretrained")
    patterns = _ignore_patterns(root)
    files: list[SourceFile] = []
    root_st = os.stat(root)
    # each directory to visit, with the (device, inode) of the directories above it: a followed
    # symlink that leads back to one of them would otherwise be walked until ELOOP
    stack: list[tuple[str, frozenset]] = [("", frozenset({(root_st.st_dev, root_st.st_ino)}))]
    while stack:
        reldir, ancestors = stack.pop()
        with os.scandir(root / reldir) as it:
            entries = sorted(it, key=lambda e: e.name)
        for entry in entries:
            rel = f"{reldir}/{entry.name}" if reldir else entry.name
            if entry.name in ALWAYS_IGNORED or _ignored(rel, patterns):
                continue
            try:
                check_tree_path(rel)
            except UnsafePath as e:
                raise UnsafePath(f"cannot commit {root / rel!s}: {e.message}") from None
            st = os.lstat(entry.path)
            if stat_mod.S_ISLNK(st.st_mode):
                if not follow_symlinks:
                    raise UnsafePath(
                        f"{rel} is a symlink; mvc stores file contents, not links",
                        hint="pass --follow-symlinks to store what it points to, or add it to .mvcignore",
                    )
                try:
                    st = os.stat(entry.path)
                except FileNotFoundError:
                    raise UnsafePath(f"{rel} is a dangling symlink") from None
                except OSError as e:
                    raise UnsafePath(f"{rel} is a symlink that cannot be followed: {e.strerror}") from None
            if stat_mod.S_ISDIR(st.st_mode):
                key = (st.st_dev, st.st_ino)
                if key in ancestors:
                    raise UnsafePath(f"{rel} is a symlink loop: it leads back to a directory that contains it")
                stack.append((rel, ancestors | {key}))
            elif stat_mod.S_ISREG(st.st_mode):
                files.append(SourceFile(rel, Path(entry.path), st))
            else:
                raise UnsafePath(f"{rel} is not a regular file or directory")
    files.sort(key=lambda f: f.rel)
    return files


def validate(files: list[SourceFile], everything: list[SourceFile] | None = None) -> None:
    """Parse the safetensors headers of ``files`` and check sharded-model indexes against the shards.

    ``everything`` is the whole directory when ``files`` are only the ones to be read (the rest
    matched the stat cache). An index is checked whenever it, or a shard it names, is read or
    missing; the headers of unchanged shards are then read as well.
    """
    for f in files:
        if f.rel.endswith(".safetensors"):
            with open(f.path, "rb") as fh:
                f.header = read_header(fh, f.stat.st_size, f.rel)
    changed = {f.rel for f in files}
    everything = files if everything is None else everything
    by_rel = {f.rel: f for f in everything}
    for f in everything:
        if f.rel.endswith(SHARD_INDEX_SUFFIX):
            _check_shard_index(f, by_rel, changed)


def _check_shard_index(index: SourceFile, by_rel: dict[str, SourceFile], changed: set[str]) -> None:
    base = index.rel.rsplit("/", 1)[0] + "/" if "/" in index.rel else ""
    try:
        data = json.loads(index.path.read_text())
        weight_map = data["weight_map"]
        assert isinstance(weight_map, dict)
    except (ValueError, KeyError, AssertionError, UnicodeDecodeError):
        raise MalformedFile(f"{index.rel}: not a valid sharded-model index (no weight_map)") from None
    shard_rels = {base + str(shard) for shard in weight_map.values()}
    if index.rel not in changed and all(r in by_rel and r not in changed for r in shard_rels):
        return  # neither the index nor its shards changed since they were last checked together
    names: dict[str, set[str]] = {}
    for tensor, shard in weight_map.items():
        shard_file = by_rel.get(base + str(shard))
        if shard_file is None or not shard_file.rel.endswith(".safetensors"):
            raise MalformedFile(f"{index.rel}: tensor {tensor!r} is mapped to shard {shard!r}, which is not in the directory")
        if shard_file.header is None:  # unchanged per the stat cache: read its header only
            with open(shard_file.path, "rb") as fh:
                shard_file.header = read_header(fh, shard_file.stat.st_size, shard_file.rel)
        if shard not in names:
            names[shard] = {t.name for t in shard_file.header.tensors}
        if tensor not in names[shard]:
            raise MalformedFile(f"{index.rel}: tensor {tensor!r} is not in shard {shard!r}")


def _open_view(path: Path, size: int) -> tuple[memoryview, Callable[[], None]]:
    if size == 0:
        return memoryview(b""), lambda: None
    with open(path, "rb") as fh:
        mm = mmap.mmap(fh.fileno(), size, access=mmap.ACCESS_READ)
    view = memoryview(mm)

    def close() -> None:
        view.release()
        mm.close()

    return view, close


def _emit(batch: ObjectBatch | None, data: memoryview, oid: str | None = None) -> Part:
    if oid is None:
        oid = hash_bytes(data)
    if batch is not None:
        batch.add(data, oid)
    return Part(oid, len(data))


def split_file(src: SourceFile, batch: ObjectBatch | None, progress: Progress | None = None) -> tuple[TreeEntry, FileManifest | None]:
    """Hash ``src`` into parts, storing them through ``batch`` (None: hash only, for status).

    Returns the tree entry and, for split files, the manifest (already added to ``batch``).
    """
    size = src.stat.st_size
    view, close = _open_view(src.path, size)
    try:
        if len(view) != size:
            raise SourceChanged(f"{src.rel} changed size while being read")
        result = _split_view(src, view, batch, progress)
    except BaseException:
        try:
            close()
        except BufferError:
            pass  # the traceback in flight still holds slices of the map; it is unmapped when they are freed
        raise
    close()
    return result


def _split_view(src: SourceFile, view: memoryview, batch: ObjectBatch | None, progress: Progress | None) -> tuple[TreeEntry, FileManifest | None]:
    # Separate from split_file so that every slice of ``view`` is released before it closes.
    size = len(view)
    mode = "755" if src.stat.st_mode & 0o100 else "644"
    if src.header is None and size <= SMALL_FILE:
        oid = _emit(batch, view).id
        if progress:
            progress(size)
        return TreeEntry("blob", oid, size, oid, mode), None
    whole = new_hasher()
    if src.header is not None:
        header = _emit(batch, view[: src.header.raw_size])
        whole.update(view[: src.header.raw_size])
        tensors = []
        for t in src.header.tensors:
            data = view[t.begin : t.end]
            whole.update(data)
            tid = hash_bytes(data)
            if len(data) <= MAX_PART:
                parts: tuple[Part, ...] = (_emit(batch, data, tid),)
            else:
                parts = tuple(_emit(batch, data[i : i + MAX_PART]) for i in range(0, len(data), MAX_PART))
            tensors.append(TensorEntry(t.name, t.dtype, t.shape, tid, len(data), parts))
            if progress:
                progress(len(data))
        manifest = FileManifest("safetensors", size, whole.hexdigest(), header=header, tensors=tuple(tensors))
    else:
        from pyfastcdc import FastCDC

        chunks = []
        for c in FastCDC(avg_size=CDC_AVG, min_size=CDC_MIN, max_size=CDC_MAX).cut_buf(view):
            data = view[c.offset : c.offset + c.length]
            whole.update(data)
            chunks.append(_emit(batch, data))
            if progress:
                progress(len(data))
        manifest = FileManifest("chunks", size, whole.hexdigest(), chunks=tuple(chunks))
    encoded = manifest.encode()
    moid = hash_bytes(encoded)
    if batch is not None:
        batch.add(encoded, moid)
    return TreeEntry("file", moid, size, manifest.hash, mode), manifest


def _object_ids(store: ObjectStore, entry: TreeEntry) -> list[str]:
    if entry.kind == "blob":
        return [entry.id]
    manifest = decode(store.get(entry.id), entry.id)
    parts = manifest.parts() if isinstance(manifest, FileManifest) else []
    return [entry.id, *(p.id for p in parts)]


def _unchanged_since(src: SourceFile) -> None:
    st = os.stat(src.path)
    if (st.st_size, st.st_mtime_ns) != (src.stat.st_size, src.stat.st_mtime_ns):
        raise SourceChanged(f"{src.rel} changed while being read")


def snapshot(
    store: ObjectStore,
    root: Path,
    *,
    cache: StatCache | None = None,
    follow_symlinks: bool = False,
    progress: Progress | None = None,
    on_total: Callable[[int], None] | None = None,
) -> tuple[Tree, SnapshotStats]:
    """Store every file of ``root``; return its tree (not written here) and what it cost.

    Files whose stat matches the cache, and whose objects are present, are not read.
    """
    root = Path(root).resolve()
    files = scan(root, follow_symlinks=follow_symlinks)
    entries: dict[str, TreeEntry] = {}
    todo: list[SourceFile] = []
    stats = SnapshotStats()
    for f in files:
        hit = cache.lookup(root, f.rel, f.stat) if cache else None
        if hit is not None and store.has(hit.id):
            # The new commit will name every part too: refresh them all so that a concurrent
            # gc's grace period protects them (docs/format.md, "gc").
            for oid in _object_ids(store, hit):
                store.freshen(oid)
            entries[f.rel] = hit
            stats.files_cached += 1
        else:
            todo.append(f)
    validate(todo, files)
    if on_total:
        on_total(sum(f.stat.st_size for f in todo))
    for f in todo:
        started = now_ns()
        with store.batch() as batch:
            entry, _ = split_file(f, batch, progress)
            _unchanged_since(f)
        stats.bytes_written += batch.bytes_written
        stats.bytes_existing += batch.bytes_existing
        stats.files_read += 1
        entries[f.rel] = entry
        if cache:
            cache.record(root, f.rel, f.stat, entry, started)
    if cache:
        cache.forget_missing(root, {f.rel for f in files})
        cache.save()
    return Tree(entries), stats


def hash_tree(
    root: Path, *, cache: StatCache | None = None, follow_symlinks: bool = False
) -> tuple[Tree, dict[str, FileManifest]]:
    """The tree ``root`` would commit to, without storing anything; manifests of files that were read."""
    root = Path(root).resolve()
    files = scan(root, follow_symlinks=follow_symlinks)
    entries: dict[str, TreeEntry] = {}
    manifests: dict[str, FileManifest] = {}
    todo = []
    for f in files:
        hit = cache.lookup(root, f.rel, f.stat) if cache else None
        if hit is not None:
            entries[f.rel] = hit
        else:
            todo.append(f)
    validate(todo, files)
    for f in todo:
        started = now_ns()
        entry, manifest = split_file(f, None)
        entries[f.rel] = entry
        if manifest is not None:
            manifests[f.rel] = manifest
        if cache:
            cache.record(root, f.rel, f.stat, entry, started)
    if cache:
        cache.save()
    return Tree(entries), manifests

