"""``mvc query``: SQL over the lineage index."""

from __future__ import annotations

from typing import Annotated

import typer

from mvc.cli import app
from mvc.cli._output import emit_json, open_repo, out


@app.command("query")
def query_cmd(
    sql: Annotated[str, typer.Argument(help="A SQL query (DuckDB dialect) over commits, parents, refs, files, tensors, blobs.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print rows as JSON objects.")] = False,
) -> None:
    """Run a read-only SQL query over the lineage index."""
    repo = open_repo()
    cols, rows = repo.index().query(sql)
    if as_json:
        emit_json([dict(zip(cols, r, strict=True)) for r in rows])
        return
    if not cols:
        return
    text = [[_cell(v) for v in r] for r in rows]
    widths = [max([len(c)] + [len(r[i]) for r in text]) for i, c in enumerate(cols)]
    out("  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True)).rstrip())
    for r in text:
        out("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip())


def _cell(v: object) -> str:
    if v is None:
        return "NULL"
    if isinstance(v, list):
        return "[" + ", ".join(str(x) for x in v) + "]"
    return str(v)
