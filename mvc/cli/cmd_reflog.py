"""``mvc reflog``: the history of a ref."""

from __future__ import annotations

from typing import Annotated

import typer

from mvc.cli import app
from mvc.cli._output import emit_json, open_repo, out
from mvc.rollback import reflog


@app.command("reflog")
def reflog_cmd(
    ref: Annotated[str, typer.Argument(help="HEAD, a branch, tags/NAME or pins/NAME.")] = "HEAD",
    n: Annotated[int | None, typer.Option("-n", "--max-count", help="Show at most N entries.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the entries as JSON.")] = False,
) -> None:
    """Show every move of a ref, newest first: who moved it, when, and why."""
    repo = open_repo()
    full, entries = reflog(repo, ref)
    entries = entries[:n] if n is not None else entries
    if as_json:
        emit_json([e.to_json() for e in entries])
        return
    short = full.split("/", 2)[-1] if full != "HEAD" else "HEAD"
    for i, e in enumerate(entries):
        out(f"{e.new[:12]} {short}@{{{i}}}: {e.time} {e.who}: {e.message}")
