"""``mvc fetch``: download what a remote has, without touching local branches."""

from __future__ import annotations

from typing import Annotated

import typer

from mvc.cli import app
from mvc.cli._output import emit_json, human_bytes, info, open_repo, out
from mvc.cli._transfer import jobs_option_help, transfer_bar
from mvc.remotes import fetch


def print_updates(updates) -> None:
    for u in updates:
        if u.status == "up-to-date":
            continue
        if u.status in ("kept-local", "conflict"):
            info(f" ! {u.ref:<28} remote has {u.new[:12]}, kept local {u.old[:12] if u.old else ''} ({u.status})")
        else:
            out(f" * {u.ref:<28} {(u.old or '')[:12] or '(new)'} -> {u.new[:12]}")


@app.command("fetch")
def fetch_cmd(
    remote: Annotated[str, typer.Argument(help="Remote to fetch from.")] = "origin",
    jobs: Annotated[int | None, typer.Option("-j", "--jobs", help=jobs_option_help())] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Download missing objects (verified) and update refs/remotes/REMOTE/*, tags, pins and notes."""
    repo = open_repo()
    with transfer_bar(f"fetching from {remote}", "received") as progress:
        result = fetch(repo, remote, jobs=jobs, progress=progress)
    if as_json:
        emit_json(result.to_json())
        return
    print_updates(result.updates)
    s = result.stats
    info(f"{result.commits} commit(s), {s.objects_moved} object(s) received ({human_bytes(s.bytes_moved)}), "
         f"{human_bytes(s.bytes_skipped)} already here" + (f", {result.notes} note(s)" if result.notes else ""))
