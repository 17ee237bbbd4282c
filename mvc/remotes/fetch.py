"""Fetch, pull and clone: download into quarantine, verify, store in dependency order, then move refs."""

from __future__ import annotations

import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

from mvc.errors import (
    AlreadyExists,
    HistoriesDiverged,
    InvalidArgument,
    UnknownRevision,
)
from mvc.remotes.common import (
    PUSHABLE,
    FetchResult,
    PullResult,
    Quarantine,
    RefUpdate,
    ancestors,
    is_ancestor,
    local_tips,
    parents_first,
    parse_note_ids,
    parse_ref,
    read_structured,
)
from mvc.remotes.config import add_remote, get_remote
from store import FORMAT_VERSION
from store.backends import Backend, normalize_url
from store.errors import InvalidRefName, RemoteCorrupt, UnsupportedFormat
from store.ids import is_object_id
from store.model import Commit, FileManifest, Note, Tree
from store.refs import full_ref_name
from store.transfer import Progress, TransferStats, adopt, download, run_parallel

if TYPE_CHECKING:
    from mvc.repo import Repo


def fetch_commits(
    repo: Repo, backend: Backend, tips: Iterable[str], *, jobs: int, stats: TransferStats, progress: Progress | None = None
) -> list[str]:
    """Download the closure of ``tips`` that the local refs do not already reach; return the new commits.

    Blobs enter the store as soon as they are verified; manifests, trees and commits wait in
    quarantine until every blob is in, then enter in that order. Refs are the caller's to move.
    """
    store = repo.objects
    cache: dict[str, Commit] = {}
    complete = ancestors(store, local_tips(repo), cache=cache)
    frontier = sorted({t for t in tips if t not in complete})
    if not frontier:
        return []
    with Quarantine(repo) as q:
        fetched: dict[str, Path] = {}
        commits: dict[str, Commit] = {}
        while frontier:
            fetched.update(download(store, backend, {c: None for c in frontier}, q, jobs=jobs, stats=stats, progress=progress, keep=True))
            nxt: set[str] = set()
            for cid in frontier:
                commits[cid] = read_structured(store, cid, fetched, Commit)
                nxt.update(p for p in commits[cid].parents if p not in complete and p not in commits)
            frontier = sorted(nxt)
        tree_ids = sorted({c.tree for c in commits.values()})
        fetched.update(download(store, backend, dict.fromkeys(tree_ids), q, jobs=jobs, stats=stats, progress=progress, keep=True))
        blobs: dict[str, int] = {}
        manifest_ids: set[str] = set()
        for tid in tree_ids:
            for entry in read_structured(store, tid, fetched, Tree).entries.values():
                if entry.kind == "blob":
                    blobs[entry.id] = entry.size
                else:
                    manifest_ids.add(entry.id)
        fetched.update(download(store, backend, dict.fromkeys(sorted(manifest_ids)), q, jobs=jobs, stats=stats, progress=progress, keep=True))
        for mid in sorted(manifest_ids):
            for part in read_structured(store, mid, fetched, FileManifest).parts():
                blobs[part.id] = part.size
        if progress:
            progress.set_total(stats.bytes_moved + stats.bytes_skipped + sum(blobs.values()))
        download(store, backend, blobs, q, jobs=jobs, stats=stats, progress=progress)
        # Everything a commit names is now in the store: manifests, trees, then commits.
        for oid in sorted(manifest_ids) + tree_ids + parents_first(set(commits), commits):
            if oid in fetched:
                adopt(store, fetched[oid], oid)
    return sorted(commits)


def _fetch_notes(repo: Repo, backend: Backend, *, jobs: int, stats: TransferStats) -> int:
    """Bring the remote's notes on every commit this repository has; return how many were new."""
    listing = backend.list("notes/")
    store = repo.objects
    commits = sorted(k[len("notes/"):] for k in listing if is_object_id(k[len("notes/"):]))
    commits = [c for c in commits if store.has(c)]
    if not commits:
        return 0
    states = run_parallel(lambda c: backend.read_ref(f"notes/{c}"), commits, jobs)
    todo: dict[str, list[str]] = {}
    for cid, state in zip(commits, states, strict=True):
        local = set(repo.notes.ids(cid))
        missing = [i for i in parse_note_ids(state) if i not in local]
        if missing:
            todo[cid] = missing
    if not todo:
        return 0
    added = 0
    with Quarantine(repo) as q:
        wanted = {i: None for ids in todo.values() for i in ids}
        fetched = download(store, backend, wanted, q, jobs=jobs, stats=stats, keep=True)
        for cid, ids in todo.items():
            for nid in ids:
                note = read_structured(store, nid, fetched, Note)
                if note.commit != cid:
                    raise RemoteCorrupt(f"object {nid} is listed as a note on {cid[:12]} but names {note.commit[:12]}")
                if nid in fetched:
                    adopt(store, fetched.pop(nid), nid)
                added += repo.notes.attach(cid, nid)
    return added


def _remote_refs(backend: Backend, jobs: int) -> tuple[dict[str, str], str | None]:
    """The remote's branches, tags and pins (``{full name: commit}``) and the branch its HEAD names."""
    keys = []
    for key in sorted(backend.list("refs/")):
        if not key.startswith(PUSHABLE):
            continue
        try:
            full_ref_name(*key.split("/", 2)[1:])
        except InvalidRefName:
            continue  # a hostile or foreign name: never becomes a local ref
        keys.append(key)
    extra = ["HEAD", "config"]
    states = run_parallel(backend.read_ref, keys + extra, jobs)
    where = backend.describe()
    refs = {k: v for k, s in zip(keys, states[: len(keys)], strict=True) if (v := parse_ref(k, s, where))}
    head_state, config_state = states[len(keys)], states[len(keys) + 1]
    if config_state is not None:
        text = config_state[0].decode("utf-8", "replace")
        for line in text.splitlines():
            if line.strip().startswith("format"):
                try:
                    version = int(line.split("=", 1)[1])
                except (IndexError, ValueError):
                    continue
                if version > FORMAT_VERSION:
                    raise UnsupportedFormat(f"the remote {where} uses format {version}; this mvc understands up to {FORMAT_VERSION}")
    head = None
    if head_state is not None:
        text = head_state[0].decode("utf-8", "replace").strip()
        if text.startswith("ref: refs/heads/"):
            head = text[len("ref: refs/heads/"):]
    return refs, head


def fetch(
    repo: Repo, remote: str = "origin", *, jobs: int | None = None, backend: Backend | None = None, progress: Progress | None = None
) -> FetchResult:
    """Download what the remote has and this repository lacks; move remote-tracking refs, add tags and pins.

    Local branches never move. A remote tag or pin that differs from a local one of the same
    name is reported (``kept-local``) and the local one is kept.
    """
    cfg = get_remote(repo, remote)
    jobs = jobs or cfg.jobs
    backend = backend or cfg.open(jobs)
    result = FetchResult(remote)
    refs, result.remote_head = _remote_refs(backend, jobs)
    result.commits = len(fetch_commits(repo, backend, refs.values(), jobs=jobs, stats=result.stats, progress=progress))
    result.notes = _fetch_notes(repo, backend, jobs=jobs, stats=result.stats)
    moved = False
    for ref, cid in refs.items():
        ns, short = ref.split("/", 2)[1:]
        local_ref = f"refs/remotes/{remote}/{short}" if ns == "heads" else ref
        current = repo.refs.read(local_ref)
        try:
            if current == cid:
                result.updates.append(RefUpdate(local_ref, current, cid, "up-to-date"))
            elif ns == "heads":
                repo.refs.compare_and_swap(local_ref, current, cid, message=f"fetch: {remote}")
                result.updates.append(RefUpdate(local_ref, current, cid, "created" if current is None else "updated"))
                moved = True
            elif current is None:
                repo.refs.compare_and_swap(local_ref, None, cid, message=f"fetch: {ns[:-1]} from {remote}")
                result.updates.append(RefUpdate(local_ref, None, cid, "created"))
                moved = True
            else:
                result.updates.append(RefUpdate(local_ref, current, cid, "kept-local"))
        except AlreadyExists:
            result.updates.append(RefUpdate(local_ref, current, cid, "conflict"))
    if moved:
        repo.index().sync_refs()
    return result


# -- pull -------------------------------------------------------------------------------------
def pull(
    repo: Repo, remote: str = "origin", branch: str | None = None, *, force: bool = False, jobs: int | None = None,
    backend: Backend | None = None, progress: Progress | None = None, worktree_progress=None, on_total=None,
) -> PullResult:
    """Fetch, then fast-forward ``branch`` (default: the current one) to ``remote``'s, updating the worktree.

    Diverged histories are not merged here: HistoriesDiverged says how (``mvc merge origin/BRANCH``).
    """
    from mvc.checkout import update_worktree

    head_branch, _head = repo.head()
    branch = branch or head_branch
    if branch is None:
        raise InvalidArgument("HEAD is detached: name the branch to pull", hint=f"mvc pull {remote} BRANCH")
    fetched = fetch(repo, remote, jobs=jobs, backend=backend, progress=progress)
    tracking = f"refs/remotes/{remote}/{branch}"
    theirs = repo.refs.read(tracking)
    if theirs is None:
        raise UnknownRevision(f"{remote} has no branch {branch!r}", hint=f"its branches: `mvc query \"SELECT name FROM refs WHERE name LIKE 'refs/remotes/{remote}/%'\"`")
    local_ref = f"refs/heads/{branch}"
    ours = repo.refs.read(local_ref)
    if ours is not None and is_ancestor(repo.objects, theirs, ours):
        return PullResult(fetched, branch, ours, ours, "up-to-date")
    if ours is not None and not is_ancestor(repo.objects, ours, theirs):
        raise HistoriesDiverged(
            f"{branch} and {remote}/{branch} have diverged: each has commits the other lacks",
            hint=f"merge them: `mvc merge {remote}/{branch}`, then `mvc push {remote} {branch}`",
        )
    wt = None
    if branch == head_branch:
        wt = update_worktree(repo, theirs, force=force, progress=worktree_progress, on_total=on_total)
    repo.refs.compare_and_swap(local_ref, ours, theirs, message=f"pull: fast-forward from {remote}/{branch}")
    repo.index().sync_refs()
    return PullResult(fetched, branch, ours, theirs, "fast-forward", wt)


# -- clone ------------------------------------------------------------------------------------
def default_clone_dir(url: str) -> str:
    """The directory ``mvc clone URL`` creates: the last component of the URL's path."""
    parsed = urlparse(normalize_url(url))
    name = (parsed.path.rstrip("/").rsplit("/", 1)[-1] or parsed.netloc).strip()
    if not name or name in (".", ".."):
        raise InvalidArgument(f"cannot pick a directory name from {url}: name one", hint="mvc clone URL DIR")
    return name


def clone(
    url: str, directory: Path | str | None = None, *, endpoint_url: str | None = None, branch: str | None = None, jobs: int | None = None,
    backend: Backend | None = None, progress: Progress | None = None, worktree_progress=None, on_total=None,
) -> tuple[Repo, FetchResult, str | None]:
    """Create ``directory`` as a new repository with remote ``origin`` at ``url``, fetch everything,
    and check out ``branch`` (default: the branch the remote's HEAD names, else ``main``)."""
    from mvc.checkout import update_worktree
    from mvc.repo import Repo

    target = Path(directory if directory is not None else default_clone_dir(url)).absolute()
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise AlreadyExists(f"{target} exists and is not an empty directory", hint="clone into a new directory")
    created = not target.exists()
    try:
        target.mkdir(parents=True, exist_ok=True)
        repo = Repo.init(target)
        add_remote(repo, "origin", url, endpoint_url=endpoint_url, jobs=jobs)
        fetched = fetch(repo, "origin", jobs=jobs, backend=backend, progress=progress)
        heads = {u.ref[len("refs/remotes/origin/"):]: u.new for u in fetched.updates if u.ref.startswith("refs/remotes/origin/")}
        chosen = branch or (fetched.remote_head if fetched.remote_head in heads else None) or ("main" if "main" in heads else None)
        if chosen is None and heads:
            chosen = sorted(heads)[0]
        if branch and branch not in heads:
            raise UnknownRevision(f"the remote has no branch {branch!r}")
        repo.set_worktree(target)
        if chosen is not None:
            cid = heads[chosen]
            update_worktree(repo, cid, progress=worktree_progress, on_total=on_total)
            repo.refs.compare_and_swap(f"refs/heads/{chosen}", None, cid, message=f"clone: from {url}")
            repo.refs.set_head(f"refs/heads/{chosen}", message=f"clone: from {url}")
            repo.index().sync_refs()
        return repo, fetched, chosen
    except BaseException:
        if created:
            shutil.rmtree(target, ignore_errors=True)
        else:
            for child in target.iterdir():
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child, ignore_errors=True)
                else:
                    child.unlink(missing_ok=True)
        raise


