"""``mvc push``: send branches, tags and pins with the objects the remote lacks."""

from __future__ import annotations

from typing import Annotated

import typer

from mvc.cli import app
from mvc.cli._output import emit_json, human_bytes, info, open_repo, out
from mvc.cli._transfer import jobs_option_help, transfer_bar
from mvc.remotes import push


@app.command("push")
def push_cmd(
    remote: Annotated[str, typer.Argument(help="Remote to push to.")] = "origin",
    refs: Annotated[list[str] | None, typer.Argument(help="Branches, tags or pins to push (default: the current branch).")] = None,
    all_branches: Annotated[bool, typer.Option("--all", help="Push every branch.")] = False,
    tags: Annotated[bool, typer.Option("--tags", help="Push every tag.")] = False,
    pins: Annotated[bool, typer.Option("--pins", help="Push every pin.")] = False,
    force: Annotated[bool, typer.Option("-f", "--force", help="Move remote refs even when that drops commits there.")] = False,
    jobs: Annotated[int | None, typer.Option("-j", "--jobs", help=jobs_option_help())] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Upload what the remote lacks (in parallel, create-only), then move the remote refs by compare-and-swap."""
    repo = open_repo()
    with transfer_bar(f"pushing to {remote}", "sent") as progress:
        result = push(repo, remote, refs or [], all_branches=all_branches, tags=tags, pins=pins, force=force, jobs=jobs, progress=progress)
    if as_json:
        emit_json(result.to_json())
        return
    s = result.stats
    for u in result.updates:
        if u.status == "up-to-date":
            out(f" = {u.ref:<28} {u.new[:12]} (up to date)")
        else:
            out(f" {'+' if u.status == 'forced' else '*'} {u.ref:<28} {(u.old or '')[:12] or '(new)'} -> {u.new[:12]} ({u.status})")
    info(f"{result.commits} commit(s), {s.objects_moved} object(s) sent ({human_bytes(s.bytes_moved)}), "
         f"{human_bytes(s.bytes_skipped)} skipped (already on {remote})" + (f", {result.notes} note(s)" if result.notes else ""))
