"""``mvc show``: one commit's metadata, files and tensor summary."""

from __future__ import annotations

from typing import Annotated

import typer

from mvc.cli import app
from mvc.cli._output import emit_json, human_bytes, open_repo, out
from mvc.history import describe_commit


@app.command("show")
def show_cmd(
    ref: Annotated[str, typer.Argument(help="The commit to show.")] = "HEAD",
    as_json: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False,
    files: Annotated[bool, typer.Option("--files/--no-files", help="List the files.")] = True,
) -> None:
    """Show a commit: metadata, lineage, metrics, files and a tensor summary."""
    repo = open_repo()
    d = describe_commit(repo, repo.resolve(ref))
    if as_json:
        emit_json(d if files else {k: v for k, v in d.items() if k != "files"})
        return
    out(f"commit {d['id']}")
    for p in d["parents"]:
        out(f"parent {p}")
    out(f"Author: {d['author']}")
    out(f"Date:   {d['time']}")
    out(f"Kind:   {d['kind']}")
    out()
    for line in (d["message"] or "(no message)").splitlines():
        out(f"    {line}")
    for key in ("lineage", "metrics"):
        if d[key]:
            out()
            out(f"{key.capitalize()}:")
            for k, v in sorted(d[key].items()):
                out(f"  {k}: {v}")
    t = d["tensors"]
    out()
    out(f"Files: {len(d['files'])}, {human_bytes(d['total_bytes'])}")
    if t["count"]:
        dtypes = ", ".join(f"{k}: {v:,}" for k, v in sorted(t["parameters_by_dtype"].items()))
        out(f"Tensors: {t['count']}, {t['parameters']:,} parameters ({dtypes}), {human_bytes(t['bytes'])}")
    if files:
        for f in d["files"]:
            extra = f"  {f['tensors']} tensors" if f.get("tensors") else ""
            out(f"  {f['mode']}  {human_bytes(f['size']):>10}  {f['path']}{extra}")
