"""Remote settings in ``.mvc/config``: ``[remote "NAME"]`` sections (url, endpoint_url, jobs, retries), never credentials."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlparse

from mvc.errors import (
    AlreadyExists,
    InvalidArgument,
    UnknownRemote,
)
from store.backends import Backend, normalize_url, open_backend
from store.errors import InvalidRefName
from store.paths import check_ref_name

if TYPE_CHECKING:
    from mvc.repo import Repo

DEFAULT_JOBS = 8
DEFAULT_RETRIES = 5


@dataclass(frozen=True)
class Remote:
    """A named remote from ``.mvc/config``."""

    name: str
    url: str
    endpoint_url: str | None = None
    jobs: int = DEFAULT_JOBS
    retries: int = DEFAULT_RETRIES

    def open(self, jobs: int | None = None) -> Backend:
        """The backend for this remote, wrapped in the retry wrapper."""
        return open_backend(self.url, endpoint_url=self.endpoint_url, jobs=jobs or self.jobs, retries=self.retries)

    def to_json(self) -> dict:
        return {"name": self.name, "url": self.url, "endpoint_url": self.endpoint_url, "jobs": self.jobs}


def _section(name: str) -> str:
    return f'remote "{name}"'


def check_remote_name(name: str) -> str:
    """Remote names become one ref component (``refs/remotes/<name>/...``): no ``/``."""
    if "/" in name:
        raise InvalidRefName(f"invalid remote name {name!r}: it contains '/'")
    return check_ref_name(name)


def check_url(url: str) -> str:
    """Refuse URLs that carry credentials: ``.mvc/config`` is not a place for secrets."""
    parsed = urlparse(url)
    query = parsed.query.lower()
    if parsed.password or any(k in query for k in ("secret", "token", "signature", "credential", "password", "key=")):
        raise InvalidArgument(
            "the remote URL carries credentials; they must not be stored in .mvc/config",
            hint="give credentials through AWS_PROFILE / AWS_ACCESS_KEY_ID / ~/.aws/credentials instead",
        )
    return url


def _write_config(repo: Repo) -> None:
    tmp = repo.dir / "config.tmp"
    with open(tmp, "w") as f:
        repo.config.write(f)
    os.replace(tmp, repo.dir / "config")


def add_remote(repo: Repo, name: str, url: str, *, endpoint_url: str | None = None, jobs: int | None = None) -> Remote:
    """Record remote ``name`` at ``url`` (relative paths are made absolute ``file://`` URLs)."""
    check_remote_name(name)
    if repo.config.has_section(_section(name)):
        raise AlreadyExists(f"remote {name!r} already exists", hint=f"remove it first with `mvc remote remove {name}`")
    url = check_url(normalize_url(url))
    if endpoint_url:
        check_url(endpoint_url)
        if not url.startswith("s3://"):
            raise InvalidArgument("--endpoint-url applies to s3:// remotes only")
    if jobs is not None and jobs < 1:
        raise InvalidArgument("--jobs must be at least 1")
    repo.config.add_section(_section(name))
    repo.config.set(_section(name), "url", url)
    if endpoint_url:
        repo.config.set(_section(name), "endpoint_url", endpoint_url)
    if jobs:
        repo.config.set(_section(name), "jobs", str(jobs))
    _write_config(repo)
    return get_remote(repo, name)


def get_remote(repo: Repo, name: str) -> Remote:
    section = _section(name)
    if not repo.config.has_section(section):
        raise UnknownRemote(f"no remote named {name!r}")
    cfg = repo.config[section]
    try:
        jobs = int(cfg.get("jobs", DEFAULT_JOBS))
        retries = int(cfg.get("retries", DEFAULT_RETRIES))
    except ValueError:
        raise InvalidArgument(f"remote {name!r}: jobs and retries must be integers in .mvc/config") from None
    return Remote(name, cfg.get("url", ""), cfg.get("endpoint_url") or None, max(1, jobs), max(1, retries))


def list_remotes(repo: Repo) -> list[Remote]:
    names = [s[len('remote "'):-1] for s in repo.config.sections() if s.startswith('remote "') and s.endswith('"')]
    return [get_remote(repo, n) for n in sorted(names)]


def remove_remote(repo: Repo, name: str) -> int:
    """Forget remote ``name`` and its remote-tracking refs; return how many refs were removed."""
    get_remote(repo, name)
    removed = 0
    for full, cid in repo.refs.list(f"refs/remotes/{name}/").items():
        repo.refs.compare_and_swap(full, cid, None, message=f"remote: removed {name}")
        removed += 1
    repo.config.remove_section(_section(name))
    _write_config(repo)
    repo.index().sync_refs()
    return removed

