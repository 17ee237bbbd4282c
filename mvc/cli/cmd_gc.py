"""``mvc gc``: delete unreachable objects after a grace period."""

from __future__ import annotations

from typing import Annotated

import typer

from mvc.cli import app
from mvc.cli._output import emit_json, human_bytes, open_repo, out
from mvc.errors import InvalidArgument
from store.gc import gc

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> float:
    """``0``, ``90s``, ``30m``, ``2h``, ``14d``, ``2w`` (a bare number is seconds)."""
    t = text.strip().lower()
    try:
        if t and t[-1] in _UNITS:
            value = float(t[:-1]) * _UNITS[t[-1]]
        else:
            value = float(t)
    except ValueError:
        raise InvalidArgument(f"bad duration {text!r}", hint="use a number with a unit: 90s, 30m, 2h, 14d, 2w") from None
    if value < 0 or value != value:
        raise InvalidArgument(f"bad duration {text!r}: must not be negative")
    return value


@app.command("gc")
def gc_cmd(
    grace: Annotated[str, typer.Option("--grace", help="Keep unreachable objects younger than this (e.g. 30m, 2h, 14d; 0 = none).")] = "14d",
    dry_run: Annotated[bool, typer.Option("-n", "--dry-run", help="Report what would be deleted, delete nothing.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Delete objects no ref, pin, reflog entry or recent write can reach."""
    seconds = parse_duration(grace)
    repo = open_repo()
    r = gc(repo.objects, repo.refs, grace_seconds=seconds, dry_run=dry_run)
    if as_json:
        emit_json(vars(r) | {"dry_run": dry_run})
        return
    verb = "would remove" if dry_run else "removed"
    out(f"{verb} {r.removed} object(s), {human_bytes(r.removed_bytes)}; kept {r.reachable} reachable, {r.kept_recent} recent")
