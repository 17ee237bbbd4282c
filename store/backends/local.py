"""``file://`` remotes: a directory on a local or network filesystem.

Create-only writes go to ``tmp/`` first and are published with ``link(2)``, which fails when the
name exists, so an object is never visible half-written and never overwritten. Refs move under a
lock file (``O_CREAT|O_EXCL``, the same ``RefLock`` local refs use) by compare-then-rename.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from store.atomic import write_atomic
from store.backends.base import Backend
from store.errors import MvcError, ObjectMissing, RefLocked, RemoteAccessDenied, RemoteError, RemoteMoved, RemoteNotFound, UnsafePath
from store.ids import hash_bytes
from store.refs import RefLock

_PRIVATE = ("tmp/", "locks/")


def check_key(key: str) -> str:
    """Refuse keys that could leave the remote's root (they come from listings we do not trust)."""
    parts = key.split("/")
    if not key or key.startswith("/") or "\\" in key or any(p in ("", ".", "..") for p in parts):
        raise UnsafePath(f"unsafe remote key {key!r}")
    return key


class LocalBackend(Backend):
    """A remote in a local directory; see the module docstring."""

    def __init__(self, root: Path | str, *, fsync: bool = True, lock_timeout: float = 10.0) -> None:
        self.root = Path(root).absolute()
        self.url = self.root.as_uri()
        self.fsync = fsync
        self.lock_timeout = lock_timeout

    # -- helpers -------------------------------------------------------------------------
    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def _root_missing(self) -> bool:
        """True when the root does not exist yet but could be created (its parent exists)."""
        if self.root.is_dir():
            return False
        if self.root.parent.is_dir() and not self.root.exists():
            return True
        raise RemoteNotFound(f"remote directory {self.root} does not exist (nor does its parent)")

    def _translate(self, e: OSError, key: str) -> MvcError:
        if isinstance(e, PermissionError):
            return RemoteAccessDenied(f"permission denied on {self.root / key}: {e.strerror}", hint="check the directory's permissions")
        return RemoteError(f"{self.root / key}: {e.strerror or e}")

    def _tmp(self) -> tuple[int, str]:
        d = self.root / "tmp"
        d.mkdir(parents=True, exist_ok=True)
        return tempfile.mkstemp(prefix="put-", dir=d)

    def _fsync_dir(self, d: Path) -> None:
        if not self.fsync:
            return
        fd = os.open(d, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    # -- protocol ------------------------------------------------------------------------
    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            self._root_missing()
            raise ObjectMissing(f"{key} is missing on the remote {self.url}") from None
        except OSError as e:
            raise self._translate(e, key) from e

    def get_file(self, key: str, local_path: Path) -> int:
        try:
            shutil.copyfile(self._path(key), local_path)
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            self._root_missing()
            raise ObjectMissing(f"{key} is missing on the remote {self.url}") from None
        except OSError as e:
            raise self._translate(e, key) from e
        return os.path.getsize(local_path)

    def put_new(self, key: str, data: bytes | memoryview | Path) -> bool:
        final = self._path(key)
        if final.is_file():
            return False
        self._root_missing()
        try:
            self.root.mkdir(exist_ok=True)
            fd, tmp = self._tmp()
            try:
                with os.fdopen(fd, "wb") as f:
                    if isinstance(data, Path):
                        with open(data, "rb") as src:
                            shutil.copyfileobj(src, f, 4 * 1024 * 1024)
                    else:
                        f.write(data)
                    if self.fsync:
                        f.flush()
                        os.fsync(f.fileno())
                final.parent.mkdir(parents=True, exist_ok=True)
                try:
                    os.link(tmp, final)  # fails if the name exists: create-only and atomic
                except FileExistsError:
                    return False
                self._fsync_dir(final.parent)
                return True
            finally:
                os.unlink(tmp)
        except OSError as e:
            raise self._translate(e, key) from e

    def list(self, prefix: str) -> dict[str, int]:
        if self._root_missing():
            return {}
        base = self.root / prefix.rstrip("/") if prefix else self.root
        out: dict[str, int] = {}
        if not base.is_dir():
            return out
        for dirpath, _dirs, files in os.walk(base):
            for fn in files:
                full = os.path.join(dirpath, fn)
                key = os.path.relpath(full, self.root).replace(os.sep, "/")
                if key.startswith(_PRIVATE):
                    continue
                try:
                    out[key] = os.path.getsize(full)
                except FileNotFoundError:
                    continue
        return out

    def read_ref(self, key: str) -> tuple[bytes, str] | None:
        try:
            data = self._path(key).read_bytes()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            self._root_missing()
            return None
        except OSError as e:
            raise self._translate(e, key) from e
        return data, hash_bytes(data)

    def _lock(self, key: str) -> RefLock:
        flat = check_key(key).replace("%", "%25").replace("/", "%2F")
        return RefLock(self.root / "locks" / (flat + ".lock"), f"remote {key}", self.lock_timeout)

    def swap_ref(self, key: str, version: str | None, data: bytes | None) -> None:
        self._root_missing()
        path = self._path(key)
        try:
            self.root.mkdir(exist_ok=True)
            with self._lock(key):
                current = self.read_ref(key)
                current_version = current[1] if current else None
                if current_version != version:
                    raise RemoteMoved(f"remote moved, fetch first: {key} on {self.url} changed since it was read")
                if data is None:
                    path.unlink(missing_ok=True)
                    return
                path.parent.mkdir(parents=True, exist_ok=True)
                write_atomic(path, data, tmp_dir=self.root / "tmp", fsync=self.fsync, prefix="put-")
                self._fsync_dir(path.parent)
        except RefLocked as e:
            raise RemoteMoved(f"remote moved, fetch first: {key} on {self.url} is being updated by someone else", hint=e.hint) from None
        except OSError as e:
            raise self._translate(e, key) from e

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)
