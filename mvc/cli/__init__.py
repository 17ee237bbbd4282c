"""The ``mvc`` command line: one module per verb, each a thin shell over the API.

Errors are turned into messages in one place, ``main``: a line ``error: ...``, a line
``hint: ...`` naming the next command to try, and the error class's exit code. Tracebacks
are printed only with ``MVC_DEBUG=1``. Heavy libraries are never imported here.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Annotated

import typer

from mvc import __version__
from mvc.cli import _output

app = typer.Typer(
    name="mvc",
    help="Version control for machine-learning models: tensors stored once, diffed and merged per tensor.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        print(f"mvc {__version__}")
        raise typer.Exit()


@app.callback()
def _global(
    repo_dir: Annotated[str | None, typer.Option("-C", "--repo", help="Run as if mvc was started in this directory.")] = None,
    quiet: Annotated[bool, typer.Option("-q", "--quiet", help="No progress bars or messages on stderr.")] = False,
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")] = False,
) -> None:
    if repo_dir is not None:
        try:
            os.chdir(repo_dir)  # like git -C: paths on the command line are relative to it too
        except OSError as e:
            raise typer.BadParameter(f"cannot change to {repo_dir!r}: {e.strerror}", param_hint="-C") from None
    _output.state["quiet"] = quiet


# Libraries only some commands need; their absence is a MissingDependency error, not a crash.
OPTIONAL_MODULES = {"torch", "transformers", "safetensors", "numpy", "trl", "peft", "datasets", "accelerate", "s3fs", "boto3", "botocore", "yaml", "git"}

# One module per verb; importing it registers the command on ``app``.
COMMANDS = (
    "init", "commit", "log", "show", "status", "diff", "checkout", "switch", "branch", "tag", "merge",
    "pin", "rollback", "reflog", "fsck", "gc", "reindex", "query",
    "remote", "push", "fetch", "pull", "clone",
    "train", "runs",
)
for _verb in COMMANDS:
    importlib.import_module(f"mvc.cli.cmd_{_verb}")

__all__ = ["COMMANDS", "app", "main"]


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``mvc`` console script."""
    from mvc.errors import MissingDependency
    from store.errors import MvcError

    try:
        try:
            app(args=argv, prog_name="mvc")
        except ModuleNotFoundError as e:
            if (e.name or "").split(".")[0] not in OPTIONAL_MODULES:
                raise
            raise MissingDependency(f"this command needs {e.name.split('.')[0]}, which is not installed") from e
    except MvcError as e:
        if os.environ.get("MVC_DEBUG") == "1":
            import traceback

            traceback.print_exc()
        print(f"error: {e.message}", file=sys.stderr)
        if e.hint:
            print(f"hint: {e.hint}", file=sys.stderr)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        # typer turns Ctrl-C inside a command into exit 130 itself; this catches the rest (start-up)
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except BrokenPipeError:
        sys.stderr.close()
        sys.exit(0)
