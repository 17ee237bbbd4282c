"""The structured objects: file manifests, trees, commits and notes, in canonical JSON.

Canonical JSON is UTF-8, sorted keys, no insignificant whitespace, with a ``"type"`` and a
``"v"`` (format version) field, so identical content gets identical ids on every machine.
Decoding re-validates everything: objects may come from a damaged disk or a hostile remote.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

from store import FORMAT_VERSION
from store.errors import MalformedFile, ObjectCorrupt, UnsupportedFormat
from store.ids import is_object_id
from store.paths import check_tree_path

MODES = ("644", "755")


def canonical_json(obj: dict[str, Any]) -> bytes:
    """Encode ``obj`` canonically. Non-finite floats are refused: JSON cannot carry them."""
    try:
        return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()
    except ValueError as e:
        raise MalformedFile(f"cannot encode object: {e}") from None


def sanitize_json(value: Any) -> Any:
    """Make ``value`` encodable: non-finite floats become the strings "nan", "inf", "-inf"."""
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {str(k): sanitize_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [sanitize_json(v) for v in value]
    return value


@dataclass(frozen=True)
class Part:
    """A slice of a file stored as one blob."""

    id: str
    size: int

    def to_json(self) -> list:
        return [self.id, self.size]


@dataclass(frozen=True)
class TensorEntry:
    """One tensor of a safetensors file: its data is ``parts`` concatenated (id = hash of the data)."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    id: str
    size: int
    parts: tuple[Part, ...]

    def to_json(self) -> dict:
        return {
            "name": self.name,
            "dtype": self.dtype,
            "shape": list(self.shape),
            "id": self.id,
            "size": self.size,
            "parts": [p.to_json() for p in self.parts],
        }


@dataclass(frozen=True)
class FileManifest:
    """How to rebuild one file from blobs.

    ``format`` is ``safetensors`` (header blob, then tensor data in offset order) or
    ``chunks`` (content-defined chunks of an opaque file). ``hash`` is the whole-file id.
    """

    format: str
    size: int
    hash: str
    header: Part | None = None
    tensors: tuple[TensorEntry, ...] = ()
    chunks: tuple[Part, ...] = ()

    def parts(self) -> list[Part]:
        """Every part in file order."""
        if self.format == "safetensors":
            out = [self.header] if self.header else []
            for t in self.tensors:
                out.extend(t.parts)
            return out
        return list(self.chunks)

    def to_json(self) -> dict:
        d: dict[str, Any] = {"type": "file", "v": FORMAT_VERSION, "format": self.format, "size": self.size, "hash": self.hash}
        if self.format == "safetensors":
            assert self.header is not None
            d["header"] = self.header.to_json()
            d["tensors"] = [t.to_json() for t in self.tensors]
        else:
            d["chunks"] = [c.to_json() for c in self.chunks]
        return d

    def encode(self) -> bytes:
        return canonical_json(self.to_json())


@dataclass(frozen=True)
class TreeEntry:
    """One file of a tree: a ``blob`` (small file stored whole) or a ``file`` manifest."""

    kind: str
    id: str
    size: int
    hash: str
    mode: str = "644"

    def to_json(self) -> dict:
        return {"kind": self.kind, "id": self.id, "size": self.size, "hash": self.hash, "mode": self.mode}


@dataclass(frozen=True)
class Tree:
    """A model directory: sorted ``path -> TreeEntry``."""

    entries: dict[str, TreeEntry]

    def to_json(self) -> dict:
        return {"type": "tree", "v": FORMAT_VERSION, "entries": {p: self.entries[p].to_json() for p in sorted(self.entries)}}

    def encode(self) -> bytes:
        return canonical_json(self.to_json())


@dataclass(frozen=True)
class Commit:
    """An immutable snapshot plus where it came from."""

    tree: str
    parents: tuple[str, ...]
    author: str
    time: str
    message: str
    kind: str = "commit"
    lineage: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {
            "type": "commit",
            "v": FORMAT_VERSION,
            "tree": self.tree,
            "parents": list(self.parents),
            "author": self.author,
            "time": self.time,
            "message": self.message,
            "kind": self.kind,
            "lineage": sanitize_json(self.lineage),
            "metrics": sanitize_json(self.metrics),
        }

    def encode(self) -> bytes:
        return canonical_json(self.to_json())


@dataclass(frozen=True)
class Note:
    """Results attached to a commit after the fact (evals, scores), never by rewriting it."""

    commit: str
    author: str
    time: str
    data: dict[str, Any]

    def to_json(self) -> dict:
        return {"type": "note", "v": FORMAT_VERSION, "commit": self.commit, "author": self.author, "time": self.time, "data": sanitize_json(self.data)}

    def encode(self) -> bytes:
        return canonical_json(self.to_json())


# --- decoding -------------------------------------------------------------------------------


def _bad(oid: str, what: str) -> ObjectCorrupt:
    return ObjectCorrupt(f"object {oid} is malformed: {what}")


def _want(cond: bool, oid: str, what: str) -> None:
    if not cond:
        raise _bad(oid, what)


def _is_count(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x >= 0


def _part(raw: Any, oid: str) -> Part:
    _want(isinstance(raw, list) and len(raw) == 2 and isinstance(raw[0], str) and is_object_id(raw[0]) and _is_count(raw[1]), oid, "bad part")
    return Part(raw[0], raw[1])


def decode(data: bytes, oid: str = "?") -> FileManifest | Tree | Commit | Note:
    """Parse and validate a structured object."""
    try:
        obj = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise _bad(oid, "not JSON") from None
    _want(isinstance(obj, dict), oid, "not a JSON object")
    v = obj.get("v")
    _want(isinstance(v, int), oid, "no format version")
    if v > FORMAT_VERSION:
        raise UnsupportedFormat(f"object {oid} has format version {v}; this mvc understands up to {FORMAT_VERSION}")
    kind = obj.get("type")
    if kind == "file":
        return _decode_manifest(obj, oid)
    if kind == "tree":
        return _decode_tree(obj, oid)
    if kind == "commit":
        return _decode_commit(obj, oid)
    if kind == "note":
        _want(isinstance(obj.get("commit"), str) and is_object_id(obj["commit"]), oid, "bad note commit")
        _want(isinstance(obj.get("data"), dict), oid, "bad note data")
        return Note(obj["commit"], str(obj.get("author", "")), str(obj.get("time", "")), obj["data"])
    raise _bad(oid, f"unknown type {kind!r}")


def _decode_manifest(obj: dict, oid: str) -> FileManifest:
    fmt = obj.get("format")
    _want(_is_count(obj.get("size")) and isinstance(obj.get("hash"), str) and is_object_id(obj["hash"]), oid, "bad size or hash")
    if fmt == "safetensors":
        header = _part(obj.get("header"), oid)
        tensors = []
        raw_tensors = obj.get("tensors")
        _want(isinstance(raw_tensors, list), oid, "bad tensors")
        for t in raw_tensors:
            _want(isinstance(t, dict) and isinstance(t.get("name"), str) and isinstance(t.get("dtype"), str), oid, "bad tensor")
            _want(isinstance(t.get("shape"), list) and all(_is_count(d) for d in t["shape"]), oid, "bad tensor shape")
            _want(isinstance(t.get("id"), str) and is_object_id(t["id"]) and _is_count(t.get("size")), oid, "bad tensor id")
            _want(isinstance(t.get("parts"), list), oid, "bad tensor parts")
            parts = tuple(_part(p, oid) for p in t["parts"])
            _want(sum(p.size for p in parts) == t["size"], oid, "tensor parts do not add up")
            tensors.append(TensorEntry(t["name"], t["dtype"], tuple(t["shape"]), t["id"], t["size"], parts))
        m = FileManifest("safetensors", obj["size"], obj["hash"], header=header, tensors=tuple(tensors))
    elif fmt == "chunks":
        _want(isinstance(obj.get("chunks"), list), oid, "bad chunks")
        m = FileManifest("chunks", obj["size"], obj["hash"], chunks=tuple(_part(c, oid) for c in obj["chunks"]))
    else:
        raise _bad(oid, f"unknown file format {fmt!r}")
    _want(sum(p.size for p in m.parts()) == m.size, oid, "parts do not add up to the file size")
    return m


def _decode_tree(obj: dict, oid: str) -> Tree:
    raw = obj.get("entries")
    _want(isinstance(raw, dict), oid, "bad entries")
    entries = {}
    for path, e in raw.items():
        check_tree_path(path)
        _want(isinstance(e, dict) and e.get("kind") in ("blob", "file"), oid, f"bad entry for {path!r}")
        _want(isinstance(e.get("id"), str) and is_object_id(e["id"]) and isinstance(e.get("hash"), str) and is_object_id(e["hash"]), oid, f"bad id for {path!r}")
        _want(_is_count(e.get("size")) and e.get("mode") in MODES, oid, f"bad size or mode for {path!r}")
        entries[path] = TreeEntry(e["kind"], e["id"], e["size"], e["hash"], e["mode"])
    # A file and a directory of the same name cannot both exist.
    dirs = {p.rsplit("/", 1)[0] for p in entries if "/" in p}
    prefixes = {d[: i] for d in dirs for i in range(len(d) + 1) if i == len(d) or d[i] == "/"}
    _want(not (prefixes & set(entries)), oid, "a path is both a file and a directory")
    return Tree(entries)


def _decode_commit(obj: dict, oid: str) -> Commit:
    _want(isinstance(obj.get("tree"), str) and is_object_id(obj["tree"]), oid, "bad tree")
    parents = obj.get("parents")
    _want(isinstance(parents, list) and all(isinstance(p, str) and is_object_id(p) for p in parents), oid, "bad parents")
    for key in ("author", "time", "message", "kind"):
        _want(isinstance(obj.get(key), str), oid, f"bad {key}")
    _want(isinstance(obj.get("lineage"), dict) and isinstance(obj.get("metrics"), dict), oid, "bad lineage or metrics")
    return Commit(obj["tree"], tuple(parents), obj["author"], obj["time"], obj["message"], obj["kind"], obj["lineage"], obj["metrics"])
