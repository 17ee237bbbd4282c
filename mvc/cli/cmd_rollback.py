"""``mvc rollback``: move a branch or pin back to an earlier commit."""

from __future__ import annotations

from typing import Annotated

import typer

from mvc.cli import app
from mvc.cli._output import author_from_env, info, open_repo, out
from mvc.errors import InvalidArgument
from mvc.rollback import rollback


@app.command("rollback")
def rollback_cmd(
    target: Annotated[list[str] | None, typer.Argument(help="BRANCH, or `pin NAME` (default: the current branch).")] = None,
    to: Annotated[str | None, typer.Option("--to", help="Move to this commit.")] = None,
    steps: Annotated[int, typer.Option("--steps", help="Move back this many moves in the ref's reflog.")] = 1,
    reason: Annotated[str, typer.Option("--reason", help="Why; recorded in the reflog.")] = "",
    force: Annotated[bool, typer.Option("-f", "--force", help="Discard uncommitted changes in the worktree.")] = False,
) -> None:
    """Move a branch or a pin back (recorded in its reflog; run again to undo)."""
    repo = open_repo()
    args = list(target or [])
    if not args:
        branch, _ = repo.head()
        if branch is None:
            raise InvalidArgument("HEAD is detached: name the branch to roll back")
        namespace, name = "heads", branch
    elif args[0] == "pin" and len(args) == 2:
        namespace, name = "pins", args[1]
    elif len(args) == 1:
        namespace, name = "heads", args[0]
    else:
        raise InvalidArgument("expected BRANCH or `pin NAME`")
    old, new = rollback(repo, namespace, name, to=to, steps=steps, reason=reason, force=force, who=author_from_env(repo))
    label = f"pin {name}" if namespace == "pins" else f"branch {name}"
    out(f"Rolled back {label}: {old[:12]} -> {new[:12]}")
    info(f"hint: undo with `mvc rollback {'pin ' if namespace == 'pins' else ''}{name}`")
