"""Remote backends: where pushes go and fetches come from (see ``store.backends.base`` for the contract).

``open_backend(url)`` picks the implementation from the URL's scheme and wraps it in
``RetryBackend``: ``file://`` (and plain paths) -> ``LocalBackend``, ``s3://`` -> ``S3Backend``,
anything else fsspec knows (``memory://``, ``gcs://`` …) -> ``FsspecBackend``.
"""

from __future__ import annotations

from pathlib import Path

from store.backends.base import Backend, Wrapper
from store.backends.retry import RetryBackend
from store.errors import InvalidArgument

__all__ = ["Backend", "RetryBackend", "Wrapper", "normalize_url", "open_backend", "open_raw_backend"]


def normalize_url(url: str, *, base: Path | None = None) -> str:
    """A remote URL as stored in config: plain paths become absolute ``file://`` URLs."""
    url = url.strip()
    if not url:
        raise InvalidArgument("empty remote URL")
    if "://" not in url:
        path = Path(url).expanduser()
        if not path.is_absolute():
            path = (base or Path.cwd()) / path
        return Path(path).absolute().as_uri()
    scheme = url.split("://", 1)[0].lower()
    if scheme == "s3a":
        url = "s3://" + url.split("://", 1)[1]
    return url.rstrip("/") if not url.endswith(":///") else url


def open_raw_backend(url: str, *, endpoint_url: str | None = None, jobs: int = 8) -> Backend:
    """The backend for ``url`` without the retry wrapper."""
    url = normalize_url(url)
    scheme = url.split("://", 1)[0].lower()
    if scheme == "file":
        from urllib.parse import unquote, urlparse

        from store.backends.local import LocalBackend

        parsed = urlparse(url)
        if parsed.netloc not in ("", "localhost"):
            raise InvalidArgument(f"file:// URLs must name a local path, not host {parsed.netloc!r}", hint="write file:///absolute/path")
        return LocalBackend(Path(unquote(parsed.path)))
    if scheme == "s3":
        from store.backends.s3 import S3Backend

        return S3Backend(url, endpoint_url=endpoint_url, jobs=jobs)
    if endpoint_url:
        raise InvalidArgument(f"--endpoint-url applies to s3:// remotes, not {scheme}://")
    from store.backends.generic import FsspecBackend

    return FsspecBackend(url)


def open_backend(
    url: str, *, endpoint_url: str | None = None, jobs: int = 8, retries: int = 5, base_delay: float = 0.25, max_delay: float = 4.0
) -> RetryBackend:
    """The backend for ``url``, with transient errors retried ``retries`` times with back-off."""
    inner = open_raw_backend(url, endpoint_url=endpoint_url, jobs=jobs)
    return RetryBackend(inner, attempts=retries, base_delay=base_delay, max_delay=max_delay)
