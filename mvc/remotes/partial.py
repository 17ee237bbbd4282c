"""Partial pull: some files or tensors of a remote commit, without moving any ref."""

from __future__ import annotations

import fnmatch
import json
import os
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from mvc.errors import (
    DirtyWorktree,
    InvalidArgument,
    NoWorktree,
    UnknownRevision,
)
from mvc.remotes.common import Quarantine, parse_ref, read_structured
from mvc.remotes.config import get_remote
from store.backends import Backend
from store.errors import ObjectCorrupt
from store.ids import hash_bytes
from store.materialize import safe_parent, write_file
from store.model import Commit, FileManifest, Tree, TreeEntry
from store.objects import ObjectStore
from store.paths import check_ref_name
from store.transfer import Progress, TransferStats, adopt, download

if TYPE_CHECKING:
    from mvc.repo import Repo


@dataclass
class PartialResult:
    commit: str
    files: list[str]
    tensors: dict[str, list[str]]
    output: Path
    stats: TransferStats

    def to_json(self) -> dict:
        return {"commit": self.commit, "files": self.files, "tensors": self.tensors, "output": str(self.output), **self.stats.to_json()}


def _select(tree: Tree, patterns: list[str]) -> tuple[list[str], dict[str, list[str]]]:
    """Whole files matched by path globs, and ``FILE:TENSOR`` globs (file -> tensor globs)."""
    whole: set[str] = set()
    tensor_globs: dict[str, list[str]] = {}
    for pat in patterns:
        file_pat, sep, tensor_pat = pat.partition(":")
        hits = [p for p in tree.entries if fnmatch.fnmatchcase(p, file_pat) or fnmatch.fnmatchcase(p.rsplit("/", 1)[-1], file_pat)]
        if not hits:
            raise InvalidArgument(f"--only {pat!r} matches no file of the commit", hint="`mvc show REV` lists its files")
        for p in hits:
            if sep:
                tensor_globs.setdefault(p, []).append(tensor_pat)
            else:
                whole.add(p)
    return sorted(whole), {p: g for p, g in tensor_globs.items() if p not in whole}


def _write_tensor_subset(store: ObjectStore, manifest: FileManifest, names: list[str], dest: Path) -> None:
    """A safetensors file holding only ``names`` of ``manifest``'s tensors, rebuilt from verified blobs."""
    by_name = {t.name: t for t in manifest.tensors}
    header: dict = {}
    assert manifest.header is not None
    original = json.loads(store.get(manifest.header.id)[8:].decode("utf-8"))
    if isinstance(original.get("__metadata__"), dict):
        header["__metadata__"] = original["__metadata__"]
    offset = 0
    for name in names:
        t = by_name[name]
        header[name] = {"dtype": t.dtype, "shape": list(t.shape), "data_offsets": [offset, offset + t.size]}
        offset += t.size
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name[:40]}.", suffix=".mvc-tmp", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(struct.pack("<Q", len(raw)) + raw)
            for name in names:
                t = by_name[name]
                data = b"".join(store.get(p.id) for p in t.parts)
                if hash_bytes(data) != t.id:
                    raise ObjectCorrupt(f"tensor {name} does not match its recorded id")
                f.write(data)
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def pull_partial(
    repo: Repo, remote: str, branch: str, patterns: list[str], *, output: Path | str | None = None, force: bool = False,
    jobs: int | None = None, backend: Backend | None = None, progress: Progress | None = None,
) -> PartialResult:
    """Download only some files (``tokenizer*``) or tensors (``model.safetensors:*embed*``) of ``remote``'s ``branch``.

    Their blobs (verified) enter the store and the files are written into ``output`` (default:
    the worktree, for whole files only). No ref moves and the commit itself is not stored, so no
    local ref or commit ever names objects that are missing; a later full pull reuses the blobs.
    """
    cfg = get_remote(repo, remote)
    jobs = jobs or cfg.jobs
    backend = backend or cfg.open(jobs)
    store = repo.objects
    ref = f"refs/heads/{check_ref_name(branch)}"
    cid = parse_ref(ref, backend.read_ref(ref), backend.describe())
    if cid is None:
        raise UnknownRevision(f"{remote} has no branch {branch!r}")
    stats = TransferStats()
    target = Path(output).resolve() if output is not None else repo.worktree
    if target is None:
        raise NoWorktree("no worktree recorded for this repository: pass -o DIR to write the selected files somewhere")
    with Quarantine(repo) as q:
        fetched = download(store, backend, {cid: None}, q, jobs=jobs, stats=stats, keep=True)
        commit = read_structured(store, cid, fetched, Commit)
        fetched.update(download(store, backend, {commit.tree: None}, q, jobs=jobs, stats=stats, keep=True))
        tree = read_structured(store, commit.tree, fetched, Tree)
        whole, tensor_globs = _select(tree, [p.strip() for p in patterns if p.strip()])
        if tensor_globs and output is None:
            raise InvalidArgument("tensor selections (FILE:TENSOR) write partial model files: pass -o DIR", hint="the worktree keeps whole files only")
        if output is None and not force:
            _refuse_dirty(repo, target, whole)
        files = whole + sorted(tensor_globs)
        manifests = {tree.entries[p].id: None for p in files if tree.entries[p].kind == "file"}
        fetched.update(download(store, backend, manifests, q, jobs=jobs, stats=stats, keep=True))
        blobs: dict[str, int] = {}
        chosen: dict[str, list[str]] = {}
        for p in files:
            entry = tree.entries[p]
            if entry.kind == "blob":
                if p in tensor_globs:
                    raise InvalidArgument(f"{p} is not a safetensors file: select it whole")
                blobs[entry.id] = entry.size
                continue
            manifest = read_structured(store, entry.id, fetched, FileManifest)
            if p in tensor_globs:
                if manifest.format != "safetensors":
                    raise InvalidArgument(f"{p} is not a safetensors file: select it whole")
                names = [t.name for t in manifest.tensors if any(fnmatch.fnmatchcase(t.name, g) for g in tensor_globs[p])]
                if not names:
                    raise InvalidArgument(f"no tensor of {p} matches {', '.join(tensor_globs[p])}")
                chosen[p] = names
                assert manifest.header is not None
                blobs[manifest.header.id] = manifest.header.size
                for t in manifest.tensors:
                    if t.name in names:
                        blobs.update({part.id: part.size for part in t.parts})
            else:
                blobs.update({part.id: part.size for part in manifest.parts()})
        if progress:
            progress.set_total(sum(blobs.values()))
        download(store, backend, blobs, q, jobs=jobs, stats=stats, progress=progress)
        for mid in manifests:
            if mid in fetched:
                adopt(store, fetched.pop(mid), mid)  # complete objects: a later full pull reuses them
        target.mkdir(parents=True, exist_ok=True)
        for p in whole:
            write_file(store, tree.entries[p], target, p)
        for p, names in chosen.items():
            parent = safe_parent(target, p)
            manifest = read_structured(store, tree.entries[p].id, {}, FileManifest)
            _write_tensor_subset(store, manifest, names, parent / p.rsplit("/", 1)[-1])
    return PartialResult(cid, whole, chosen, target, stats)


def _refuse_dirty(repo: Repo, worktree: Path, paths: list[str]) -> None:
    """Refuse to overwrite selected worktree files that differ from HEAD (uncommitted work)."""
    _branch, head = repo.head()
    head_entries: dict[str, TreeEntry] = repo.read_tree(repo.read_commit(head).tree).entries if head else {}
    from store.ids import new_hasher

    dirty = []
    for p in paths:
        f = worktree / p
        if not f.is_file():
            continue
        h = new_hasher()
        with open(f, "rb") as fh:
            while chunk := fh.read(8 * 1024 * 1024):
                h.update(chunk)
        if p not in head_entries or head_entries[p].hash != h.hexdigest():
            dirty.append(p)
    if dirty:
        raise DirtyWorktree(f"{worktree} has uncommitted changes in {', '.join(dirty[:5])}", hint="commit them, pass -o DIR, or --force to overwrite")

