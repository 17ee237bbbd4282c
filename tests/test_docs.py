"""The documentation stays in step with the code: exit codes and commands."""

from __future__ import annotations

import re
from pathlib import Path

import mvc.cli
import mvc.errors
import store.errors

DOCS = Path(__file__).resolve().parent.parent / "docs"


def _all_errors() -> list[type]:
    out, stack = [], [store.errors.MvcError]
    while stack:
        cls = stack.pop()
        out.append(cls)
        stack.extend(cls.__subclasses__())
    return out


def test_exit_code_table_lists_every_error_class():
    text = (DOCS / "guide.md").read_text()
    rows = dict(re.findall(r"^\| (\d+) \| `(\w+)` \|", text, flags=re.M))
    for cls in _all_errors():
        assert rows.get(str(cls.exit_code)) == cls.__name__, f"docs/guide.md exit-code table: {cls.exit_code} should be {cls.__name__}"


def test_every_command_is_documented():
    docs = "\n".join(p.read_text() for p in DOCS.glob("*.md"))
    for verb in mvc.cli.COMMANDS:
        assert f"mvc {verb}" in docs, f"`mvc {verb}` is not described in docs/"
