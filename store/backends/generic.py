"""Any other fsspec filesystem (``memory://``, ``gcs://``, ``abfs://`` …) through its generic API.

fsspec offers no portable conditional write, so create-only and compare-and-swap are made
atomic by a lock held in this process (exact for ``memory://``, which lives in one process).
For shared remotes on other protocols, concurrent pushers from different machines are not
excluded: use ``s3://`` or ``file://`` for remotes that several writers push to.
"""

from __future__ import annotations

import threading
from pathlib import Path

import fsspec

from store.backends.base import Backend, read_data
from store.backends.local import check_key
from store.errors import ObjectMissing, RemoteAccessDenied, RemoteError, RemoteMoved
from store.ids import hash_bytes

_LOCKS: dict[str, threading.Lock] = {}
_LOCKS_GUARD = threading.Lock()


def _lock_for(url: str) -> threading.Lock:
    with _LOCKS_GUARD:
        return _LOCKS.setdefault(url, threading.Lock())


class FsspecBackend(Backend):
    """A remote on any fsspec filesystem; see the module docstring for its limits."""

    def __init__(self, url: str, **storage_options) -> None:
        try:
            self.fs, root = fsspec.core.url_to_fs(url, **storage_options)
        except ImportError as e:
            raise RemoteError(f"the library for {url.split('://')[0]}:// remotes is not installed: {e}", hint="install the fsspec implementation it names") from None
        self.root = root.rstrip("/")
        self.url = url
        self._lock = _lock_for(f"{self.fs.protocol}:{self.root}")

    def _path(self, key: str) -> str:
        return f"{self.root}/{check_key(key)}"

    def exists(self, key: str) -> bool:
        return self.fs.isfile(self._path(key))

    def get(self, key: str) -> bytes:
        try:
            return self.fs.cat_file(self._path(key))
        except FileNotFoundError:
            raise ObjectMissing(f"{key} is missing on the remote {self.url}") from None
        except PermissionError as e:
            raise RemoteAccessDenied(f"{self.url}: {e}") from e

    def get_file(self, key: str, local_path: Path) -> int:
        data = self.get(key)
        Path(local_path).write_bytes(data)
        return len(data)

    def put_new(self, key: str, data: bytes | memoryview | Path) -> bool:
        path = self._path(key)
        with self._lock:
            if self.fs.exists(path):
                return False
            try:
                self.fs.pipe_file(path, bytes(read_data(data)), mode="create")
            except FileExistsError:
                return False
            except PermissionError as e:
                raise RemoteAccessDenied(f"{self.url}: {e}") from e
        return True

    def list(self, prefix: str) -> dict[str, int]:
        base = f"{self.root}/{prefix}".rstrip("/")
        try:
            found = self.fs.find(base, detail=True)
        except FileNotFoundError:
            return {}
        out = {}
        strip = self.fs._strip_protocol(self.root).rstrip("/") + "/"
        for path, info in found.items():
            p = self.fs._strip_protocol(path)
            if p.startswith(strip) and info.get("type", "file") == "file":
                out[p[len(strip):]] = int(info.get("size") or 0)
        return out

    def read_ref(self, key: str) -> tuple[bytes, str] | None:
        try:
            data = self.fs.cat_file(self._path(key))
        except FileNotFoundError:
            return None
        return data, hash_bytes(data)

    def swap_ref(self, key: str, version: str | None, data: bytes | None) -> None:
        with self._lock:
            current = self.read_ref(key)
            if (current[1] if current else None) != version:
                raise RemoteMoved(f"remote moved, fetch first: {key} on {self.url} changed since it was read")
            if data is None:
                if current is not None:
                    self.fs.rm_file(self._path(key))
            else:
                self.fs.pipe_file(self._path(key), data)

    def delete(self, key: str) -> None:
        try:
            self.fs.rm_file(self._path(key))
        except FileNotFoundError:
            pass
