"""``mvc pin`` / ``mvc unpin``: protected refs for known-good models."""

from __future__ import annotations

from typing import Annotated

import typer

from mvc import pins
from mvc.cli import app
from mvc.cli._output import author_from_env, emit_json, open_repo, out


@app.command("pin")
def pin_cmd(
    args: Annotated[list[str] | None, typer.Argument(help="NAME [REF] to pin, or `verify NAME [DIR]`.")] = None,
    reason: Annotated[str, typer.Option("--reason", help="Why this model is pinned; recorded with the pin.")] = "",
    force: Annotated[bool, typer.Option("-f", "--force", help="Move an existing pin to another commit.")] = False,
    list_: Annotated[bool, typer.Option("--list", "-l", help="List pins.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False,
) -> None:
    """Pin a known-good commit (`mvc pin NAME [REF]`), list pins, or verify one (`mvc pin verify NAME [DIR]`)."""
    repo = open_repo()
    args = list(args or [])
    if list_ or not args:
        items = pins.list_pins(repo)
        if as_json:
            emit_json([p.to_json() for p in items])
            return
        for p in items:
            out(f"{p.name:<20} {p.commit[:12]}  {p.time}  {p.who}  {p.reason}")
        return
    if args[0] == "verify" and len(args) in (2, 3):
        p = pins.verify(repo, args[1], args[2] if len(args) == 3 else None)
        if as_json:
            emit_json(p.to_json() | {"ok": True, "checked_directory": args[2] if len(args) == 3 else None})
            return
        where = f" and {args[2]}" if len(args) == 3 else ""
        out(f"pin {p.name} at {p.commit[:12]}: {len(p.sha256)} file(s) verified in the store{where}")
        return
    if len(args) > 2:
        raise typer.BadParameter("expected NAME [REF]")
    p = pins.pin(repo, args[0], args[1] if len(args) == 2 else "HEAD", reason=reason, force=force, who=author_from_env(repo))
    if as_json:
        emit_json(p.to_json())
        return
    out(f"Pinned {p.name} at {p.commit[:12]} ({len(p.sha256)} file checksums recorded)")


@app.command("unpin")
def unpin_cmd(
    name: Annotated[str, typer.Argument(help="The pin to remove.")],
    force: Annotated[bool, typer.Option("-f", "--force", help="Required: pins are protected.")] = False,
    reason: Annotated[str, typer.Option("--reason", help="Why; recorded in the pin's reflog.")] = "",
) -> None:
    """Remove a pin (needs --force; the reflog keeps its history)."""
    repo = open_repo()
    was = pins.unpin(repo, name, force=force, reason=reason, who=author_from_env(repo))
    out(f"Removed pin {name} (was {was[:12]})")
