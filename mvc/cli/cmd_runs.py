"""``mvc runs``: training runs and their status (queued, running, checkpointing, completed, failed, cancelled)."""

from __future__ import annotations

from typing import Annotated

import typer

from mvc.cli import app
from mvc.cli._output import emit_json, open_repo, out
from mvc.errors import RunNotFound


@app.command("runs")
def runs_cmd(
    name: Annotated[str | None, typer.Argument(help="Show only this run (with its spec and metrics).")] = None,
    status: Annotated[str | None, typer.Option("--status", help="Only runs with this status.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the runs as JSON.")] = False,
) -> None:
    """List training runs with their status, step and latest commit."""
    repo = open_repo()
    rows = repo.index().runs()
    if name is not None:
        rows = [r for r in rows if r["name"] == name]
        if not rows:
            raise RunNotFound(f"no run named {name!r}")
    if status is not None:
        rows = [r for r in rows if r["status"] == status]
    if as_json:
        emit_json(rows if name is None else rows[0])
        return
    if name is not None:
        r = rows[0]
        for key in ("name", "status", "method", "branch", "base", "head", "step", "max_steps", "checkpoints", "started", "updated", "error"):
            if r.get(key) is not None:
                out(f"{key + ':':<12} {r[key]}")
        if r["metrics"]:
            out("metrics:")
            for k, v in sorted(r["metrics"].items()):
                out(f"  {k}: {v}")
        return
    if not rows:
        out("no training runs yet (start one with `mvc train`)")
        return
    header = ("NAME", "STATUS", "METHOD", "STEP", "HEAD", "UPDATED")
    table = [header] + [
        (r["name"], r["status"], r["method"] or "-", f"{r['step']}/{r['max_steps']}" if r["max_steps"] else str(r["step"]),
         (r["head"] or "-")[:12], (r["updated"] or "")[:19].replace("T", " "))
        for r in rows
    ]
    widths = [max(len(str(row[i])) for row in table) for i in range(len(header))]
    for row in table:
        out("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
