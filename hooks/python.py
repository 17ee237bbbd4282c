"""Python extension points for training runs: a hooks file passed with ``mvc train --hooks-file``.

The file is plain Python. It may define any of these functions (every argument is passed by
keyword, so a hook names only the ones it needs and ends with ``**kwargs``)::

    def on_run_begin(run, **kwargs): ...                  # before the first step
    def on_step(run, step, logs, **kwargs): ...           # after each optimizer step; logs: latest loss, lr, ...
    def on_eval(run, step, metrics, **kwargs): ...        # after each evaluation
    def on_checkpoint(run, step, commit, **kwargs): ...   # after a checkpoint became a commit
    def on_run_end(run, status, commit, **kwargs): ...    # completed / failed / cancelled; commit: the last one
    def compute_loss(model, inputs, return_outputs=False, num_items_in_batch=None, **kwargs): ...

``run`` describes the run (name, method, branch, spec, repository). ``compute_loss`` replaces
the trainer's loss (methods pretrain, continue, sft, lora, qlora, distill); it returns the loss,
or ``(loss, outputs)`` when ``return_outputs`` is true. A hook that raises stops the run, which
is then marked failed. A function whose name starts with ``on_`` but is not one of the above is
refused, so a typo is not silently ignored.
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from store.errors import InvalidArgument

EVENTS = ("on_run_begin", "on_step", "on_eval", "on_checkpoint", "on_run_end")
LOSS = "compute_loss"


@dataclass
class PythonHooks:
    """The hook functions found in one file."""

    path: Path | None = None
    functions: dict[str, Callable[..., Any]] = field(default_factory=dict)

    def call(self, event: str, **kwargs: Any) -> Any:
        """Call hook ``event`` with ``kwargs``; a missing hook does nothing."""
        if event not in EVENTS:
            raise ValueError(f"unknown hook event {event!r}")
        fn = self.functions.get(event)
        return fn(**kwargs) if fn is not None else None

    @property
    def compute_loss(self) -> Callable[..., Any] | None:
        return self.functions.get(LOSS)

    def __bool__(self) -> bool:
        return bool(self.functions)


def load_hooks_file(path: Path | str) -> PythonHooks:
    """Import the hooks file at ``path`` and collect its hook functions."""
    path = Path(path).resolve()
    if not path.is_file():
        raise InvalidArgument(f"hooks file {path} does not exist")
    name = "mvc_user_hooks_" + hashlib.sha1(str(path).encode()).hexdigest()[:12]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise InvalidArgument(f"hooks file {path} cannot be imported (is it a .py file?)")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickling inside the file need the module registered
    try:
        spec.loader.exec_module(module)
    except Exception as e:
        sys.modules.pop(name, None)
        raise InvalidArgument(f"hooks file {path} failed to import: {type(e).__name__}: {e}") from None
    functions: dict[str, Callable[..., Any]] = {}
    for attr, value in vars(module).items():
        if not callable(value) or attr.startswith("_") or not inspect.isfunction(value):
            continue
        if value.__module__ != name:
            continue  # imported helpers are not hooks
        if attr in EVENTS or attr == LOSS:
            functions[attr] = value
        elif attr.startswith("on_"):
            raise InvalidArgument(
                f"hooks file {path} defines {attr}(), which is not a hook",
                hint=f"hooks are {', '.join(EVENTS)} and {LOSS}",
            )
    return PythonHooks(path, functions)
