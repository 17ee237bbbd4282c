"""The repository: the porcelain API that the CLI, training scripts and CI call.

A ``Repo`` is a directory holding ``.mvc/``. Commits snapshot a model directory (the
repository's *worktree*, or any directory passed in); refs move by compare-and-swap; the
DuckDB index is kept in step and can always be rebuilt from the store (``reindex``).
"""

from __future__ import annotations

import configparser
import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hooks.scripts import run_hook
from mvc.errors import AlreadyExists, HookRejected, InvalidArgument, NothingToCommit, NoWorktree, RefMoved, RepositoryBusy, UnknownRevision
from store import FORMAT_VERSION
from store.atomic import write_atomic
from store.errors import NotARepository, UnsupportedFormat
from store.ids import hash_bytes
from store.model import Commit, Tree
from store.notes import NoteStore
from store.objects import ObjectStore
from store.refs import ANY, RefStore, full_ref_name, utc_now, whoami
from store.snapshot import SnapshotStats, snapshot
from store.statcache import StatCache
from store.walk import load_commit, load_tree

MVC_DIR = ".mvc"
LAYOUT = ("objects", "refs/heads", "refs/tags", "refs/pins", "refs/remotes", "logs", "notes", "tmp", "locks", "hooks")


@dataclass(frozen=True)
class CommitResult:
    """What ``Repo.commit`` did."""

    id: str
    branch: str | None
    tree: str
    stats: SnapshotStats


class Repo:
    """An mvc repository rooted at ``root`` (the directory that contains ``.mvc``)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()
        self.dir = self.root / MVC_DIR
        if not (self.dir / "objects").is_dir() or not (self.dir / "config").is_file():
            raise NotARepository(f"{self.root} is not an mvc repository")
        self.config = configparser.ConfigParser()
        self.config.read(self.dir / "config")
        version = self.config.getint("core", "format", fallback=FORMAT_VERSION)
        if version > FORMAT_VERSION:
            raise UnsupportedFormat(f"repository format {version} is newer than this mvc understands ({FORMAT_VERSION})")
        fsync = self.config.getboolean("core", "fsync", fallback=True)
        self.objects = ObjectStore(self.dir / "objects", self.dir / "tmp", fsync=fsync)
        self.refs = RefStore(self.dir, fsync=fsync)
        self.notes = NoteStore(self.dir, self.objects, fsync=fsync)
        self.statcache = StatCache(self.dir / "statcache.json")
        self.busy_timeout = 10.0
        self.warnings: list[str] = []  # things that went wrong but changed nothing, for the caller to show

    # -- opening -------------------------------------------------------------------------
    @classmethod
    def init(cls, path: Path | str = ".", *, branch: str = "main") -> Repo:
        """Create an empty repository in ``path`` (which may already hold a model)."""
        root = Path(path).resolve()
        d = root / MVC_DIR
        if (d / "config").exists():
            from mvc.errors import AlreadyExists

            raise AlreadyExists(f"{root} already holds an mvc repository", hint="use it as it is, or remove .mvc to start over")
        full_ref_name("heads", branch)
        for sub in LAYOUT:
            (d / sub).mkdir(parents=True, exist_ok=True)
        cfg = configparser.ConfigParser()
        cfg["core"] = {"format": str(FORMAT_VERSION), "fsync": "true"}
        with open(d / "config", "w") as f:
            cfg.write(f)
        (d / "HEAD").write_text(f"ref: refs/heads/{branch}\n")
        return cls(root)

    @classmethod
    def find(cls, start: Path | str = ".") -> Repo:
        """The repository containing ``start`` (searching upwards)."""
        p = Path(start).resolve()
        for candidate in (p, *p.parents):
            if (candidate / MVC_DIR / "config").is_file():
                return cls(candidate)
        raise NotARepository(f"not an mvc repository (or any parent up to /): {p}")

    # -- config --------------------------------------------------------------------------
    def set_config(self, section: str, key: str, value: str) -> None:
        if not self.config.has_section(section):
            self.config.add_section(section)
        self.config.set(section, key, value)
        text = io.StringIO()
        self.config.write(text)
        write_atomic(self.dir / "config", text.getvalue().encode(), tmp_dir=self.dir / "tmp", prefix="config-")

    @property
    def worktree(self) -> Path | None:
        """The model directory that ``status``, ``checkout`` and ``switch`` work on by default."""
        value = self.config.get("core", "worktree", fallback=None)
        return (self.root / value).resolve() if value else None

    def set_worktree(self, directory: Path) -> None:
        directory = Path(directory).resolve()
        try:
            value = directory.relative_to(self.root).as_posix() or "."
        except ValueError:
            value = str(directory)
        if self.config.get("core", "worktree", fallback=None) != value:
            self.set_config("core", "worktree", value)

    def require_worktree(self, directory: Path | str | None) -> Path:
        if directory is not None:
            return Path(directory).resolve()
        wt = self.worktree
        if wt is None:
            raise NoWorktree("no model directory given and none recorded for this repository")
        return wt

    # -- reading -------------------------------------------------------------------------
    def resolve(self, rev: str) -> str:
        """The commit id ``rev`` names (see ``mvc.revisions``)."""
        from mvc.revisions import resolve

        return resolve(self, rev)

    def read_commit(self, oid: str) -> Commit:
        return load_commit(self.objects, oid)

    def read_tree(self, oid: str) -> Tree:
        return load_tree(self.objects, oid)

    def head(self) -> tuple[str | None, str | None]:
        """``(current branch short name or None if detached, HEAD commit id or None)``."""
        branch, oid = self.refs.head()
        return (branch[len("refs/heads/") :] if branch else None), oid

    def index(self):
        """The DuckDB index, caught up with the refs (see ``mvc.index``)."""
        from mvc.index import Index

        return Index(self)

    # -- committing ----------------------------------------------------------------------
    def commit(
        self,
        directory: Path | str | None = None,
        message: str = "",
        *,
        kind: str = "commit",
        lineage: dict[str, Any] | None = None,
        metrics: dict[str, Any] | None = None,
        author: str | None = None,
        branch: str | None = None,
        parents: list[str] | None = None,
        allow_empty: bool = False,
        follow_symlinks: bool = False,
        run_hooks: bool = True,
        progress: Callable[[int], None] | None = None,
        on_total: Callable[[int], None] | None = None,
        scratch: bool = False,
    ) -> CommitResult:
        """Snapshot ``directory`` as a new commit on ``branch`` (default: HEAD's branch).

        Write order: blobs, manifests, tree, commit, index row, then the ref by
        compare-and-swap. Losing the race raises RefMoved; the snapshot stays in the store
        (unreferenced), so a retry stores nothing again. A ``scratch`` directory (a training
        checkpoint about to be deleted) neither becomes the worktree nor enters the stat cache.
        """
        directory = self.require_worktree(directory)
        head_branch, head_oid = self.refs.head()
        if branch is not None:
            ref = full_ref_name("heads", branch)
            expected = self.refs.read(ref)
        else:
            ref = head_branch  # None: detached HEAD
            expected = head_oid
        if parents is not None:
            parent_ids = list(parents)
        elif expected is not None:
            parent_ids = [expected]
        else:  # an unborn branch: a new branch named with ``branch`` starts from HEAD
            parent_ids = [head_oid] if head_oid and branch is not None else []
        tree, stats = snapshot(self.objects, directory, cache=None if scratch else self.statcache, follow_symlinks=follow_symlinks,
                               progress=progress, on_total=on_total)
        tree_id = self.objects.put(tree.encode())
        if not allow_empty and parent_ids and self.read_commit(parent_ids[0]).tree == tree_id:
            raise NothingToCommit(f"nothing to commit: {directory} matches {parent_ids[0][:12]}")
        cid = self.write_commit(
            tree_id, parent_ids, message, ref=ref, expected=expected, kind=kind, lineage=lineage, metrics=metrics,
            author=author, directory=directory, run_hooks=run_hooks, record_worktree=not scratch,
        )
        return CommitResult(cid, ref[len("refs/heads/") :] if ref else None, tree_id, stats)

    def write_commit(
        self,
        tree_id: str,
        parents: list[str],
        message: str = "",
        *,
        ref: str | None,
        expected: str | None,
        kind: str = "commit",
        lineage: dict[str, Any] | None = None,
        metrics: dict[str, Any] | None = None,
        author: str | None = None,
        directory: Path | None = None,
        run_hooks: bool = True,
        what: str = "snapshot",
        reflog: str = "commit",
        record_worktree: bool = True,
    ) -> str:
        """Record a commit of the stored tree ``tree_id`` and move ``ref`` (None: detached HEAD) from ``expected`` to it.

        The second half of ``commit``'s write order, shared with merges that build their tree in
        the store: commit object, index row, then the ref by compare-and-swap, between the
        pre-commit and post-commit hooks (``MVC_DIR`` is ``directory``, empty when there is none).
        ``directory`` becomes the worktree when none is recorded yet. Losing the race raises
        RefMoved naming the ``what`` that stays stored; returns the commit id.
        """
        commit = Commit(
            tree=tree_id,
            parents=tuple(parents),
            author=author or whoami(),
            time=utc_now(),
            message=message,
            kind=kind,
            lineage=lineage or {},
            metrics=metrics or {},
        )
        data = commit.encode()
        cid = hash_bytes(data)
        short_branch = ref[len("refs/heads/") :] if ref else ""
        hook_env = {
            "MVC_COMMIT": cid, "MVC_TREE": tree_id, "MVC_PARENTS": " ".join(parents), "MVC_BRANCH": short_branch, "MVC_MESSAGE": message,
            "MVC_KIND": kind, "MVC_AUTHOR": commit.author, "MVC_DIR": str(directory) if directory is not None else "", "MVC_REPO": str(self.root),
        }
        if run_hooks:
            result = run_hook(self.dir / "hooks", "pre-commit", hook_env, self.root)
            if result is not None and not result.ok:
                raise HookRejected(
                    f"pre-commit hook refused the commit (exit {result.returncode}): {result.output or 'no message'}",
                    hint="fix what the hook reports, or pass --no-verify to skip hooks",
                )
        self.objects.put(data, cid)
        index = self.index()
        index.add_commit(cid)
        try:
            if ref is None:
                self.refs.set_head(cid, message=f"{reflog} (detached): {message}", who=commit.author, expected=expected)
            else:
                self.refs.compare_and_swap(ref, expected, cid, message=f"{reflog}: {_first_line(message)}", who=commit.author)
        except (RefMoved, AlreadyExists) as e:
            index.forget_commit(cid)
            # AlreadyExists: the branch was unborn when this commit started and another process
            # created it since; that is a lost race too (a ref/directory name clash is not, re-raise it)
            if isinstance(e, AlreadyExists) and (expected is not None or ref is None or self.refs.read(ref) is None):
                raise
            raise RefMoved(
                f"{short_branch} moved while committing; {what} saved as {cid[:12]} but not on any branch ({e.message})",
                hint="retry the commit: the data is already stored, so it will be quick",
            ) from None
        except BaseException:
            index.forget_commit(cid)
            raise
        try:
            index.sync_refs()
        except RepositoryBusy:
            # the ref has moved: the commit has happened, and failing now (a retryable error!)
            # would invite recording it twice; the index catches up on its next open
            self.warnings.append(f"the index is busy; it will catch up with {cid[:12]} on the next command")
        if record_worktree and directory is not None and self.worktree is None:
            self.set_worktree(directory)
        if run_hooks:
            result = run_hook(self.dir / "hooks", "post-commit", hook_env, self.root)
            if result is not None and not result.ok:
                self.warnings.append(f"post-commit hook failed (exit {result.returncode}); the commit {cid[:12]} stands: {result.output or 'no message'}")
        return cid

    # -- refs ----------------------------------------------------------------------------
    def create_ref(self, namespace: str, name: str, rev: str, *, force: bool = False, message: str) -> str:
        """Create ``refs/<namespace>/<name>`` at ``rev`` (move it with ``force``); return the id."""
        target = self.resolve(rev)
        ref = full_ref_name(namespace, name)
        self.refs.compare_and_swap(ref, ANY if force else None, target, message=message)
        self.index().sync_refs()
        return target

    def delete_ref(self, namespace: str, name: str, *, message: str) -> str:
        ref = full_ref_name(namespace, name)
        current = self.refs.read(ref)
        if current is None:
            raise UnknownRevision(f"no {namespace[:-1] if namespace.endswith('s') else namespace} named {name!r}")
        if namespace == "heads" and self.refs.head()[0] == ref:
            raise InvalidArgument(f"cannot delete the current branch {name!r}", hint="`mvc switch` to another branch first")
        self.refs.compare_and_swap(ref, current, None, message=message)
        self.index().sync_refs()
        return current


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else ""

