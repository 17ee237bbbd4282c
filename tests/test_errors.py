"""The error hierarchy: every error class has its own exit code and a docstring (its default message)."""

from __future__ import annotations

import mvc.cli  # noqa: F401  (loads every command module, so every error class defined anywhere is registered)
import mvc.errors  # noqa: F401
from store.errors import MvcError


def _all_subclasses(cls: type) -> list[type]:
    out = []
    for sub in cls.__subclasses__():
        out.append(sub)
        out.extend(_all_subclasses(sub))
    return out


ERRORS = sorted(set(_all_subclasses(MvcError)), key=lambda c: (c.__module__, c.__qualname__))


def test_known_errors_are_loaded():
    names = {c.__name__ for c in ERRORS}
    # a sample from both modules, so the walk really saw store.errors and mvc.errors
    assert {"NotARepository", "RefMoved", "RefLocked", "RepositoryBusy", "DirtyWorktree", "InvalidQuery", "NothingToCommit"} <= names


def test_exit_codes_unique_and_not_reserved():
    seen: dict[int, str] = {}
    for cls in ERRORS:
        code = cls.exit_code
        name = f"{cls.__module__}.{cls.__qualname__}"
        assert isinstance(code, int), name
        assert code not in (0, 2), f"{name} uses reserved exit code {code} (0 = success, 2 = usage error)"
        assert code != MvcError.exit_code, f"{name} inherits the generic exit code {code} instead of defining its own"
        assert 0 < code < 126, f"{name}: exit code {code} collides with shell codes (126+ = not executable/signals)"
        assert code not in seen, f"{name} and {seen[code]} share exit code {code}"
        seen[code] = name
    assert MvcError.exit_code not in (0, 2)


def test_every_error_has_a_docstring():
    for cls in [MvcError, *ERRORS]:
        doc = cls.__dict__.get("__doc__")
        assert doc and doc.strip(), f"{cls.__qualname__} has no docstring of its own"
        # the first line is the default message: one sentence, one line
        assert doc.strip().splitlines()[0].strip()


def test_default_message_and_hint():
    for cls in ERRORS:
        e = cls()
        assert e.message == cls.__doc__.strip().splitlines()[0]
        assert "\n" not in e.message
        assert e.hint is None or (isinstance(e.hint, str) and "\n" not in e.hint)


def test_retryable_errors_say_retry():
    retryable = [c for c in ERRORS if c.retryable]
    assert {c.__name__ for c in retryable} >= {"RefMoved", "RefLocked", "RepositoryBusy"}
    for cls in retryable:
        assert cls.default_hint and "retry" in cls.default_hint.lower(), f"{cls.__name__} is retryable but its hint does not say to retry"
