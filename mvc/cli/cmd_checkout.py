"""``mvc checkout``: materialise a commit, byte-exact."""

from __future__ import annotations

from typing import Annotated

import typer

from mvc.checkout import checkout, export
from mvc.cli import app
from mvc.cli._output import info, open_repo, out, progress_bar


@app.command("checkout")
def checkout_cmd(
    ref: Annotated[str, typer.Argument(help="Branch, tag, pin or commit to check out.")],
    output: Annotated[str | None, typer.Option("-o", "--output", help="Write the model into this new or empty directory; HEAD does not move.")] = None,
    force: Annotated[bool, typer.Option("-f", "--force", help="Overwrite files and discard uncommitted changes.")] = False,
) -> None:
    """Write a commit's model directory; without -o, move HEAD and update the worktree."""
    repo = open_repo()
    with progress_bar("checking out") as (advance, set_total):
        if output is not None:
            cid = export(repo, ref, output, force=force, progress=advance, on_total=set_total)
            out(f"Wrote {cid[:12]} to {output}")
            return
        cid, branch = checkout(repo, ref, force=force, progress=advance, on_total=set_total)
    if branch:
        out(f"Switched to branch {branch!r} at {cid[:12]}")
    else:
        out(f"HEAD is now at {cid[:12]} (detached)")
        info("hint: to keep commits made from here, create a branch: mvc switch -c NAME")
    if repo.worktree is None:
        info("no worktree recorded; use -o DIR to write the model somewhere")
