"""Reading and validating safetensors headers without trusting them.

Format: 8 bytes little-endian header length N, N bytes of JSON (an object mapping tensor
names to ``{"dtype", "shape", "data_offsets": [begin, end]}`` plus an optional
``"__metadata__"`` of string pairs), then the data buffer. Offsets are relative to the data
buffer, which must be covered exactly: no gaps, no overlaps, nothing past the end.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from typing import BinaryIO

from store.errors import MalformedFile

MAX_HEADER_SIZE = 100 * 1024 * 1024  # the limit of the safetensors reference implementation

# Bits per element; sub-byte types are packed.
DTYPE_BITS = {
    "BOOL": 8, "U8": 8, "I8": 8, "F8_E5M2": 8, "F8_E4M3": 8, "F8_E8M0": 8,
    "I16": 16, "U16": 16, "F16": 16, "BF16": 16,
    "I32": 32, "U32": 32, "F32": 32,
    "I64": 64, "U64": 64, "F64": 64, "C64": 64,
    "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6,
}


@dataclass(frozen=True)
class TensorInfo:
    """One tensor's entry in a validated header; ``begin``/``end`` are absolute file offsets."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    begin: int
    end: int


@dataclass(frozen=True)
class Header:
    """A validated header: its raw bytes (length prefix included) and tensors in offset order."""

    raw_size: int
    tensors: tuple[TensorInfo, ...]
    metadata: dict[str, str] | None


def _reject_duplicates(pairs: list[tuple[str, object]]) -> dict:
    out: dict = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"duplicate key {k!r}")
        out[k] = v
    return out


def read_header(f: BinaryIO, file_size: int, name: str = "file") -> Header:
    """Read and validate the header of an open safetensors file of ``file_size`` bytes.

    Raises MalformedFile naming the problem: oversized or truncated header, bad JSON, unknown
    fields, offsets that overlap, leave gaps or run past the data, sizes that disagree with
    dtype and shape, or trailing bytes.
    """

    def bad(what: str) -> MalformedFile:
        return MalformedFile(f"{name}: malformed safetensors: {what}", hint="the file was not stored; re-save it with safetensors")

    if file_size < 8:
        raise bad("shorter than the 8-byte header length")
    (n,) = struct.unpack("<Q", f.read(8))
    if n > MAX_HEADER_SIZE:
        raise bad(f"header length {n} exceeds the {MAX_HEADER_SIZE}-byte limit")
    if 8 + n > file_size:
        raise bad(f"header length {n} runs past the end of the file ({file_size} bytes)")
    raw = f.read(n)
    if len(raw) != n:
        raise bad("file is truncated inside the header")
    try:
        obj = json.loads(raw.decode("utf-8"), object_pairs_hook=_reject_duplicates)
    except (UnicodeDecodeError, ValueError) as e:
        raise bad(f"header is not valid JSON ({e})") from None
    if not isinstance(obj, dict):
        raise bad("header is not a JSON object")
    metadata = obj.pop("__metadata__", None)
    if metadata is not None and not (isinstance(metadata, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items())):
        raise bad("__metadata__ must map strings to strings")
    data_start = 8 + n
    data_size = file_size - data_start
    tensors = []
    for tname, info in obj.items():
        if not isinstance(info, dict) or set(info) != {"dtype", "shape", "data_offsets"}:
            raise bad(f"tensor {tname!r} must have exactly dtype, shape and data_offsets")
        dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
        if not isinstance(dtype, str):
            raise bad(f"tensor {tname!r} has a non-text dtype")
        if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
            raise bad(f"tensor {tname!r} has a bad shape {shape!r}")
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)):
            raise bad(f"tensor {tname!r} has bad data_offsets {offsets!r}")
        begin, end = offsets
        if not 0 <= begin <= end:
            raise bad(f"tensor {tname!r} has data_offsets {offsets!r} that run backwards")
        if end > data_size:
            raise bad(f"tensor {tname!r} ends at {end}, past the {data_size}-byte data buffer (truncated file?)")
        bits = DTYPE_BITS.get(dtype)
        if bits is None:
            raise bad(f"tensor {tname!r} has unknown dtype {dtype!r}")
        numel = 1
        for d in shape:
            numel *= d
        if numel * bits != (end - begin) * 8:
            raise bad(f"tensor {tname!r}: {dtype}{shape} needs {numel * bits / 8:g} bytes but data_offsets give {end - begin}")
        tensors.append(TensorInfo(tname, dtype, tuple(shape), data_start + begin, data_start + end))
    tensors.sort(key=lambda t: (t.begin, t.end))
    pos = data_start
    for t in tensors:
        if t.begin < pos:
            raise bad(f"tensor {t.name!r} overlaps the tensor before it")
        if t.begin > pos:
            raise bad(f"gap of {t.begin - pos} bytes before tensor {t.name!r}")
        pos = t.end
    if pos != file_size:
        raise bad(f"{file_size - pos} bytes after the last tensor")
    return Header(data_start, tuple(tensors), metadata)
