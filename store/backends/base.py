"""The remote backend protocol: a flat key -> bytes space with create-only writes and CAS refs.

A remote has the layout of ``.mvc/`` (docs/format.md): ``objects/ab/cdef…``, ``refs/heads|tags|pins/…``,
``notes/<commit id>``, plus ``HEAD`` and ``config``. Keys are relative, ``/``-separated paths.

Contract (every backend passes the same suite, tests/test_remote.py ``BackendContract``):

- ``put_new(key, data)`` writes ``key`` only if it does not exist yet, and the object becomes
  visible complete or not at all. It returns True when it created the key and False when the key
  was already there (which is success for content-addressed objects: the bytes are the same).
- ``get``/``get_file`` return exactly what was written; a missing key raises ``ObjectMissing``.
- ``read_ref(key)`` returns ``(bytes, version)`` or None; ``swap_ref(key, version, data)`` replaces
  the value only if the key still has ``version`` (None: only if the key does not exist) and
  raises ``RemoteMoved`` otherwise. ``data`` None deletes the key. Versions are opaque tokens.
- ``list(prefix)`` returns ``{key: size}`` of every key under ``prefix`` (recursively);
  ``scan(prefix, max_keys)`` the same, or None as soon as there are more than ``max_keys``
  (push uses it to learn in one request what a small remote has, instead of asking per object).
- Failures are ``store.errors`` classes: ``RemoteUnavailable`` for transient ones (the only kind
  ``RetryBackend`` retries), ``RemoteNotFound``/``RemoteAccessDenied`` for permanent ones.

Retries, counting and fault injection are wrappers around a backend (``store.backends.retry``),
never flags inside one, as restic does it.
"""

from __future__ import annotations

from pathlib import Path


class Backend:
    """Base class of remote backends; see the module docstring for the contract."""

    url: str = ""

    def exists(self, key: str) -> bool:
        raise NotImplementedError

    def get(self, key: str) -> bytes:
        raise NotImplementedError

    def get_file(self, key: str, local_path: Path) -> int:
        """Download ``key`` into ``local_path`` (created or truncated); return the bytes written."""
        data = self.get(key)
        with open(local_path, "wb") as f:
            f.write(data)
        return len(data)

    def put_new(self, key: str, data: bytes | memoryview | Path) -> bool:
        """Create ``key`` with ``data`` (bytes, or a local file to upload) unless it exists."""
        raise NotImplementedError

    def list(self, prefix: str) -> dict[str, int]:
        raise NotImplementedError

    def scan(self, prefix: str, max_keys: int) -> dict[str, int] | None:
        listing = self.list(prefix)
        return listing if len(listing) <= max_keys else None

    def read_ref(self, key: str) -> tuple[bytes, str] | None:
        raise NotImplementedError

    def swap_ref(self, key: str, version: str | None, data: bytes | None) -> None:
        raise NotImplementedError

    def delete(self, key: str) -> None:
        """Remove ``key`` unconditionally (tests and repair only; pushes never delete)."""
        raise NotImplementedError

    def close(self) -> None:
        pass

    def describe(self) -> str:
        return self.url


def read_data(data: bytes | memoryview | Path) -> bytes | memoryview:
    """The bytes of ``data``, reading a local file when given a path."""
    if isinstance(data, Path):
        return data.read_bytes()
    return data


class Wrapper(Backend):
    """A backend that forwards every call to ``inner`` (base of retry, counting and fault wrappers)."""

    def __init__(self, inner: Backend) -> None:
        self.inner = inner
        self.url = inner.url

    def _call(self, name: str, *args):
        return getattr(self.inner, name)(*args)

    def exists(self, key: str) -> bool:
        return self._call("exists", key)

    def get(self, key: str) -> bytes:
        return self._call("get", key)

    def get_file(self, key: str, local_path: Path) -> int:
        return self._call("get_file", key, local_path)

    def put_new(self, key: str, data: bytes | memoryview | Path) -> bool:
        return self._call("put_new", key, data)

    def list(self, prefix: str) -> dict[str, int]:
        return self._call("list", prefix)

    def scan(self, prefix: str, max_keys: int) -> dict[str, int] | None:
        return self._call("scan", prefix, max_keys)

    def read_ref(self, key: str) -> tuple[bytes, str] | None:
        return self._call("read_ref", key)

    def swap_ref(self, key: str, version: str | None, data: bytes | None) -> None:
        return self._call("swap_ref", key, version, data)

    def delete(self, key: str) -> None:
        return self._call("delete", key)

    def close(self) -> None:
        self.inner.close()

    def describe(self) -> str:
        return self.inner.describe()
