"""Rollback and reflog: move a branch or pin back to an earlier value, and show a ref's history.

A rollback is an ordinary, logged ref move, so it can itself be undone by rolling back again
(one step back from a rollback is the value it replaced).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mvc.checkout import update_worktree
from mvc.errors import InvalidArgument, UnknownRevision
from store.refs import ZERO, ReflogEntry, full_ref_name

if TYPE_CHECKING:
    from mvc.repo import Repo


def reflog_name(repo: Repo, name: str) -> str:
    """The full ref whose reflog ``name`` means (``HEAD``, a branch, ``pins/x``, ``tags/x``, ...)."""
    if name in ("HEAD", "@"):
        return "HEAD"
    if name.startswith("refs/"):
        return name
    ns, _, rest = name.partition("/")
    if ns in ("heads", "tags", "pins", "remotes") and rest:
        return full_ref_name(ns, rest)
    for ns in ("heads", "tags", "pins"):
        full = full_ref_name(ns, name)
        if repo.refs.read(full) is not None or repo.refs.reflog(full):
            return full
    raise UnknownRevision(f"no reflog for {name!r}", hint="reflogs exist for HEAD, branches, tags and pins/NAME")


def reflog(repo: Repo, name: str = "HEAD") -> tuple[str, list[ReflogEntry]]:
    """``(full ref name, entries newest first)``."""
    full = reflog_name(repo, name)
    return full, list(reversed(repo.refs.reflog(full)))


def rollback(
    repo: Repo, namespace: str, name: str, *, to: str | None = None, steps: int = 1, reason: str = "", force: bool = False, who: str | None = None
) -> tuple[str, str]:
    """Move ``refs/<namespace>/<name>`` back ``steps`` moves in its reflog, or to ``to``; return (old, new).

    For the checked-out branch the worktree is updated too (refused when it has uncommitted
    changes, unless ``force``).
    """
    if namespace not in ("heads", "pins"):
        raise InvalidArgument("only branches and pins can be rolled back")
    ref = full_ref_name(namespace, name)
    current = repo.refs.read(ref)
    what = "branch" if namespace == "heads" else "pin"
    if current is None:
        raise UnknownRevision(f"no {what} named {name!r}")
    if to is not None:
        target = repo.resolve(to)
        how = f"to {to}"
    else:
        if steps < 1:
            raise InvalidArgument("--steps must be at least 1")
        entries = repo.refs.reflog(ref)
        if steps > len(entries) or entries[-steps].old == ZERO:
            usable = sum(1 for e in entries if e.old != ZERO)
            raise InvalidArgument(f"the reflog of {what} {name!r} goes back only {usable} move(s)", hint=f"see them with `mvc reflog {'pins/' if namespace == 'pins' else ''}{name}`")
        target = entries[-steps].old
        how = f"{steps} step(s) back"
    if target == current:
        raise InvalidArgument(f"{what} {name!r} is already at {target[:12]}")
    repo.read_commit(target)  # must be a complete commit
    is_current = namespace == "heads" and repo.refs.head()[0] == ref
    if is_current:
        update_worktree(repo, target, force=force)
    message = f"rollback: {how} ({current[:12]} -> {target[:12]})" + (f": {reason}" if reason else "")
    repo.refs.compare_and_swap(ref, current, target, message=message, who=who)
    repo.index().sync_refs()
    return current, target
