"""Object ids: the xxh3-128 of an object's uncompressed bytes, as 32 lowercase hex chars."""

from __future__ import annotations

import re

import xxhash

ID_HEX_LEN = 32
_ID_RE = re.compile(r"^[0-9a-f]{32}$")


def hash_bytes(data: bytes | bytearray | memoryview) -> str:
    """Return the object id of ``data``."""
    return xxhash.xxh3_128_hexdigest(data)


def new_hasher() -> xxhash.xxh3_128:
    """A streaming hasher whose ``hexdigest()`` equals ``hash_bytes`` of everything fed to it."""
    return xxhash.xxh3_128()


def is_object_id(text: str) -> bool:
    """True when ``text`` is a well-formed full object id."""
    return bool(_ID_RE.match(text))
