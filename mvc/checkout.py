"""Materialising commits: export into a directory, or move HEAD and update the worktree."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from mvc.errors import AlreadyExists, DirtyWorktree, UnknownRevision
from mvc.status import status
from store.materialize import materialize
from store.refs import full_ref_name

if TYPE_CHECKING:
    from mvc.repo import Repo

Progress = Callable[[int], None]


def export(repo: Repo, rev: str, out: Path | str, *, force: bool = False, progress: Progress | None = None, on_total: Callable[[int], None] | None = None) -> str:
    """Write commit ``rev`` into ``out`` (new or empty; ``force`` overwrites). HEAD does not move."""
    cid = repo.resolve(rev)
    tree = repo.read_tree(repo.read_commit(cid).tree)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise AlreadyExists(f"{out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise AlreadyExists(f"{out} is not empty", hint="choose a new directory, or pass --force to overwrite the files mvc writes")
    if on_total:
        on_total(sum(e.size for e in tree.entries.values()))
    materialize(repo.objects, tree, out, progress=progress)
    return cid


def update_worktree(repo: Repo, cid: str, *, force: bool = False, progress: Progress | None = None, on_total: Callable[[int], None] | None = None) -> Path | None:
    """Make the worktree match commit ``cid``; refuse when it has uncommitted changes (unless ``force``)."""
    wt = repo.worktree
    if wt is None:
        return None
    target = repo.read_tree(repo.read_commit(cid).tree)
    _branch, head = repo.head()
    if not wt.exists():
        wt.mkdir(parents=True)
    current = status(repo, wt)
    if head and not current.clean and not force:
        shown = ", ".join(f"{f.path} ({f.change})" for f in current.files[:5])
        more = f" and {len(current.files) - 5} more" if len(current.files) > 5 else ""
        raise DirtyWorktree(f"{wt} has uncommitted changes: {shown}{more}")
    on_disk = current.tree.entries if current.tree else {}
    head_tree = repo.read_tree(repo.read_commit(head).tree).entries if head else {}
    write = [p for p, e in target.entries.items() if p not in on_disk or (on_disk[p].hash, on_disk[p].mode) != (e.hash, e.mode)]
    remove = [p for p in on_disk if p not in target.entries and (p in head_tree or force)]
    if on_total:
        on_total(sum(target.entries[p].size for p in write))
    materialize(repo.objects, target, wt, paths=write, remove=remove, progress=progress)
    return wt


def checkout(repo: Repo, rev: str, *, force: bool = False, progress: Progress | None = None, on_total: Callable[[int], None] | None = None) -> tuple[str, str | None]:
    """Move HEAD to ``rev`` (a branch: attached; anything else: detached) and update the worktree."""
    ref = full_ref_name("heads", rev) if _is_branch(repo, rev) else None
    cid = repo.resolve(rev)
    update_worktree(repo, cid, force=force, progress=progress, on_total=on_total)
    repo.refs.set_head(ref or cid, message=f"checkout: moving to {rev}")
    repo.index().sync_refs()
    return cid, (rev if ref else None)


def switch(repo: Repo, name: str, *, create: bool = False, start: str = "HEAD", force: bool = False, progress: Progress | None = None, on_total: Callable[[int], None] | None = None) -> str | None:
    """Attach HEAD to branch ``name`` (creating it at ``start`` with ``create``) and update the worktree."""
    ref = full_ref_name("heads", name)
    if create:
        repo.create_ref("heads", name, start, message=f"branch: created from {start}")
    elif repo.refs.read(ref) is None:
        if repo.head() == (name, None):
            return None
        raise UnknownRevision(f"no branch named {name!r}", hint=f"create it with `mvc switch -c {name}`")
    cid = repo.refs.read(ref)
    update_worktree(repo, cid, force=force, progress=progress, on_total=on_total)
    repo.refs.set_head(ref, message=f"switch: moving to {name}")
    repo.index().sync_refs()
    return cid


def _is_branch(repo: Repo, rev: str) -> bool:
    try:
        return repo.refs.read(full_ref_name("heads", rev)) is not None
    except Exception:
        return False
