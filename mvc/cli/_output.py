"""Output conventions: data on stdout, progress and messages on stderr, ``--json`` for machines."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from mvc.repo import Repo

state: dict[str, Any] = {"quiet": False}


def open_repo() -> Repo:
    """The repository named by ``MVC_REPO``, or found from the current directory (``-C`` changes it)."""
    start = os.environ.get("MVC_REPO") or "."
    repo = Repo.find(start)
    timeout = os.environ.get("MVC_BUSY_TIMEOUT")
    if timeout:
        try:
            repo.busy_timeout = float(timeout)
        except ValueError:
            pass
    return repo


def author_from_env(repo: Repo) -> str | None:
    return os.environ.get("MVC_AUTHOR") or repo.config.get("user", "name", fallback=None)


def out(text: str = "") -> None:
    print(text)


def info(text: str) -> None:
    if not state["quiet"]:
        print(text, file=sys.stderr)


def emit_json(data: Any) -> None:
    print(json.dumps(data, indent=2, sort_keys=True, default=str))


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


@contextmanager
def progress_bar(description: str) -> Iterator[tuple[Callable[[int], None], Callable[[int], None]]]:
    """Yield ``(advance, set_total)``; draws a byte progress bar on stderr when it is a terminal."""
    if state["quiet"] or not sys.stderr.isatty():
        yield (lambda n: None), (lambda n: None)
        return
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn, TransferSpeedColumn

    with Progress(
        "[progress.description]{task.description}", BarColumn(), DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn(),
        console=Console(stderr=True), transient=True,
    ) as bar:
        task = bar.add_task(description, total=None)
        yield (lambda n: bar.advance(task, n)), (lambda n: bar.update(task, total=n))
