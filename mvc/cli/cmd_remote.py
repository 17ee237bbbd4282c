"""``mvc remote``: name the places models are pushed to and fetched from."""

from __future__ import annotations

from typing import Annotated

import typer

from mvc.cli import app
from mvc.cli._output import emit_json, open_repo, out
from mvc.remotes import add_remote, list_remotes, remove_remote

remote_app = typer.Typer(help="Add, list and remove remotes (s3://, file://, memory:// or any fsspec URL).", no_args_is_help=True)
app.add_typer(remote_app, name="remote")


@remote_app.command("add")
def remote_add_cmd(
    name: Annotated[str, typer.Argument(help="Short name for the remote, e.g. origin.")],
    url: Annotated[str, typer.Argument(help="Where it lives: s3://bucket/prefix, file:///path, a local path, memory://x ...")],
    endpoint_url: Annotated[str | None, typer.Option("--endpoint-url", help="S3 endpoint for S3-compatible stores (MinIO ...); otherwise AWS_ENDPOINT_URL or AWS's.")] = None,
    jobs: Annotated[int | None, typer.Option("-j", "--jobs", help="Parallel transfers for this remote (default 8).")] = None,
) -> None:
    """Add a remote. Credentials are never stored: they come from the AWS environment and config files."""
    repo = open_repo()
    remote = add_remote(repo, name, url, endpoint_url=endpoint_url, jobs=jobs)
    out(f"Added remote {remote.name} -> {remote.url}" + (f" (endpoint {remote.endpoint_url})" if remote.endpoint_url else ""))


@remote_app.command("list")
def remote_list_cmd(
    as_json: Annotated[bool, typer.Option("--json", help="Print the list as JSON.")] = False,
) -> None:
    """List remotes."""
    repo = open_repo()
    remotes = list_remotes(repo)
    if as_json:
        emit_json([r.to_json() for r in remotes])
        return
    for r in remotes:
        out(f"{r.name:<12} {r.url}" + (f"  (endpoint {r.endpoint_url})" if r.endpoint_url else ""))


@remote_app.command("remove")
def remote_remove_cmd(
    name: Annotated[str, typer.Argument(help="Remote to forget (its remote-tracking refs go too).")],
) -> None:
    """Remove a remote and its remote-tracking refs; nothing on the remote is touched."""
    repo = open_repo()
    n = remove_remote(repo, name)
    out(f"Removed remote {name} ({n} remote-tracking ref(s))")
