"""Refs: named pointers to commits, moved only by compare-and-swap under a lock file.

``refs/heads/<branch>``, ``refs/tags/<tag>``, ``refs/pins/<pin>``, ``refs/remotes/<r>/<b>``
each hold one commit id. ``HEAD`` holds ``ref: refs/heads/<branch>`` or a commit id (detached).
Every move appends a JSON line to ``logs/<ref>`` (the reflog) before the ref file is replaced.
"""

from __future__ import annotations

import getpass
import json
import os
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from store.atomic import write_atomic
from store.errors import AlreadyExists, InvalidRefName, MvcError, RefLocked, RefMoved
from store.ids import is_object_id
from store.paths import check_ref_name

NAMESPACES = ("heads", "tags", "pins", "remotes")
ZERO = "0" * 32
ANY = object()  # expected value that skips the compare in compare_and_swap


def utc_now() -> str:
    """Now, as the ISO 8601 UTC text used in commits and reflogs."""
    now = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now * 1e6) % 1_000_000:06d}Z"


def whoami() -> str:
    """The identity recorded in reflogs when no author is given."""
    try:
        user = getpass.getuser()
    except Exception:
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


@dataclass(frozen=True)
class ReflogEntry:
    old: str
    new: str
    who: str
    time: str
    message: str

    def to_json(self) -> dict:
        return {"old": self.old, "new": self.new, "who": self.who, "time": self.time, "message": self.message}


def full_ref_name(namespace: str, name: str) -> str:
    """``refs/<namespace>/<name>`` after validating ``name``."""
    if namespace not in NAMESPACES:
        raise InvalidRefName(f"unknown ref namespace {namespace!r}")
    return f"refs/{namespace}/{check_ref_name(name)}"


def _check_full(fullname: str) -> str:
    if fullname == "HEAD":
        return fullname
    parts = fullname.split("/", 2)
    if len(parts) != 3 or parts[0] != "refs" or parts[1] not in NAMESPACES:
        raise InvalidRefName(f"not a ref: {fullname!r}")
    check_ref_name(parts[2])
    return fullname


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this host (used to recognise stale lock files)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RefLock:
    """An exclusive lock file (``O_CREAT|O_EXCL``) for one ref.

    A lock left by a process that died on this host (``kill -9``) is recognised by its pid and
    broken; any other held lock is waited for up to ``timeout`` seconds, then RefLocked.
    """

    def __init__(self, path: Path, what: str, timeout: float = 10.0) -> None:
        self.path = path
        self.what = what
        self.timeout = timeout
        self.held = False

    def _break_if_stale(self) -> bool:
        try:
            pid_text, host = self.path.read_text().split()[:2]
            pid = int(pid_text)
        except (FileNotFoundError, ValueError):
            return False
        if host == socket.gethostname() and pid != os.getpid() and not pid_alive(pid):
            try:
                self.path.unlink()
            except FileNotFoundError:
                pass
            return True
        return False

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + self.timeout
        delay = 0.002
        while True:
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                if self._break_if_stale():
                    continue
                if time.monotonic() >= deadline:
                    raise RefLocked(
                        f"{self.what} is locked by another process ({self.path})",
                        hint=f"retry in a moment; if no mvc process is running, remove {self.path}",
                    ) from None
                time.sleep(delay)
                delay = min(delay * 2, 0.1)
                continue
            with os.fdopen(fd, "w") as f:
                f.write(f"{os.getpid()} {socket.gethostname()} {time.time():.3f}\n")
            self.held = True
            return

    def release(self) -> None:
        if self.held:
            self.held = False
            try:
                self.path.unlink()
            except FileNotFoundError:
                pass

    def __enter__(self) -> RefLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class RefStore:
    """Refs, HEAD and reflogs of one repository directory (``.mvc``)."""

    def __init__(self, root: Path, *, fsync: bool = True, lock_timeout: float = 10.0) -> None:
        self.root = Path(root)
        self.fsync = fsync
        self.lock_timeout = lock_timeout

    # -- paths ---------------------------------------------------------------------------
    def _ref_path(self, fullname: str) -> Path:
        return self.root / _check_full(fullname)

    def _log_path(self, fullname: str) -> Path:
        return self.root / "logs" / _check_full(fullname)

    def lock(self, fullname: str) -> RefLock:
        flat = _check_full(fullname).replace("%", "%25").replace("/", "%2F")
        return RefLock(self.root / "locks" / (flat + ".lock"), fullname, self.lock_timeout)

    # -- reading -------------------------------------------------------------------------
    def read(self, fullname: str) -> str | None:
        """The commit id ``fullname`` points to, or None when it does not exist."""
        path = self._ref_path(fullname)
        try:
            text = path.read_text().strip()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return None
        if not is_object_id(text):
            raise MvcError(f"ref {fullname} is damaged: {text[:40]!r}", hint="run `mvc fsck`; restore it with `mvc reflog` and `mvc branch -f`")
        return text

    def list(self, prefix: str = "refs/") -> dict[str, str]:
        """All refs whose full name starts with ``prefix``, as ``{fullname: commit id}``."""
        out: dict[str, str] = {}
        base = self.root / "refs"
        if not base.is_dir():
            return out
        for dirpath, _dirnames, filenames in os.walk(base):
            for fn in filenames:
                full = os.path.relpath(os.path.join(dirpath, fn), self.root).replace(os.sep, "/")
                if not full.startswith(prefix):
                    continue
                try:
                    _check_full(full)
                except InvalidRefName:
                    continue
                oid = self.read(full)
                if oid:
                    out[full] = oid
        return dict(sorted(out.items()))

    def head(self) -> tuple[str | None, str | None]:
        """``(branch fullname or None if detached, commit id or None if unborn)``."""
        try:
            text = (self.root / "HEAD").read_text().strip()
        except FileNotFoundError:
            return "refs/heads/main", None
        if text.startswith("ref: "):
            full = _check_full(text[5:])
            return full, self.read(full)
        if is_object_id(text):
            return None, text
        raise MvcError(f"HEAD is damaged: {text[:40]!r}", hint="write `ref: refs/heads/main` into .mvc/HEAD")

    # -- writing -------------------------------------------------------------------------
    def _write_atomic(self, path: Path, text: str) -> None:
        write_atomic(path, text.encode(), tmp_dir=self.root / "tmp", fsync=self.fsync, prefix="ref-")

    def _append_log(self, fullname: str, entry: ReflogEntry) -> None:
        path = self._log_path(fullname)
        path.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps(entry.to_json(), sort_keys=True, ensure_ascii=False) + "\n"
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode())
            if self.fsync:
                os.fsync(fd)
        finally:
            os.close(fd)

    def _check_no_dir_conflict(self, fullname: str) -> None:
        path = self._ref_path(fullname)
        if path.is_dir():
            raise AlreadyExists(f"cannot create {fullname}: refs exist below it ({fullname}/...)")
        for parent in path.relative_to(self.root).parents:
            p = self.root / parent
            if p != self.root and p.is_file():
                raise AlreadyExists(f"cannot create {fullname}: {parent.as_posix()} exists")

    def compare_and_swap(self, fullname: str, expected: object, new: str | None, *, message: str, who: str | None = None) -> None:
        """Move ``fullname`` from ``expected`` to ``new`` atomically, or raise RefMoved.

        ``expected`` None means the ref must not exist yet; ``ANY`` skips the compare. ``new``
        None deletes the ref. The reflog entry is written before the ref file changes.
        """
        if new is not None and not is_object_id(new):
            raise MvcError(f"refusing to point {fullname} at {new!r}: not a commit id")
        with self.lock(fullname):
            current = self.read(fullname)
            if expected is not ANY and current != expected:
                if expected is None:
                    raise AlreadyExists(f"{fullname} already exists (at {current[:12]})", hint="pick another name, or use --force to move it")
                raise RefMoved(
                    f"{fullname} moved while this command ran (expected {str(expected)[:12] if expected else 'nothing'}, found {current[:12] if current else 'nothing'})"
                )
            if new is not None:
                self._check_no_dir_conflict(fullname)
            self._append_log(fullname, ReflogEntry(current or ZERO, new or ZERO, who or whoami(), utc_now(), message))
            path = self._ref_path(fullname)
            if new is None:
                try:
                    path.unlink()
                except FileNotFoundError:
                    pass
                self._prune_empty_dirs(path.parent)
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                self._write_atomic(path, new + "\n")

    def _prune_empty_dirs(self, d: Path) -> None:
        stop = {self.root / "refs" / ns for ns in NAMESPACES} | {self.root / "refs"}
        while d not in stop and d.is_dir():
            try:
                d.rmdir()
            except OSError:
                return
            d = d.parent

    def set_head(self, target: str, *, message: str, who: str | None = None, expected: object = ANY) -> None:
        """Point HEAD at a branch (``refs/heads/x``) or detach it at a commit id.

        ``expected`` (a commit id, or None for an unborn HEAD) makes it a compare-and-swap on
        the commit HEAD resolves to: detached commits use it so none is overwritten silently.
        """
        if is_object_id(target):
            text = target + "\n"
        else:
            _check_full(target)
            if not target.startswith("refs/heads/"):
                raise InvalidRefName(f"HEAD can only name a branch, not {target}")
            text = f"ref: {target}\n"
        with self.lock("HEAD"):
            branch, old = self.head()
            if expected is not ANY and old != expected:
                raise RefMoved(f"HEAD moved while this command ran (expected {str(expected)[:12] if expected else 'nothing'}, found {old[:12] if old else 'nothing'})")
            new = self.read(target) if not is_object_id(target) else target
            self._append_log("HEAD", ReflogEntry(old or ZERO, new or ZERO, who or whoami(), utc_now(), message))
            self._write_atomic(self.root / "HEAD", text)

    # -- reflog --------------------------------------------------------------------------
    def reflog(self, fullname: str) -> list[ReflogEntry]:
        """Entries of ``fullname``'s reflog, oldest first. Damaged lines are skipped."""
        path = self._log_path(fullname)
        out = []
        try:
            lines = path.read_text().splitlines()
        except FileNotFoundError:
            return out
        for line in lines:
            try:
                d = json.loads(line)
                out.append(ReflogEntry(d["old"], d["new"], d["who"], d["time"], d["message"]))
            except (ValueError, KeyError, TypeError):
                continue
        return out

    def iter_reflogs(self) -> Iterator[tuple[str, list[ReflogEntry]]]:
        """Every reflog (those of deleted refs included)."""
        base = self.root / "logs"
        if not base.is_dir():
            return
        for dirpath, _d, filenames in os.walk(base):
            for fn in filenames:
                full = os.path.relpath(os.path.join(dirpath, fn), base).replace(os.sep, "/")
                try:
                    yield full, self.reflog(full)
                except InvalidRefName:
                    continue
