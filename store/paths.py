"""Validation of tree paths and ref names: nothing read from disk or a remote is trusted."""

from __future__ import annotations

import re

from store.errors import InvalidRefName, UnsafePath

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def check_tree_path(path: str) -> str:
    """Return ``path`` if it is a safe, normalised, relative POSIX path; raise UnsafePath otherwise.

    Refused: empty, absolute, ``.``/``..``/empty components, backslashes, NUL and other control
    characters, names that are not UTF-8, and anything under ``.mvc``.
    """
    if not isinstance(path, str) or not path:
        raise UnsafePath(f"empty or non-text path in tree: {path!r}")
    if _CONTROL.search(path):
        raise UnsafePath(f"path contains a control character: {path!r}")
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        raise UnsafePath(f"path is not valid UTF-8: {path!r}", hint="rename the file; tree paths are stored as UTF-8") from None
    if "\\" in path:
        raise UnsafePath(f"path contains a backslash: {path!r}")
    if path.startswith("/"):
        raise UnsafePath(f"path is absolute: {path!r}")
    parts = path.split("/")
    for part in parts:
        if part in ("", ".", ".."):
            raise UnsafePath(f"path has an empty, '.' or '..' component: {path!r}")
    if len(parts[0]) >= 2 and parts[0][1] == ":":
        raise UnsafePath(f"path looks like a drive letter: {path!r}")
    if parts[0] == ".mvc":
        raise UnsafePath(f"path is inside .mvc: {path!r}")
    return path


_REF_BAD_CHARS = re.compile(r"[\x00-\x20\x7f~^:?*\[\\]")


def check_ref_name(name: str) -> str:
    """Return ``name`` if it is a valid short ref name (``main``, ``exp/lora``); raise otherwise.

    The rules follow ``git check-ref-format``: no ``..``, no ``@{``, no space, control or
    ``~^:?*[\\`` characters, no component that starts with ``.`` or ends with ``.lock``, no
    leading ``-`` or ``/``, no trailing ``/`` or ``.``, no ``//``, and not ``HEAD`` or ``@``.
    """
    if not isinstance(name, str) or not name:
        raise InvalidRefName("empty ref name")
    if len(name) > 255:
        raise InvalidRefName(f"ref name is longer than 255 characters: {name[:40]!r}…")
    bad = None
    if _REF_BAD_CHARS.search(name):
        bad = "a space, control character or one of ~^:?*[\\"
    elif ".." in name or "@{" in name:
        bad = "'..' or '@{'"
    elif name.startswith(("-", "/")) or name.endswith(("/", ".")):
        bad = "a leading '-' or '/', or a trailing '/' or '.'"
    elif "//" in name:
        bad = "'//'"
    elif name in ("HEAD", "@"):
        bad = "a reserved name"
    else:
        for part in name.split("/"):
            if part.startswith(".") or part.endswith(".lock"):
                bad = "a component starting with '.' or ending with '.lock'"
                break
    if bad:
        raise InvalidRefName(f"invalid ref name {name!r}: it contains {bad}")
    return name
