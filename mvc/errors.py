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
    "InvalidRefName", "MalformedFile", "MissingDependency", "MergeConflict", "MvcError", "NoWorktree", "NotARepository", "NothingToCommit",
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
    default_hint = "name the model directory (e.g. `mvc status DIR`); the first `mvc commit DIR` records it as the worktree"


class PinVerificationFailed(MvcError):
    """A pinned model does not match what was recorded when it was pinned."""

    exit_code = 24
    default_hint = "do not deploy it; restore the damaged files from the store (`mvc checkout pins/NAME -o DIR`) or a remote"


class PinProtected(MvcError):
    """A pin is protected: moving or removing it needs --force."""

    exit_code = 25
    default_hint = "pass --force with --reason to record why it moved"


class MergeConflict(MvcError):
    """The two models cannot be merged."""

    exit_code = 23
    default_hint = "the message names what differs; make both sides agree (same architecture, tokenizer and tensors) and merge again"

    def __init__(self, message: str | None = None, *, hint: str | None = None, conflicts: list[str] | None = None) -> None:
        super().__init__(message, hint=hint)
        self.conflicts = list(conflicts or [])  # every conflict found; the message names the first few


# -- training (issue 5): exit codes 40 and up -----------------------------------------------
class InvalidSpec(MvcError):
    """The run spec is not valid."""

    exit_code = 40
    default_hint = "see docs/train.md for every key of a run spec; `mvc train --dry-run ...` prints the resolved spec"


class UnsupportedHardware(MvcError):
    """This machine lacks the hardware or library the run needs."""

    exit_code = 41


class RunNotFound(MvcError):
    """No training run has that name."""

    exit_code = 43
    default_hint = "list runs with `mvc runs`"


class TrainingFailed(MvcError):
    """The training run failed."""

    exit_code = 44
    default_hint = "the run's last checkpoint is kept: `mvc runs` shows it; fix the cause and `mvc train --resume NAME`"


class TrainingCancelled(MvcError):
    """The training run was cancelled."""

    exit_code = 45
    default_hint = "its last checkpoint is kept on the run branch; continue with `mvc train --resume NAME`"



__all__ += ["InvalidSpec", "RunNotFound", "TrainingCancelled", "TrainingFailed", "UnsupportedHardware"]


# -- remotes (issue 4): exit codes 26-39; the transport errors (26-31) live in store.errors ---------
class UnknownRemote(MvcError):
    """No remote has that name."""

    exit_code = 32
    default_hint = "list remotes with `mvc remote list`; add one with `mvc remote add NAME URL`"


class HistoriesDiverged(MvcError):
    """The local and remote histories have diverged: neither contains the other."""

    exit_code = 33
    default_hint = "merge them (`mvc merge origin/main`), then push"


__all__ += ["HistoriesDiverged", "UnknownRemote"]


class MissingDependency(MvcError):
    """This command needs an optional library that is not installed."""

    exit_code = 36
    default_hint = "on a CPU-only machine: pip install torch==2.13.0, then pip install 'mvc[ml]'"
