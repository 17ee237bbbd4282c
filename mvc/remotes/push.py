"""Push: send branches, tags and pins with the objects and notes the remote lacks; move remote refs last, by compare-and-swap."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from mvc.errors import (
    AlreadyExists,
    HistoriesDiverged,
    InvalidArgument,
    PinProtected,
    UnknownRevision,
)
from mvc.remotes.common import (
    PUSHABLE,
    PushResult,
    RefUpdate,
    is_ancestor,
    note_lines,
    noted_commits,
    parents_first,
    parse_note_ids,
    parse_ref,
    tree_objects,
)
from mvc.remotes.config import get_remote
from store import FORMAT_VERSION
from store.backends import Backend
from store.errors import InvalidRefName, RemoteMoved
from store.model import Commit
from store.refs import ANY
from store.transfer import Progress, TransferStats, object_key, run_parallel, upload
from store.walk import ancestors, load_cached

if TYPE_CHECKING:
    from mvc.repo import Repo


def _push_targets(repo: Repo, names: Iterable[str], all_branches: bool, tags: bool, pins: bool) -> dict[str, str]:
    targets: dict[str, str] = {}
    if all_branches:
        targets.update(repo.refs.list("refs/heads/"))
    if tags:
        targets.update(repo.refs.list("refs/tags/"))
    if pins:
        targets.update(repo.refs.list("refs/pins/"))
    for name in names:
        candidates = [name] if name.startswith("refs/") else [f"refs/heads/{name}", f"refs/tags/{name}", f"refs/pins/{name}"]
        for full in candidates:
            if not full.startswith(PUSHABLE):
                raise InvalidArgument(f"cannot push {full}: only branches, tags and pins are pushed")
            try:
                cid = repo.refs.read(full)
            except InvalidRefName:
                cid = None
            if cid:
                targets[full] = cid
                break
        else:
            raise UnknownRevision(f"no branch, tag or pin named {name!r} to push")
    if not targets and not (all_branches or tags or pins):
        branch, head = repo.refs.head()
        if branch is None:
            raise InvalidArgument("HEAD is detached: name the branch to push", hint="mvc push origin BRANCH")
        if head is None:
            raise UnknownRevision(f"branch {branch[len('refs/heads/'):]!r} has no commits yet", hint="commit first")
        targets[branch] = head
    return targets


def _decide(repo: Repo, remote: str, ref: str, old: str | None, new: str, force: bool) -> str:
    if old == new:
        return "up-to-date"
    if old is None:
        return "created"
    short = ref.split("/", 2)[2]
    if ref.startswith("refs/heads/"):
        if not repo.objects.has(old):
            if force:
                return "forced"
            raise RemoteMoved(f"remote moved, fetch first: {remote}/{short} is at {old[:12]}, which this repository does not have")
        if is_ancestor(repo.objects, old, new):
            return "fast-forward"
        if force:
            return "forced"
        raise HistoriesDiverged(
            f"{short} and {remote}/{short} have diverged: {remote} has commits that {short} does not contain",
            hint=f"`mvc fetch {remote}`, merge them (`mvc merge {remote}/{short}`), then push; or --force to overwrite the remote",
        )
    if force:
        return "forced"
    kind = "tag" if ref.startswith("refs/tags/") else "pin"
    if kind == "pin":
        raise PinProtected(f"pin {short!r} is at {old[:12]} on {remote}; moving it to {new[:12]} needs --force")
    raise AlreadyExists(f"tag {short!r} is at {old[:12]} on {remote}, not {new[:12]}", hint="pass --force to move it on the remote")


def push(
    repo: Repo,
    remote: str = "origin",
    names: Iterable[str] = (),
    *,
    all_branches: bool = False,
    tags: bool = False,
    pins: bool = False,
    force: bool = False,
    jobs: int | None = None,
    backend: Backend | None = None,
    progress: Progress | None = None,
) -> PushResult:
    """Send branches (default: the current one), tags or pins to ``remote``, with their objects and notes.

    Only objects the remote lacks move. Remote refs move last, each by compare-and-swap against
    the value read at the start: a concurrent push makes this one fail with RemoteMoved and leaves
    the remote consistent (at worst with unreferenced objects, which a retry reuses).
    """
    cfg = get_remote(repo, remote)
    jobs = jobs or cfg.jobs
    backend = backend or cfg.open(jobs)
    store = repo.objects
    result = PushResult(remote)
    stats = result.stats
    targets = _push_targets(repo, names, all_branches, tags, pins)
    cache: dict[str, Commit] = {}

    # Notes can be added to old commits at any time: look at those in the pushed history.
    noted = noted_commits(repo)
    noted_pushed = sorted(noted & ancestors(store, targets.values(), cache=cache)) if noted else []

    # One round of small requests: the remote refs and the remote notes lists.
    keys = list(targets) + [f"notes/{c}" for c in noted_pushed]
    states = dict(zip(keys, run_parallel(backend.read_ref, keys, jobs), strict=True))
    where = backend.describe()
    plan: list[tuple[RefUpdate, str | None]] = []  # (update, version read)
    for ref, new in targets.items():
        state = states[ref]
        old = parse_ref(ref, state, where)
        status = _decide(repo, remote, ref, old, new, force)
        plan.append((RefUpdate(ref, old, new, status), state[1] if state else None))
    moving = [(u, v) for u, v in plan if u.status != "up-to-date"]

    if moving:
        if any(u.old is None for u, _v in moving):
            backend.put_new("config", f"[core]\nformat = {FORMAT_VERSION}\n".encode())
        _push_objects(repo, backend, [u.new for u, _v in moving], [u.old for u, _v in plan if u.old and store.has(u.old)],
                      jobs=jobs, stats=stats, progress=progress, cache=cache, result=result)
    result.notes = _push_notes(repo, backend, noted_pushed, states, jobs=jobs)

    # The refs move last.
    for update, version in moving:
        _swap_remote_ref(backend, update, version, remote)
        if update.ref.startswith("refs/heads/") and update.old is None:
            backend.put_new("HEAD", f"ref: {update.ref}\n".encode())  # the first branch pushed becomes the remote's default
    moved_local = False
    for update, _v in plan:
        result.updates.append(update)
        if update.ref.startswith("refs/heads/"):
            tracking = f"refs/remotes/{remote}/{update.ref[len('refs/heads/'):]}"
            if repo.refs.read(tracking) != update.new:
                repo.refs.compare_and_swap(tracking, ANY, update.new, message=f"push: {remote}")
                moved_local = True
    if moved_local:
        repo.index().sync_refs()
    return result


def _push_objects(
    repo: Repo, backend: Backend, tips: list[str], remote_known: list[str], *, jobs: int, stats: TransferStats,
    progress: Progress | None, cache: dict[str, Commit], result: PushResult,
) -> None:
    store = repo.objects
    # Commits the remote has (its refs' values) and their history need no look.
    known = ancestors(store, remote_known, cache=cache)
    candidates = ancestors(store, tips, stop=known, cache=cache)
    if not candidates:
        return
    # What else the remote has (an interrupted push, another branch): one listing when the remote
    # is small enough for that to cost fewer requests than asking object by object (None otherwise).
    listing = backend.scan("objects/", max(1000, 64 * len(candidates)))
    on_remote = set(listing) if listing is not None else None

    def remote_has(oid: str) -> bool:
        return object_key(oid) in on_remote if on_remote is not None else backend.exists(object_key(oid))

    # A candidate commit the remote has carries its whole closure there (write order), so stop at it.
    order = sorted(candidates)
    present = {c for c, has in zip(order, run_parallel(remote_has, order, jobs), strict=True) if has}
    if present:
        known |= ancestors(store, present, stop=known, cache=cache)
        candidates -= known
    new_commits = parents_first(candidates, cache)
    result.commits = len(new_commits)
    if not new_commits:
        return
    # Objects of the parents the remote has are there too: the bytes a fine-tune did not change.
    boundary = {p for c in new_commits for p in cache[c].parents if p not in candidates}
    base = tree_objects(store, [cache[b] if b in cache else load_cached(store, b, cache) for b in boundary]).all()
    mine = tree_objects(store, [cache[c] for c in new_commits])
    structured_sizes = {o: store.size(o) for o in mine.trees | mine.manifests} | {c: store.size(c) for c in new_commits}
    if progress:
        progress.set_total(sum(mine.blobs.values()) + sum(structured_sizes.values()))
    for oid, size in mine.blobs.items():
        if oid in base:
            stats.add_skipped(size, progress)
    for oid in (mine.trees | mine.manifests) & base:
        stats.add_skipped(structured_sizes[oid], progress)
    # Write order: blobs, manifests, trees, then commits parents first. Blobs are asked about
    # (or looked up) before sending; the small structured objects are just written create-only.
    kw = {"jobs": jobs, "stats": stats, "progress": progress, "remote_has": on_remote}
    upload(store, backend, [o for o in mine.blobs if o not in base], **kw)
    upload(store, backend, sorted(mine.manifests - base), check_remote=False, **kw)
    upload(store, backend, sorted(mine.trees - base), check_remote=False, **kw)
    for cid in new_commits:
        upload(store, backend, [cid], check_remote=False, **{**kw, "jobs": 1})


def _push_notes(repo: Repo, backend: Backend, commits: list[str], states: dict, *, jobs: int) -> int:
    """Union the local notes lists of ``commits`` into the remote's (after the note objects). Returns notes sent."""
    sent = 0
    work = []
    for cid in commits:
        local = repo.notes.ids(cid)
        state = states.get(f"notes/{cid}")
        if any(i not in set(parse_note_ids(state)) for i in local):
            work.append((cid, local, state))
    if not work:
        return 0
    upload(repo.objects, backend, sorted({i for _c, local, _s in work for i in local}), jobs=jobs, stats=TransferStats())
    for cid, local, state in work:
        key = f"notes/{cid}"
        for _attempt in range(10):
            remote_ids = parse_note_ids(state)
            merged = remote_ids + [i for i in local if i not in set(remote_ids)]
            if merged == remote_ids:
                break
            try:
                backend.swap_ref(key, state[1] if state else None, note_lines(merged))
                sent += len(merged) - len(remote_ids)
                break
            except RemoteMoved:
                state = backend.read_ref(key)  # someone else added notes: merge again
        else:
            raise RemoteMoved(f"remote moved, fetch first: the notes of {cid[:12]} keep changing on the remote")
    return sent


def _swap_remote_ref(backend: Backend, update: RefUpdate, version: str | None, remote: str) -> None:
    try:
        backend.swap_ref(update.ref, version, (update.new + "\n").encode())
    except RemoteMoved:
        # A retried swap may have landed before its connection dropped: then the ref is ours.
        now = parse_ref(update.ref, backend.read_ref(update.ref), backend.describe())
        if now == update.new:
            return
        short = update.ref.split("/", 2)[2]
        raise RemoteMoved(
            f"remote moved, fetch first: {update.ref} on {remote} changed while pushing (now at {now[:12] if now else 'nothing'}); "
            f"the objects are uploaded, the ref was not moved",
            hint=f"run `mvc fetch {remote}`, merge {remote}/{short} if needed, then retry the push (uploaded objects are not sent again)",
        ) from None

