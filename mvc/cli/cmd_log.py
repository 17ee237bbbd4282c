"""``mvc log``: history of a ref, newest first."""

from __future__ import annotations

from typing import Annotated

import typer

from mvc.cli import app
from mvc.cli._output import emit_json, open_repo, out
from mvc.history import decorations, graph_lines


@app.command("log")
def log_cmd(
    ref: Annotated[str, typer.Argument(help="Where to start (branch, tag, commit id, HEAD~N).")] = "HEAD",
    n: Annotated[int | None, typer.Option("-n", "--max-count", help="Show at most N commits.")] = None,
    graph: Annotated[bool, typer.Option("--graph", help="Draw the commit graph.")] = False,
    oneline: Annotated[bool, typer.Option("--oneline", help="One line per commit.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the commits as JSON.")] = False,
) -> None:
    """Show the commit history, newest first."""
    repo = open_repo()
    tip = repo.resolve(ref)
    commits = repo.index().ancestry(tip, limit=n)
    if as_json:
        emit_json(commits)
        return
    decos = decorations(repo)
    if graph or oneline:
        for prefix, c in graph_lines(commits) if graph else ((None, c) for c in commits):
            if c is None:
                out(prefix)
                continue
            d = f" ({', '.join(decos[c['id']])})" if c["id"] in decos else ""
            first = c["message"].strip().splitlines()[0] if c["message"].strip() else ""
            kind = f" [{c['kind']}]" if c["kind"] != "commit" else ""
            out(f"{prefix + ' ' if prefix else ''}{c['id'][:12]}{d}{kind} {first}")
        return
    for i, c in enumerate(commits):
        if i:
            out()
        d = f" ({', '.join(decos[c['id']])})" if c["id"] in decos else ""
        out(f"commit {c['id']}{d}")
        if len(c["parents"]) > 1:
            out("Merge:  " + " ".join(p[:12] for p in c["parents"]))
        out(f"Author: {c['author']}")
        out(f"Date:   {c['time']}")
        if c["kind"] != "commit":
            out(f"Kind:   {c['kind']}")
        out()
        for line in (c["message"] or "(no message)").splitlines():
            out(f"    {line}")
