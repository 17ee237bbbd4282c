"""``mvc init``: create a repository."""

from __future__ import annotations

from typing import Annotated

import typer

from mvc.cli import app
from mvc.cli._output import info, out
from mvc.repo import Repo


@app.command("init")
def init_cmd(
    path: Annotated[str, typer.Argument(help="Directory to create the repository in.")] = ".",
    branch: Annotated[str, typer.Option("-b", "--initial-branch", help="Name of the first branch.")] = "main",
) -> None:
    """Create an empty mvc repository (a .mvc directory)."""
    repo = Repo.init(path, branch=branch)
    out(f"Initialised empty mvc repository in {repo.dir}")
    info("next: mvc commit path/to/model-dir -m \"base\"")
