"""``mvc switch``: move HEAD to a branch."""

from __future__ import annotations

from typing import Annotated

import typer

from mvc.checkout import switch
from mvc.cli import app
from mvc.cli._output import open_repo, out, progress_bar


@app.command("switch")
def switch_cmd(
    name: Annotated[str, typer.Argument(help="Branch to switch to.")],
    create: Annotated[bool, typer.Option("-c", "--create", help="Create the branch first.")] = False,
    start: Annotated[str, typer.Option("--start", help="Where a created branch starts.")] = "HEAD",
    force: Annotated[bool, typer.Option("-f", "--force", help="Discard uncommitted changes in the worktree.")] = False,
) -> None:
    """Switch to a branch, updating the worktree to its commit."""
    repo = open_repo()
    with progress_bar("switching") as (advance, set_total):
        cid = switch(repo, name, create=create, start=start, force=force, progress=advance, on_total=set_total)
    out(f"Switched to {'a new ' if create else ''}branch {name!r}" + (f" at {cid[:12]}" if cid else " (no commits yet)"))
