"""Writing a tree into a directory, byte-exact, never outside it.

Each file is rebuilt from its parts into a temporary file beside its destination; every part
is re-hashed as it is read and the whole-file hash is checked before the file is renamed into
place, so a corrupt object never becomes a visible file. Renaming replaces a symlink at the
destination instead of following it, and parent directories that are symlinks are refused.
"""

from __future__ import annotations

import os
import stat as stat_mod
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

from store.errors import ObjectCorrupt, UnsafePath
from store.ids import new_hasher
from store.model import FileManifest, Part, Tree, TreeEntry, decode
from store.objects import ObjectStore
from store.paths import check_tree_path


def load_manifest(store: ObjectStore, entry: TreeEntry) -> FileManifest | None:
    """The manifest of a split file, or None for a file stored whole."""
    if entry.kind == "blob":
        return None
    manifest = decode(store.get(entry.id), entry.id)
    if not isinstance(manifest, FileManifest):
        raise ObjectCorrupt(f"object {entry.id} should be a file manifest")
    return manifest


def entry_parts(store: ObjectStore, entry: TreeEntry) -> list[Part]:
    manifest = load_manifest(store, entry)
    return [Part(entry.id, entry.size)] if manifest is None else manifest.parts()


def safe_parent(target: Path, rel: str, *, create: bool = True) -> Path:
    """Create (as needed) and return the real directory that will hold ``rel`` under ``target``."""
    check_tree_path(rel)
    d = target
    for part in rel.split("/")[:-1]:
        d = d / part
        try:
            st = os.lstat(d)
        except FileNotFoundError:
            if not create:
                return d
            os.mkdir(d)
            continue
        if stat_mod.S_ISLNK(st.st_mode):
            raise UnsafePath(f"refusing to write {rel}: {d} is a symlink", hint="remove the symlink or check out into an empty directory")
        if not stat_mod.S_ISDIR(st.st_mode):
            raise UnsafePath(f"refusing to write {rel}: {d} is not a directory")
    return d


def write_file(store: ObjectStore, entry: TreeEntry, target: Path, rel: str, progress: Callable[[int], None] | None = None) -> None:
    """Rebuild one file at ``target/rel`` from the store, verified, atomically."""
    parent = safe_parent(target, rel)
    name = rel.rsplit("/", 1)[-1]
    dest = parent / name
    if dest.is_dir() and not dest.is_symlink():
        raise UnsafePath(f"refusing to write {rel}: a directory is in the way")
    fd, tmp = tempfile.mkstemp(prefix=f".{name[:40]}.", suffix=".mvc-tmp", dir=parent)
    try:
        whole = new_hasher()
        with os.fdopen(fd, "wb", buffering=0) as f:
            for part in entry_parts(store, entry):
                data = store.get(part.id)  # re-hashed here
                if len(data) != part.size:
                    raise ObjectCorrupt(f"object {part.id} has the wrong size")
                whole.update(data)
                view = memoryview(data)
                while view:
                    view = view[f.write(view) :]
                if progress:
                    progress(len(data))
        if whole.hexdigest() != entry.hash:
            raise ObjectCorrupt(f"{rel}: rebuilt file does not match its recorded hash {entry.hash}")
        os.chmod(tmp, 0o755 if entry.mode == "755" else 0o644)
        os.replace(tmp, dest)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def materialize(
    store: ObjectStore,
    tree: Tree,
    target: Path,
    *,
    paths: Iterable[str] | None = None,
    remove: Iterable[str] = (),
    progress: Callable[[int], None] | None = None,
) -> None:
    """Write ``tree`` (or only ``paths`` of it) under ``target`` and delete the files in ``remove``."""
    target = Path(target)
    target.mkdir(parents=True, exist_ok=True)
    for rel in sorted(tree.entries if paths is None else paths):
        write_file(store, tree.entries[rel], target, rel, progress)
    for rel in sorted(remove):
        parent = safe_parent(target, rel, create=False)
        path = parent / rel.rsplit("/", 1)[-1]
        try:
            if not path.is_dir() or path.is_symlink():
                path.unlink()
        except (FileNotFoundError, NotADirectoryError):
            continue
        # drop directories the removal left empty
        d = parent
        while d != target:
            try:
                d.rmdir()
            except OSError:
                break
            d = d.parent
