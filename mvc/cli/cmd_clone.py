"""``mvc clone``: a new repository from a remote, with its default branch checked out."""

from __future__ import annotations

from typing import Annotated

import typer

from mvc.cli import app
from mvc.cli._output import emit_json, human_bytes, info, out
from mvc.cli._transfer import jobs_option_help, phase, transfer_bar
from mvc.remotes import clone, default_clone_dir


@app.command("clone")
def clone_cmd(
    url: Annotated[str, typer.Argument(help="Remote URL: s3://bucket/prefix, file:///path, a local path, memory://x ...")],
    directory: Annotated[str | None, typer.Argument(help="Directory to create (default: the last part of the URL).")] = None,
    branch: Annotated[str | None, typer.Option("-b", "--branch", help="Branch to check out (default: the remote's HEAD, else main).")] = None,
    endpoint_url: Annotated[str | None, typer.Option("--endpoint-url", help="S3 endpoint for S3-compatible stores (MinIO ...); stored for the remote origin.")] = None,
    jobs: Annotated[int | None, typer.Option("-j", "--jobs", help=jobs_option_help())] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Create a repository from a remote (named origin), fetch everything and check out its default branch."""
    target = directory or default_clone_dir(url)
    with transfer_bar("cloning", "received") as progress:
        advance, set_total = phase(progress, "checking out")
        repo, fetched, branch_name = clone(url, target, endpoint_url=endpoint_url, branch=branch, jobs=jobs, progress=progress,
                                           worktree_progress=advance, on_total=set_total)
    if as_json:
        emit_json({"directory": str(repo.root), "branch": branch_name, "fetch": fetched.to_json()})
        return
    s = fetched.stats
    out(f"Cloned {url} into {repo.root}" + (f", branch {branch_name}" if branch_name else " (the remote is empty)"))
    info(f"{fetched.commits} commit(s), {s.objects_moved} object(s), {human_bytes(s.bytes_moved)} received")
