"""A progress bar for pushes and fetches: bytes moved, and bytes skipped because the other side had them."""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from mvc.cli._output import human_bytes, state
from store.transfer import Progress


class _Bar(Progress):
    def __init__(self, bar, task, verb: str) -> None:
        self.bar, self.task, self.verb = bar, task, verb
        self.sent = self.skip = 0
        self.lock = threading.Lock()

    def _refresh(self) -> None:
        self.bar.update(self.task, detail=f"{self.verb} {human_bytes(self.sent)}, skipped {human_bytes(self.skip)} (already there)")

    def set_total(self, nbytes: int) -> None:
        self.bar.update(self.task, total=nbytes)

    def moved(self, nbytes: int) -> None:
        with self.lock:
            self.sent += nbytes
            self._refresh()
            self.bar.advance(self.task, nbytes)

    def skipped(self, nbytes: int) -> None:
        with self.lock:
            self.skip += nbytes
            self._refresh()
            self.bar.advance(self.task, nbytes)

    def phase(self, description: str) -> tuple[Callable[[int], None], Callable[[int], None]]:
        """A second bar in the same display (checking out after a pull or clone): ``(advance, set_total)``."""
        task = self.bar.add_task(description, total=None, detail="")
        return (lambda n: self.bar.advance(task, n)), (lambda n: self.bar.update(task, total=n))


def phase(bar: Progress | None, description: str) -> tuple[Callable[[int], None] | None, Callable[[int], None] | None]:
    """``bar.phase(description)``, or no callbacks when there is no bar."""
    return bar.phase(description) if isinstance(bar, _Bar) else (None, None)


@contextmanager
def transfer_bar(description: str, verb: str) -> Iterator[Progress | None]:
    """Yield a ``Progress`` drawing on stderr when it is a terminal (and not ``-q``), else None."""
    if state["quiet"] or not sys.stderr.isatty():
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, TextColumn, TimeRemainingColumn
    from rich.progress import Progress as RichProgress

    with RichProgress(
        "[progress.description]{task.description}", BarColumn(), DownloadColumn(), TextColumn("{task.fields[detail]}"), TimeRemainingColumn(),
        console=Console(stderr=True), transient=True,
    ) as bar:
        task = bar.add_task(description, total=None, detail="")
        yield _Bar(bar, task, verb)


def jobs_option_help() -> str:
    return "Parallel transfers (default: remote.<name>.jobs in .mvc/config, else 8)."
