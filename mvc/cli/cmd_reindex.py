"""``mvc reindex``: rebuild the DuckDB index from the store."""

from __future__ import annotations

from mvc.cli import app
from mvc.cli._output import open_repo, out


@app.command("reindex")
def reindex_cmd() -> None:
    """Rebuild index.duckdb from objects, refs and reflogs (safe to run any time)."""
    repo = open_repo()
    n = repo.index().reindex()
    out(f"indexed {n} commit(s)")
