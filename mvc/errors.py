"""Errors of the porcelain; the base hierarchy lives in ``store.errors`` and is re-exported here."""

from __future__ import annotations

from store.errors import (
    AlreadyExists,
    InvalidArgument,
    InvalidRefName,
    MalformedFile,
    MvcError,
    NotARepository,
    ObjectCorrupt,
    ObjectMissing,
    RefLocked,
    RefMoved,
    RepositoryBusy,
    SourceChanged,
    UnknownRevision,
    UnsafePath,
    UnsupportedFormat,
)

__all__ = [
    "AlreadyExists", "DirtyWorktree", "FsckFailed", "HookRejected", "InvalidArgument", "InvalidQuery",
    "InvalidRefName", "MalformedFile", "MvcError", "NoWorktree", "NotARepository", "NothingToCommit",
    "ObjectCorrupt", "ObjectMissing", "PinProtected", "PinVerificationFailed", "RefLocked", "RefMoved", "RepositoryBusy", "SourceChanged",
    "UnknownRevision", "UnsafePath", "UnsupportedFormat",
]


class HookRejected(MvcError):
    """A hook refused the operation."""

    exit_code = 13


class DirtyWorktree(MvcError):
    """The model directory has changes that are not committed."""

    exit_code = 14
    default_hint = "commit them (`mvc commit`), or pass --force to discard them"


class NothingToCommit(MvcError):
    """Nothing changed since the last commit."""

    exit_code = 16
    default_hint = "pass --allow-empty to record a commit anyway"


class InvalidQuery(MvcError):
    """The SQL query failed."""

    exit_code = 17
    default_hint = "list tables with `mvc query \"SHOW TABLES\"`; see docs/query.md for the schema"


class FsckFailed(MvcError):
    """The repository check found problems."""

    exit_code = 18
    default_hint = "restore the damaged objects from a remote or backup; `mvc reflog` shows earlier ref values"


class NoWorktree(MvcError):
    """No model directory is associated with this repository yet."""

    exit_code = 22
    default_hint = "name the directory (`mvc status DIR`), or commit or check one out first"


class PinVerificationFailed(MvcError):
    """A pinned model does not match what was recorded when it was pinned."""

    exit_code = 24
    default_hint = "do not deploy it; restore the damaged files from the store (`mvc checkout pins/NAME -o DIR`) or a remote"


class PinProtected(MvcError):
    """A pin is protected: moving or removing it needs --force."""

    exit_code = 25
    default_hint = "pass --force with --reason to record why it moved"
