"""Tensor values from the store, and safetensors files written straight into it.

torch is imported inside the functions, never at module import (the CLI must stay fast).
Reading a tensor costs its size in memory; writing a safetensors file streams one tensor at a
time into the store, so merges hold only a few tensors at once.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

from store.ids import hash_bytes, new_hasher
from store.model import FileManifest, Part, TensorEntry, TreeEntry
from store.objects import ObjectBatch, ObjectStore
from store.snapshot import MAX_PART

if TYPE_CHECKING:
    import torch

_TORCH_NAMES = {
    "F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16",
    "I64": "int64", "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8", "BOOL": "bool",
    "U16": "uint16", "U32": "uint32", "U64": "uint64", "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2",
}
FLOAT_DTYPES = {"F64", "F32", "F16", "BF16", "F8_E4M3", "F8_E5M2"}


def torch_dtype(dtype: str) -> torch.dtype:
    """The torch dtype of a safetensors dtype name."""
    import torch

    name = _TORCH_NAMES.get(dtype)
    if name is None or not hasattr(torch, name):
        raise ValueError(f"tensors of dtype {dtype} cannot be read as torch tensors")
    return getattr(torch, name)


def safetensors_dtype(dt: torch.dtype) -> str:
    for k, v in _TORCH_NAMES.items():
        if str(dt) == f"torch.{v}":
            return k
    raise ValueError(f"no safetensors dtype for {dt}")


def tensor_data(store: ObjectStore, entry: TensorEntry) -> bytes:
    """The raw bytes of a stored tensor, each part verified."""
    if len(entry.parts) == 1:
        return store.get(entry.parts[0].id)
    return b"".join(store.get(p.id) for p in entry.parts)


def from_bytes(data: bytes | bytearray | memoryview, dtype: str, shape: tuple[int, ...]) -> torch.Tensor:
    """A tensor over a private copy of ``data``."""
    import torch

    if len(data) == 0:
        return torch.empty(shape, dtype=torch_dtype(dtype))
    buf = bytearray(data)
    return torch.frombuffer(buf, dtype=torch.uint8).view(torch_dtype(dtype)).reshape(shape)


def read_tensor(store: ObjectStore, entry: TensorEntry) -> torch.Tensor:
    return from_bytes(tensor_data(store, entry), entry.dtype, entry.shape)


def to_bytes(t: torch.Tensor) -> bytes:
    """The little-endian bytes safetensors stores for ``t``."""
    import torch

    t = t.detach().contiguous().cpu()
    if t.numel() == 0:
        return b""
    return t.view(torch.uint8).numpy().tobytes() if t.dtype != torch.bool else t.to(torch.uint8).numpy().tobytes()


def safetensors_header(specs: list[tuple[str, str, tuple[int, ...], int]], metadata: dict[str, str] | None = None) -> bytes:
    """The header (length prefix included) for tensors ``(name, dtype, shape, nbytes)`` laid out in order.

    Like the reference writer, the JSON is padded with spaces to a multiple of 8 bytes.
    """
    header: dict = {}
    if metadata:
        header["__metadata__"] = metadata
    offset = 0
    for name, dtype, shape, nbytes in specs:
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw


def write_safetensors(
    batch: ObjectBatch,
    specs: list[tuple[str, str, tuple[int, ...], int]],
    data: Iterable[bytes],
    metadata: dict[str, str] | None = None,
    mode: str = "644",
) -> tuple[TreeEntry, FileManifest]:
    """Store a safetensors file made of ``specs`` whose tensor bytes ``data`` yields in order.

    Nothing is materialised on disk and only one tensor is held at a time: each tensor is split
    into parts and added to ``batch`` like ``mvc commit`` would, so the result dedups with
    committed files and checks out byte-exact.
    """
    header = safetensors_header(specs, metadata)
    whole = new_hasher()
    whole.update(header)
    header_part = Part(hash_bytes(header), len(header))
    batch.add(header, header_part.id)
    tensors = []
    it: Iterator[bytes] = iter(data)
    for name, dtype, shape, nbytes in specs:
        blob = next(it)
        if len(blob) != nbytes:
            raise ValueError(f"tensor {name}: got {len(blob)} bytes, expected {nbytes}")
        whole.update(blob)
        tid = hash_bytes(blob)
        view = memoryview(blob)
        if nbytes <= MAX_PART:
            parts: tuple[Part, ...] = (Part(tid, nbytes),)
            batch.add(view, tid)
        else:
            parts = tuple(Part(batch.add(view[i : i + MAX_PART]), len(view[i : i + MAX_PART])) for i in range(0, nbytes, MAX_PART))
        tensors.append(TensorEntry(name, dtype, tuple(shape), tid, nbytes, parts))
    size = len(header) + sum(s[3] for s in specs)
    manifest = FileManifest("safetensors", size, whole.hexdigest(), header=header_part, tensors=tuple(tensors))
    encoded = manifest.encode()
    moid = batch.add(encoded)
    return TreeEntry("file", moid, size, manifest.hash, mode), manifest
