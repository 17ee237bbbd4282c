"""``mvc branch``: list, create or delete branches."""

from __future__ import annotations

from typing import Annotated

import typer

from mvc.cli import app
from mvc.cli._output import emit_json, info, open_repo, out


@app.command("branch")
def branch_cmd(
    name: Annotated[str | None, typer.Argument(help="Branch to create (omit to list branches).")] = None,
    start: Annotated[str, typer.Argument(help="Commit the new branch starts at.")] = "HEAD",
    delete: Annotated[str | None, typer.Option("-d", "--delete", help="Delete this branch (its reflog keeps the commits reachable).")] = None,
    force: Annotated[bool, typer.Option("-f", "--force", help="Move the branch if it already exists.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the list as JSON.")] = False,
) -> None:
    """List branches, create one at START, or delete one."""
    repo = open_repo()
    if delete:
        was = repo.delete_ref("heads", delete, message="branch: deleted")
        out(f"Deleted branch {delete} (was {was[:12]})")
        info(f"hint: undo with `mvc branch {delete} {was[:12]}`")
        return
    if name:
        cid = repo.create_ref("heads", name, start, force=force, message=f"branch: {'reset' if force else 'created'} at {start}")
        out(f"Branch {name} at {cid[:12]}")
        return
    current, _ = repo.head()
    branches = {k[len("refs/heads/"):]: v for k, v in repo.refs.list("refs/heads/").items()}
    if as_json:
        emit_json([{"name": b, "commit": c, "current": b == current} for b, c in branches.items()])
        return
    for b, c in branches.items():
        out(f"{'*' if b == current else ' '} {b:<24} {c[:12]}")
    if current and current not in branches:
        out(f"* {current:<24} (no commits yet)")
