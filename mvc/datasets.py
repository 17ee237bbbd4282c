"""Datasets in the store: a training file kept by content, named by id in the lineage of models.

A dataset is stored like a one-file model directory: its bytes become blobs (content-defined
chunks for a large file), a tree holds the one file, and a ``dataset`` commit without parents
names the tree. That commit is deterministic (fixed author and time), so the same file stored
twice is one commit. It is on no branch: a note attached to it (``{"dataset": {...}}``) makes it,
and so the data, a gc root, and tells what the file is. Model commits name datasets in
``lineage.datasets`` as ``{"role", "path", "id", "commit", "size", ...}`` where ``id`` is the
xxh3-128 of the file's bytes.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mvc.errors import InvalidArgument, ObjectCorrupt
from store.materialize import materialize
from store.model import Commit
from store.snapshot import snapshot

if TYPE_CHECKING:
    from mvc.repo import Repo

DATASET_KIND = "dataset"
DATASET_AUTHOR = "mvc <datasets@mvc>"
DATASET_TIME = "1970-01-01T00:00:00.000000Z"


@dataclass(frozen=True)
class StoredDataset:
    """A file kept in the store."""

    path: str  # the file name it was stored under
    id: str  # xxh3-128 of its bytes
    commit: str  # the dataset commit holding it
    size: int

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "id": self.id, "commit": self.commit, "size": self.size}


def store_dataset(repo: Repo, path: Path | str, *, name: str | None = None, author: str | None = None) -> StoredDataset:
    """Store the file at ``path`` (under ``name``, default its file name) and return how it is named."""
    src = Path(path)
    if not src.is_file():
        raise InvalidArgument(f"dataset {src} is not a file")
    name = name or src.name
    with tempfile.TemporaryDirectory(dir=repo.dir / "tmp", prefix="dataset-") as tmp:
        staged = Path(tmp) / name
        try:
            staged.hardlink_to(src)
        except OSError:
            shutil.copyfile(src, staged)
        tree, _stats = snapshot(repo.objects, Path(tmp))
    entry = tree.entries[name]
    tree_id = repo.objects.put(tree.encode())
    commit = Commit(tree=tree_id, parents=(), author=DATASET_AUTHOR, time=DATASET_TIME, message=f"dataset {name}",
                    kind=DATASET_KIND, lineage={"dataset": {"path": name, "size": entry.size}}, metrics={})
    cid = repo.objects.put(commit.encode())
    if not repo.notes.ids(cid):
        repo.notes.add(cid, {"dataset": {"path": name, "id": entry.hash, "size": entry.size}}, author or DATASET_AUTHOR)
    return StoredDataset(name, entry.hash, cid, entry.size)


def export_dataset(repo: Repo, commit_id: str, out_dir: Path | str) -> Path:
    """Write the file of dataset commit ``commit_id`` into ``out_dir``; return its path."""
    commit = repo.read_commit(commit_id)
    if commit.kind != DATASET_KIND:
        raise ObjectCorrupt(f"{commit_id[:12]} is a {commit.kind} commit, not a dataset")
    tree = repo.read_tree(commit.tree)
    if len(tree.entries) != 1:
        raise ObjectCorrupt(f"dataset commit {commit_id[:12]} does not hold exactly one file")
    (name,) = tree.entries
    materialize(repo.objects, tree, Path(out_dir))
    return Path(out_dir) / name
