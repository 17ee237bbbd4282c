"""The one error hierarchy of mvc.

Every error carries a one-line message for the user, an optional hint naming the next
command to try, and a unique exit code (checked by tests/test_errors.py). Errors raised
by ``mvc`` itself subclass these too (see ``mvc/errors.py``); the CLI turns any of them
into ``error: ...`` / ``hint: ...`` on stderr and the class's exit code.
"""

from __future__ import annotations


class MvcError(Exception):
    """Something went wrong."""

    exit_code = 1
    retryable = False
    default_hint: str | None = None

    def __init__(self, message: str | None = None, *, hint: str | None = None) -> None:
        self.message = message or (self.__doc__ or "error").strip().splitlines()[0]
        self.hint = hint if hint is not None else self.default_hint
        super().__init__(self.message)


class NotARepository(MvcError):
    """Not an mvc repository (or any parent up to the filesystem root)."""

    exit_code = 3
    default_hint = "run `mvc init` to create one, or `cd` into a repository"


class UnknownRevision(MvcError):
    """The revision names no commit."""

    exit_code = 4
    default_hint = "list refs with `mvc branch` / `mvc tag`, or commits with `mvc log`"


class InvalidRefName(MvcError):
    """The ref name is not allowed."""

    exit_code = 5
    default_hint = "ref names are like `main`, `exp/lora-r8`: no `..`, spaces, `~^:?*[\\`, control characters, or leading `-`/`/`"


class UnsafePath(MvcError):
    """A path would escape its directory or is otherwise unsafe."""

    exit_code = 6


class MalformedFile(MvcError):
    """A file is malformed and was not stored."""

    exit_code = 7


class ObjectMissing(MvcError):
    """An object the repository needs is missing."""

    exit_code = 8
    default_hint = "run `mvc fsck` to see the extent of the damage; fetch the object again from a remote if you have one"


class ObjectCorrupt(MvcError):
    """An object's content does not match its id."""

    exit_code = 9
    default_hint = "run `mvc fsck` to list damaged objects; restore them from a remote or a backup"


class RefLocked(MvcError):
    """A ref is locked by another process."""

    exit_code = 10
    retryable = True
    default_hint = "another mvc command is updating this ref; retry in a moment"


class RefMoved(MvcError):
    """A ref moved while this command was working (lost a compare-and-swap race)."""

    exit_code = 11
    retryable = True
    default_hint = "retry the command; it will build on the new tip"


class RepositoryBusy(MvcError):
    """The repository index is held by another process."""

    exit_code = 12
    retryable = True
    default_hint = "another mvc process is using the repository; retry when it has finished"


class AlreadyExists(MvcError):
    """The thing to create already exists."""

    exit_code = 15


class InvalidArgument(MvcError):
    """An argument has a value that cannot be used."""

    exit_code = 19


class UnsupportedFormat(MvcError):
    """The repository or object uses a format version this mvc does not understand."""

    exit_code = 20
    default_hint = "upgrade mvc"


class SourceChanged(MvcError):
    """A file changed while mvc was reading it."""

    exit_code = 21
    retryable = True
    default_hint = "wait until whatever writes the model directory has finished, then retry"


class RemoteError(MvcError):
    """The remote failed."""

    exit_code = 26
    default_hint = "run with MVC_DEBUG=1 to see the underlying error; check the remote with `mvc remote list`"


class RemoteMoved(RemoteError):
    """The remote moved, fetch first: a ref on the remote changed while pushing."""

    exit_code = 27
    retryable = True
    default_hint = "run `mvc fetch` (merge if the histories diverged), then retry the push"


class RemoteNotFound(RemoteError):
    """The remote location does not exist (no such bucket or directory)."""

    exit_code = 28
    default_hint = "check the URL with `mvc remote list`; create the bucket (or directory) first"


class RemoteAccessDenied(RemoteError):
    """The remote refused access: credentials are missing, invalid or not allowed."""

    exit_code = 29
    default_hint = (
        "set AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY (or ~/.aws/credentials) for a principal that may "
        "read and write the bucket; mvc never stores credentials in .mvc/config"
    )


class RemoteUnavailable(RemoteError):
    """The remote could not be reached, or failed for a moment."""

    exit_code = 30
    retryable = True
    default_hint = "check the network and the endpoint (`mvc remote list`), then retry; completed objects are not sent again"


class RemoteCorrupt(RemoteError):
    """An object from the remote does not match its id (damaged or tampered with); it was not stored."""

    exit_code = 31
    default_hint = "nothing was changed locally; repair the remote by pushing from a repository that has a good copy"
