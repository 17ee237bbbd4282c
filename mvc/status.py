"""What changed in a model directory compared with a commit: per file and per tensor.

Files whose stat matches the stat cache are not read. For changed safetensors files the
tensors are matched by name across all of them, so a tensor that moved between shards shows
as moved, not as removed and added.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from store.materialize import load_manifest
from store.model import FileManifest, TensorEntry, Tree
from store.snapshot import SourceFile, hash_tree, split_file, validate

if TYPE_CHECKING:
    from mvc.repo import Repo


@dataclass(frozen=True)
class FileChange:
    path: str
    change: str  # added | removed | modified | mode
    old_size: int | None = None
    new_size: int | None = None


@dataclass(frozen=True)
class TensorChange:
    name: str
    change: str  # added | removed | modified | dtype | shape | moved
    path: str
    old_path: str | None = None
    detail: str = ""


@dataclass
class Status:
    directory: Path
    branch: str | None
    head: str | None
    files: list[FileChange] = field(default_factory=list)
    tensors: list[TensorChange] = field(default_factory=list)
    tree: Tree | None = None

    @property
    def clean(self) -> bool:
        return not self.files

    def to_json(self) -> dict[str, Any]:
        return {
            "directory": str(self.directory),
            "branch": self.branch,
            "head": self.head,
            "clean": self.clean,
            "files": [vars(f) for f in self.files],
            "tensors": [vars(t) for t in self.tensors],
        }


def compare_trees(
    old: Tree | None, new: Tree, old_manifest: callable, new_manifest: callable
) -> tuple[list[FileChange], list[TensorChange]]:
    """File and tensor changes from ``old`` to ``new``; manifests are fetched only for changed files."""
    old_entries = old.entries if old else {}
    files: list[FileChange] = []
    for path in sorted(set(old_entries) | set(new.entries)):
        a, b = old_entries.get(path), new.entries.get(path)
        if a is None:
            files.append(FileChange(path, "added", None, b.size))
        elif b is None:
            files.append(FileChange(path, "removed", a.size, None))
        elif a.hash != b.hash:
            files.append(FileChange(path, "modified", a.size, b.size))
        elif a.mode != b.mode:
            files.append(FileChange(path, "mode", a.size, b.size))
    before: dict[str, tuple[str, TensorEntry]] = {}
    after: dict[str, tuple[str, TensorEntry]] = {}
    for fc in files:
        if fc.change == "mode":
            continue
        if fc.change != "added":
            m = old_manifest(fc.path)
            for t in m.tensors if m else ():
                before[t.name] = (fc.path, t)
        if fc.change != "removed":
            m = new_manifest(fc.path)
            for t in m.tensors if m else ():
                after[t.name] = (fc.path, t)
    tensors: list[TensorChange] = []
    for name in sorted(set(before) | set(after)):
        if name not in after:
            tensors.append(TensorChange(name, "removed", before[name][0]))
            continue
        if name not in before:
            tensors.append(TensorChange(name, "added", after[name][0]))
            continue
        (pa, ta), (pb, tb) = before[name], after[name]
        if ta.dtype != tb.dtype:
            tensors.append(TensorChange(name, "dtype", pb, pa, f"{ta.dtype} -> {tb.dtype}"))
        elif ta.shape != tb.shape:
            tensors.append(TensorChange(name, "shape", pb, pa, f"{list(ta.shape)} -> {list(tb.shape)}"))
        elif ta.id != tb.id:
            tensors.append(TensorChange(name, "modified", pb, pa))
        elif pa != pb:
            tensors.append(TensorChange(name, "moved", pb, pa))
    return files, tensors


def status(repo: Repo, directory: Path | str | None = None, *, against: str | None = None, follow_symlinks: bool = False) -> Status:
    """Compare ``directory`` (default: the worktree) with ``against`` (default: HEAD)."""
    directory = repo.require_worktree(directory)
    branch, head = repo.head()
    base = repo.resolve(against) if against else head
    old = repo.read_tree(repo.read_commit(base).tree) if base else None
    new, manifests = hash_tree(directory, cache=repo.statcache, follow_symlinks=follow_symlinks)

    def old_manifest(path: str) -> FileManifest | None:
        return load_manifest(repo.objects, old.entries[path]) if old else None

    def new_manifest(path: str) -> FileManifest | None:
        if path in manifests:
            return manifests[path]
        entry = new.entries[path]
        if entry.kind != "file":
            return None
        # a cached entry whose manifest is in the store (it was committed before)
        if repo.objects.has(entry.id):
            return load_manifest(repo.objects, entry)
        # cached by an earlier status but never committed: its manifest exists nowhere, read the file again
        src = SourceFile(path, directory / path, os.stat(directory / path))
        validate([src])
        return split_file(src, None)[1]

    files, tensors = compare_trees(old, new, old_manifest, new_manifest)
    return Status(directory, branch, base, files, tensors, new)
