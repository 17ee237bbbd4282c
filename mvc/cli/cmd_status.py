"""``mvc status``: what changed in a model directory, per file and per tensor."""

from __future__ import annotations

from typing import Annotated

import typer

from mvc.cli import app
from mvc.cli._output import emit_json, open_repo, out
from mvc.status import status


@app.command("status")
def status_cmd(
    directory: Annotated[str | None, typer.Argument(help="Model directory (default: the repository's worktree).")] = None,
    against: Annotated[str | None, typer.Option("--against", help="Compare with this commit instead of HEAD.")] = None,
    follow_symlinks: Annotated[bool, typer.Option("--follow-symlinks", help="Read the content symlinks point to.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False,
) -> None:
    """Show files and tensors that differ between a model directory and HEAD."""
    repo = open_repo()
    st = status(repo, directory, against=against, follow_symlinks=follow_symlinks)
    if as_json:
        emit_json(st.to_json())
        return
    where = f"On branch {st.branch}" if st.branch else f"HEAD detached at {st.head[:12] if st.head else '?'}"
    out(f"{where}; comparing {st.directory}")
    if st.head is None:
        out("No commits yet.")
    if st.clean:
        out("nothing to commit, model directory clean")
        return
    out("Changes:")
    for f in st.files:
        out(f"  {f.change + ':':<10} {f.path}")
    if st.tensors:
        out("Tensors:")
        for t in st.tensors:
            detail = f"  ({t.detail})" if t.detail else (f"  (from {t.old_path})" if t.change == "moved" else "")
            out(f"  {t.change + ':':<10} {t.name}{detail}")
    out('(use "mvc commit" to record them, "mvc checkout --force" to discard them)')
