"""``mvc tag``: name a commit."""

from __future__ import annotations

from typing import Annotated

import typer

from mvc.cli import app
from mvc.cli._output import emit_json, open_repo, out


@app.command("tag")
def tag_cmd(
    name: Annotated[str | None, typer.Argument(help="Tag to create (omit to list tags).")] = None,
    ref: Annotated[str, typer.Argument(help="Commit to tag.")] = "HEAD",
    delete: Annotated[str | None, typer.Option("-d", "--delete", help="Delete this tag.")] = None,
    force: Annotated[bool, typer.Option("-f", "--force", help="Move the tag if it exists.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the list as JSON.")] = False,
) -> None:
    """List tags, create one, or delete one."""
    repo = open_repo()
    if delete:
        was = repo.delete_ref("tags", delete, message="tag: deleted")
        out(f"Deleted tag {delete} (was {was[:12]})")
        return
    if name:
        cid = repo.create_ref("tags", name, ref, force=force, message=f"tag: at {ref}")
        out(f"Tag {name} at {cid[:12]}")
        return
    tags = {k[len("refs/tags/"):]: v for k, v in repo.refs.list("refs/tags/").items()}
    if as_json:
        emit_json([{"name": t, "commit": c} for t, c in tags.items()])
        return
    for t, c in tags.items():
        out(f"{t:<24} {c[:12]}")
