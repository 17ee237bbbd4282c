"""``mvc commit``: snapshot a model directory."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from mvc.cli import app
from mvc.cli._output import author_from_env, emit_json, human_bytes, info, open_repo, out, progress_bar
from mvc.errors import InvalidArgument


def _json_option(text: str | None, what: str) -> dict:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError as e:
        raise InvalidArgument(f"--{what} is not valid JSON: {e}") from None
    if not isinstance(value, dict):
        raise InvalidArgument(f"--{what} must be a JSON object")
    return value


@app.command("commit")
def commit_cmd(
    directory: Annotated[str | None, typer.Argument(help="Model directory to snapshot (default: the repository's worktree).")] = None,
    message: Annotated[str, typer.Option("-m", "--message", help="Commit message.")] = "",
    kind: Annotated[str, typer.Option("--kind", help="Commit kind (commit, checkpoint, train, merge, ...).")] = "commit",
    branch: Annotated[str | None, typer.Option("-b", "--branch", help="Commit onto this branch instead of HEAD's.")] = None,
    lineage: Annotated[str | None, typer.Option("--lineage", help="Lineage as a JSON object (datasets, base, ...).")] = None,
    metrics: Annotated[str | None, typer.Option("--metrics", help="Metrics as a JSON object.")] = None,
    allow_empty: Annotated[bool, typer.Option("--allow-empty", help="Commit even if nothing changed.")] = False,
    follow_symlinks: Annotated[bool, typer.Option("--follow-symlinks", help="Store the content symlinks point to.")] = False,
    no_verify: Annotated[bool, typer.Option("--no-verify", help="Skip the pre-commit and post-commit hooks.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Snapshot a model directory into the store and move the branch to it."""
    repo = open_repo()
    with progress_bar("committing") as (advance, set_total):
        result = repo.commit(
            directory, message, kind=kind, branch=branch, lineage=_json_option(lineage, "lineage"), metrics=_json_option(metrics, "metrics"),
            author=author_from_env(repo), allow_empty=allow_empty, follow_symlinks=follow_symlinks, run_hooks=not no_verify,
            progress=advance, on_total=set_total,
        )
    for warning in repo.warnings:
        info(f"warning: {warning}")
    s = result.stats
    if as_json:
        emit_json({"commit": result.id, "branch": result.branch, "tree": result.tree, "bytes_written": s.bytes_written,
                   "bytes_existing": s.bytes_existing, "files_read": s.files_read, "files_cached": s.files_cached})
        return
    where = result.branch or "detached HEAD"
    out(f"[{where} {result.id[:12]}] {message.strip().splitlines()[0] if message.strip() else '(no message)'}")
    out(f" {human_bytes(s.bytes_written)} new, {human_bytes(s.bytes_existing)} already stored; "
        f"{s.files_read} file(s) read, {s.files_cached} unchanged (not read)")
