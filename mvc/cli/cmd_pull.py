"""``mvc pull``: fetch, then fast-forward the branch and the worktree; or fetch only some files."""

from __future__ import annotations

from typing import Annotated

import typer

from mvc.cli import app
from mvc.cli._output import emit_json, human_bytes, info, open_repo, out
from mvc.cli._transfer import jobs_option_help, phase, transfer_bar
from mvc.cli.cmd_fetch import print_updates
from mvc.errors import InvalidArgument
from mvc.remotes import pull, pull_partial


@app.command("pull")
def pull_cmd(
    remote: Annotated[str, typer.Argument(help="Remote to pull from.")] = "origin",
    branch: Annotated[str | None, typer.Argument(help="Branch to pull (default: the current one).")] = None,
    only: Annotated[str | None, typer.Option("--only", help="Comma-separated globs: fetch only these files ('tokenizer*,config.json') or tensors ('model.safetensors:*embed*'); no ref moves.")] = None,
    output: Annotated[str | None, typer.Option("-o", "--output", help="With --only: write the selected files into this directory instead of the worktree.")] = None,
    force: Annotated[bool, typer.Option("-f", "--force", help="Overwrite uncommitted changes in the worktree.")] = False,
    jobs: Annotated[int | None, typer.Option("-j", "--jobs", help=jobs_option_help())] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Fetch from the remote and fast-forward the branch (and the worktree); diverged histories need `mvc merge`."""
    repo = open_repo()
    if only is not None:
        if branch is None:
            branch = repo.head()[0]
            if branch is None:
                raise InvalidArgument("HEAD is detached: name the branch to pull from", hint=f"mvc pull {remote} BRANCH --only ...")
        with transfer_bar(f"pulling from {remote}", "received") as progress:
            part = pull_partial(repo, remote, branch, only.split(","), output=output, force=force, jobs=jobs, progress=progress)
        if as_json:
            emit_json(part.to_json())
            return
        for p in part.files:
            out(f" {p}")
        for p, names in part.tensors.items():
            out(f" {p}: {len(names)} tensor(s)")
        info(f"wrote {len(part.files) + len(part.tensors)} file(s) of {remote}/{branch} ({part.commit[:12]}) into {part.output}; "
             f"{human_bytes(part.stats.bytes_moved)} received, {human_bytes(part.stats.bytes_skipped)} already here; no ref moved")
        return
    with transfer_bar(f"pulling from {remote}", "received") as progress:
        advance, set_total = phase(progress, "updating worktree")
        result = pull(repo, remote, branch, force=force, jobs=jobs, progress=progress, worktree_progress=advance, on_total=set_total)
    if as_json:
        emit_json(result.to_json())
        return
    print_updates(result.fetch.updates)
    if result.status == "up-to-date":
        out(f"Already up to date: {result.branch} at {result.new[:12]}")
    else:
        out(f"Fast-forward {result.branch}: {(result.old or '')[:12] or '(new)'} -> {result.new[:12]}")
        if result.worktree:
            info(f"updated the worktree {result.worktree}")
