"""``mvc fsck``: check the repository."""

from __future__ import annotations

from typing import Annotated

import typer

from mvc.cli import app
from mvc.cli._output import emit_json, open_repo, out
from mvc.errors import FsckFailed
from store.fsck import fsck


@app.command("fsck")
def fsck_cmd(
    full: Annotated[bool, typer.Option("--full", help="Also re-hash unreachable objects.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Verify refs and re-hash every reachable object; exit non-zero on any problem."""
    repo = open_repo()
    report = fsck(repo.objects, repo.refs, full=full)
    if as_json:
        emit_json({"ok": report.ok, "refs": report.refs, "commits": report.commits, "objects": report.objects,
                   "unreachable": report.unreachable, "problems": report.problems})
    else:
        for p in report.problems:
            out(f"problem: {p}")
        extra = f", {report.unreachable} unreachable" if full else ""
        out(f"checked {report.refs} refs, {report.commits} commits, {report.objects} objects{extra}: "
            + ("ok" if report.ok else f"{len(report.problems)} problem(s)"))
    if not report.ok:
        raise FsckFailed(f"fsck found {len(report.problems)} problem(s)")
