"""A worker of a launched run: ``python -m trainers.worker PREPARED.json`` (see ``trainers.launch``)."""

from __future__ import annotations

import sys

from mvc.errors import MvcError
from trainers.run import Prepared, execute


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m trainers.worker PREPARED.json", file=sys.stderr)
        return 2
    prepared = Prepared.load(args[0])
    try:
        execute(prepared, stream=sys.stderr, notify=lambda text: print(text, file=sys.stderr))
    except MvcError as e:
        print(f"error: {e.message}", file=sys.stderr)
        return e.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
