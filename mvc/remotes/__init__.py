"""Remotes: push, fetch, pull and clone over any fsspec URL (``s3://``, ``file://``, ``memory://``).

A remote has the layout of ``.mvc/`` (docs/remotes.md). Push finds the commits the remote
lacks, uploads their missing objects in parallel with create-only writes, in the order blobs,
manifests, trees, commits, notes, and moves each remote ref last by compare-and-swap. Hence a
commit present on the remote has its whole closure there, which is where walks stop. Fetch
downloads into a quarantine directory, verifies every object, moves them into the store (blobs
as they arrive, then manifests, trees, commits) and only then moves remote-tracking refs
(``refs/remotes/<remote>/<branch>``), tags and pins.

Remote settings live in ``.mvc/config`` as ``[remote "NAME"]`` sections (url, endpoint_url,
jobs, retries); credentials never do: they come from the AWS environment and config files.
"""

from mvc.remotes.common import FetchResult, PullResult, PushResult, RefUpdate, ancestors, is_ancestor
from mvc.remotes.config import Remote, add_remote, check_remote_name, check_url, get_remote, list_remotes, remove_remote
from mvc.remotes.fetch import clone, default_clone_dir, fetch, fetch_commits, pull
from mvc.remotes.partial import PartialResult, pull_partial
from mvc.remotes.push import push

__all__ = [
    "FetchResult", "PartialResult", "PullResult", "PushResult", "RefUpdate", "Remote", "add_remote", "ancestors", "check_remote_name",
    "check_url", "clone", "default_clone_dir", "fetch", "fetch_commits", "get_remote", "is_ancestor", "list_remotes", "pull", "pull_partial",
    "push", "remove_remote",
]
