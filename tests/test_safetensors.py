"""safetensors files: every header is validated before anything is stored, tensors are stored
once wherever they sit, and every file comes back byte for byte.

Malformed files are built by hand with struct and json, so each one breaks exactly one rule.
"""

from __future__ import annotations

import json
import os
import random
import struct
import time
from pathlib import Path

import numpy as np
import pytest
from _files import files_under

import store.snapshot as snapshot_mod
from mvc.checkout import export
from mvc.errors import MalformedFile
from mvc.repo import Repo
from store.fsck import fsck
from store.ids import hash_bytes
from store.materialize import load_manifest

# --- building files by hand ------------------------------------------------------------------


def raw_file(header: bytes | str | dict, data: bytes = b"", *, length: int | None = None, trailer: bytes = b"") -> bytes:
    """``<u64 length><header><data><trailer>``; ``length`` overrides the real header length."""
    if isinstance(header, dict):
        header = json.dumps(header)
    if isinstance(header, str):
        header = header.encode()
    n = len(header) if length is None else length
    return struct.pack("<Q", n) + header + data + trailer


def st_file(tensors: list[tuple[str, str, list[int], bytes]], metadata: dict | None = None) -> bytes:
    """A valid safetensors file with the tensors laid out in the given order."""
    header: dict = {}
    if metadata is not None:
        header["__metadata__"] = metadata
    pos = 0
    for name, dtype, shape, data in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [pos, pos + len(data)]}
        pos += len(data)
    return raw_file(header, b"".join(t[3] for t in tensors))


def header_bytes(file_bytes: bytes) -> bytes:
    (n,) = struct.unpack("<Q", file_bytes[:8])
    return file_bytes[: 8 + n]


def t(dtype: str, shape: list[int], begin: int, end: int) -> dict:
    return {"dtype": dtype, "shape": shape, "data_offsets": [begin, end]}




def object_ids(repo: Repo) -> set[str]:
    return set(repo.objects.iter_ids())


def roundtrip(repo: Repo, rev: str, original: Path, out: Path) -> None:
    export(repo, rev, out)
    assert files_under(out) == files_under(original)


def age(directory: Path, seconds: float = 1000) -> None:
    """Give every file an old mtime, so the stat cache may trust it."""
    old = time.time() - seconds
    for dirpath, _dirs, names in os.walk(directory):
        for n in names:
            os.utime(Path(dirpath) / n, (old, old))


EIGHT = bytes(range(8))
TWELVE = bytes(range(12))

# (id, file bytes, words the error message must contain one of)
MALFORMED = [
    ("oversized-header-length", raw_file("{}", length=100 * 1024 * 1024 + 1), r"limit|exceed|too (large|big)"),
    ("oversized-header-length-u64-max", raw_file("{}", length=2**64 - 1), r"limit|exceed|too (large|big)"),
    ("header-length-past-eof", raw_file('{"a":1}', length=1000), r"past|end of the file|truncat"),
    ("non-json-header", raw_file("{not json at all"), r"JSON"),
    ("non-utf8-header", raw_file(b'{"\xff\xfe":1}'), r"JSON|UTF"),
    ("header-not-an-object", raw_file("[1, 2, 3]"), r"object"),
    ("duplicate-keys", raw_file('{"a":' + json.dumps(t("U8", [8], 0, 8)) + ',"a":' + json.dumps(t("U8", [8], 0, 8)) + "}", EIGHT), r"duplicate"),
    ("duplicate-field-in-tensor", raw_file('{"a":{"dtype":"U8","dtype":"U8","shape":[8],"data_offsets":[0,8]}}', EIGHT), r"duplicate"),
    ("overlapping-offsets", raw_file({"a": t("F32", [2], 0, 8), "b": t("F32", [2], 4, 12)}, TWELVE), r"overlap"),
    ("same-offsets-twice", raw_file({"a": t("F32", [2], 0, 8), "b": t("F32", [2], 0, 8)}, EIGHT), r"overlap"),
    ("gap-between-tensors", raw_file({"a": t("F32", [2], 0, 8), "b": t("F32", [2], 12, 20)}, bytes(20)), r"gap"),
    ("gap-at-start", raw_file({"a": t("F32", [2], 4, 12)}, TWELVE), r"gap"),
    ("offsets-past-end", raw_file({"a": t("F32", [4], 0, 16)}, EIGHT), r"past|truncat"),
    ("trailing-bytes", raw_file({"a": t("F32", [2], 0, 8)}, EIGHT, trailer=b"junk"), r"after the last tensor|trailing"),
    ("size-not-dtype-times-shape", raw_file({"a": t("F32", [3], 0, 8)}, EIGHT), r"needs|bytes"),
    ("size-mismatch-f16", raw_file({"a": t("F16", [2, 3], 0, 8)}, EIGHT), r"needs|bytes"),
    ("backwards-offsets", raw_file({"a": t("U8", [0], 8, 0)}, EIGHT), r"backwards"),
    ("negative-offset", raw_file({"a": t("U8", [8], -8, 0)}, EIGHT), r"backwards|offset"),
    ("metadata-not-strings", raw_file({"__metadata__": {"a": 1}, "x": t("U8", [8], 0, 8)}, EIGHT), r"__metadata__"),
    ("metadata-not-a-dict", raw_file({"__metadata__": ["a", "b"], "x": t("U8", [8], 0, 8)}, EIGHT), r"__metadata__"),
    ("file-shorter-than-8-bytes", b"\x02\x00\x00", r"8-byte|shorter|short"),
    ("empty-file", b"", r"8-byte|shorter|short"),
    ("unknown-dtype", raw_file({"a": t("F128", [1], 0, 16)}, bytes(16)), r"dtype"),
    ("extra-tensor-field", raw_file({"a": {**t("U8", [8], 0, 8), "extra": 1}}, EIGHT), r"exactly|dtype, shape"),
    ("missing-offsets", raw_file({"a": {"dtype": "U8", "shape": [8]}}, EIGHT), r"exactly|dtype, shape"),
    ("negative-shape", raw_file({"a": t("U8", [-8], 0, 8)}, EIGHT), r"shape"),
    ("bool-in-shape", raw_file({"a": t("U8", [True], 0, 1)}, b"\x00"), r"shape"),
    ("float-offsets", raw_file({"a": {"dtype": "U8", "shape": [8], "data_offsets": [0.0, 8.0]}}, EIGHT), r"offsets"),
    ("tensor-info-not-object", raw_file({"a": [0, 8]}, EIGHT), r"exactly|dtype"),
]


@pytest.mark.parametrize("content,pattern", [pytest.param(c, p, id=i) for i, c, p in MALFORMED])
def test_malformed_safetensors_is_refused_and_nothing_stored(repo, tmp_path, content, pattern):
    import re

    model = tmp_path / "m"
    model.mkdir()
    (model / "config.json").write_text('{"model_type": "llama"}')
    # a valid safetensors file that sorts before the bad one: it must not be stored either
    (model / "adapter.safetensors").write_bytes(st_file([("w", "F32", [64], os.urandom(256))]))
    (model / "model.safetensors").write_bytes(content)
    with pytest.raises(MalformedFile) as ei:
        repo.commit(model, "bad")
    msg = ei.value.message
    assert "model.safetensors" in msg
    assert re.search(pattern, msg, re.IGNORECASE), msg
    assert object_ids(repo) == set()
    assert repo.refs.list() == {}
    assert repo.head() == ("main", None)
    assert list((repo.dir / "tmp").iterdir()) == []
    assert not (repo.dir / "logs" / "refs").exists() or not any((repo.dir / "logs" / "refs").rglob("*"))


def test_malformed_file_in_existing_repo_moves_nothing(repo, tmp_path, mvc):
    model = tmp_path / "m"
    model.mkdir()
    (model / "model.safetensors").write_bytes(st_file([("w", "F32", [4], bytes(16))]))
    first = repo.commit(model, "good").id
    before = object_ids(repo)
    (model / "model.safetensors").write_bytes(raw_file({"w": t("F32", [4], 0, 16)}, bytes(12)))
    (model / "new.bin").write_bytes(os.urandom(1000))
    with pytest.raises(MalformedFile):
        repo.commit(model, "bad")
    assert object_ids(repo) == before
    assert repo.refs.read("refs/heads/main") == first
    assert [e.new for e in repo.refs.reflog("refs/heads/main")] == [first]

    proc = mvc("commit", str(model), "-m", "bad", cwd=repo.root)
    assert proc.returncode == MalformedFile.exit_code, (proc.returncode, proc.stderr)
    assert "model.safetensors" in proc.stderr and "error:" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert object_ids(repo) == before
    assert repo.refs.read("refs/heads/main") == first


def test_status_refuses_malformed_file_too(repo, tmp_path):
    from mvc.status import status

    model = tmp_path / "m"
    model.mkdir()
    (model / "model.safetensors").write_bytes(raw_file({"a": t("F32", [2], 0, 8)}, EIGHT, trailer=b"x"))
    with pytest.raises(MalformedFile):
        status(repo, model)
    assert object_ids(repo) == set()


# --- valid files round-trip ------------------------------------------------------------------


def test_numpy_saved_file_round_trips_byte_exact(repo, tmp_path):
    from safetensors.numpy import load_file, save_file

    rng = np.random.default_rng(0)
    arrays = {
        "w": rng.standard_normal((3, 5)).astype(np.float32),
        "h": rng.standard_normal((7,)).astype(np.float16),
        "i": np.arange(-5, 5, dtype=np.int64),
        "b": np.array([True, False, True]),
        "u": np.arange(11, dtype=np.uint8),
        "d": rng.standard_normal((2, 2, 2)).astype(np.float64),
        "empty": np.zeros((0,), dtype=np.float32),
        "empty2": np.zeros((4, 0), dtype=np.int8),
    }
    model = tmp_path / "m"
    model.mkdir()
    save_file(arrays, str(model / "model.safetensors"), metadata={"format": "np", "note": "ü"})
    cid = repo.commit(model, "np").id
    out = tmp_path / "out"
    roundtrip(repo, cid, model, out)
    loaded = load_file(str(out / "model.safetensors"))
    assert set(loaded) == set(arrays)
    for k, v in arrays.items():
        assert loaded[k].dtype == v.dtype and loaded[k].shape == v.shape
        assert np.array_equal(loaded[k], v)

    manifest = load_manifest(repo.objects, repo.read_tree(repo.read_commit(cid).tree).entries["model.safetensors"])
    by_name = {te.name: te for te in manifest.tensors}
    assert set(by_name) == set(arrays)
    for k, v in arrays.items():
        raw = np.ascontiguousarray(v).tobytes()
        assert by_name[k].id == hash_bytes(raw)
        assert by_name[k].size == len(raw)
        assert list(by_name[k].shape) == list(v.shape)
    assert by_name["w"].dtype == "F32" and by_name["b"].dtype == "BOOL" and by_name["i"].dtype == "I64"


def test_zero_size_tensors(repo, tmp_path):
    model = tmp_path / "m"
    model.mkdir()
    data = os.urandom(8)
    (model / "mixed.safetensors").write_bytes(
        raw_file({"a": t("F32", [0], 0, 0), "b": t("F32", [2], 0, 8), "c": t("I8", [0, 5], 8, 8), "d": t("BF16", [3, 0, 2], 8, 8)}, data)
    )
    (model / "only_empty.safetensors").write_bytes(raw_file({"z": t("F64", [0], 0, 0), "y": t("U8", [0, 0], 0, 0)}))
    (model / "no_tensors.safetensors").write_bytes(raw_file({"__metadata__": {"k": "v"}}))
    cid = repo.commit(model, "zero").id
    roundtrip(repo, cid, model, tmp_path / "out")
    tree = repo.read_tree(repo.read_commit(cid).tree)
    m = load_manifest(repo.objects, tree.entries["mixed.safetensors"])
    assert {te.name: te.size for te in m.tensors} == {"a": 0, "b": 8, "c": 0, "d": 0}
    assert fsck(repo.objects, repo.refs).ok


def test_tensor_larger_than_part_size_is_split_and_round_trips(repo, tmp_path, monkeypatch):
    monkeypatch.setattr(snapshot_mod, "MAX_PART", 1000)
    big = os.urandom(4400)  # 1100 float32 -> 5 parts
    exact = os.urandom(1000)  # exactly one part
    small = os.urandom(40)
    model = tmp_path / "m"
    model.mkdir()
    content = st_file([("small", "F32", [10], small), ("big", "F32", [1100], big), ("exact", "U8", [1000], exact)])
    (model / "model.safetensors").write_bytes(content)
    cid = repo.commit(model, "split").id
    m = load_manifest(repo.objects, repo.read_tree(repo.read_commit(cid).tree).entries["model.safetensors"])
    by_name = {te.name: te for te in m.tensors}
    assert [p.size for p in by_name["big"].parts] == [1000, 1000, 1000, 1000, 400]
    assert [p.id for p in by_name["big"].parts] == [hash_bytes(big[i : i + 1000]) for i in range(0, 4400, 1000)]
    assert by_name["big"].id == hash_bytes(big)  # the tensor id is the hash of all its data
    assert len(by_name["exact"].parts) == 1 and by_name["exact"].parts[0].id == hash_bytes(exact)
    assert len(by_name["small"].parts) == 1
    for p in by_name["big"].parts:
        assert repo.objects.get(p.id)
    assert not repo.objects.has(hash_bytes(big))  # stored as parts, not whole
    roundtrip(repo, cid, model, tmp_path / "out")
    assert fsck(repo.objects, repo.refs).ok


def test_same_tensor_in_different_files_offsets_and_dirs_is_stored_once(repo, tmp_path):
    T = os.urandom(4000)
    U = os.urandom(800)
    P = os.urandom(12)
    model = tmp_path / "m"
    (model / "shard").mkdir(parents=True)
    files = {
        "a.safetensors": st_file([("t", "F32", [1000], T), ("u", "F32", [200], U)]),
        "b.safetensors": st_file([("p", "U8", [12], P), ("t_copy", "F32", [1000], T)]),  # same data, other name and offset
        "shard/c.safetensors": st_file([("z", "F32", [200], U), ("x", "I32", [1000], T)], metadata={"shard": "c"}),
    }
    for rel, content in files.items():
        (model / rel).write_bytes(content)
    (model / "config.json").write_text("{}")
    cid = repo.commit(model, "dedup").id
    commit = repo.read_commit(cid)
    tree = repo.read_tree(commit.tree)
    expected = {cid, commit.tree, tree.entries["config.json"].id, hash_bytes(b"{}")}
    expected |= {tree.entries[rel].id for rel in files}  # manifests
    expected |= {hash_bytes(header_bytes(c)) for c in files.values()}
    expected |= {hash_bytes(T), hash_bytes(U), hash_bytes(P)}
    assert object_ids(repo) == expected
    stored = sum(repo.objects.size(o) for o in object_ids(repo))
    assert stored < len(T) * 2, "a tensor was stored more than once"
    roundtrip(repo, cid, model, tmp_path / "out")


def test_identical_tensors_across_commits_cost_nothing(repo, tmp_path):
    T = os.urandom(50_000)
    model = tmp_path / "m"
    model.mkdir()
    (model / "model.safetensors").write_bytes(st_file([("a", "F32", [12500], T)]))
    repo.commit(model, "one")
    before = object_ids(repo)
    (model / "model.safetensors").write_bytes(st_file([("pad", "U8", [4], b"abcd"), ("renamed", "F32", [12500], T)]))
    r = repo.commit(model, "two")
    new = object_ids(repo) - before
    assert sum(repo.objects.size(o) for o in new) < 2000
    assert r.stats.bytes_written < 2000
    assert r.stats.bytes_existing >= len(T)


# --- sharded models --------------------------------------------------------------------------


def test_sharded_model_round_trips_byte_exact(repo, tiny_sharded, tmp_path):
    from safetensors.numpy import load_file

    shards = sorted(p.name for p in tiny_sharded.glob("*.safetensors"))
    assert len(shards) >= 2 and (tiny_sharded / "model.safetensors.index.json").exists()
    cid = repo.commit(tiny_sharded, "sharded").id
    out = tmp_path / "out"
    roundtrip(repo, cid, tiny_sharded, out)
    for s in shards:
        a, b = load_file(str(tiny_sharded / s)), load_file(str(out / s))
        assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    assert fsck(repo.objects, repo.refs).ok


def test_same_tensors_in_single_file_and_shards_are_stored_once(repo, tiny_model, tiny_sharded):
    # Both are built from the same seed: identical tensors, different files and offsets.
    repo.commit(tiny_model, "single")
    before = object_ids(repo)
    r = repo.commit(tiny_sharded, "sharded", branch="sharded")
    new = object_ids(repo) - before
    weights = (tiny_model / "model.safetensors").stat().st_size
    new_bytes = sum(repo.objects.size(o) for o in new)
    assert new_bytes < weights * 0.05, f"{new_bytes} new bytes for {weights} bytes of already stored tensors"
    assert r.stats.bytes_existing > weights * 0.9


def _index(model: Path) -> tuple[Path, dict]:
    p = model / "model.safetensors.index.json"
    return p, json.loads(p.read_text())


def test_index_naming_a_missing_shard_is_refused(repo, tiny_sharded):
    p, idx = _index(tiny_sharded)
    name = next(iter(idx["weight_map"]))
    idx["weight_map"][name] = "model-00009-of-00009.safetensors"
    p.write_text(json.dumps(idx))
    with pytest.raises(MalformedFile, match="model-00009"):
        repo.commit(tiny_sharded, "bad index")
    assert object_ids(repo) == set() and repo.refs.list() == {}


def test_index_naming_a_missing_tensor_is_refused(repo, tiny_sharded):
    p, idx = _index(tiny_sharded)
    idx["weight_map"]["ghost.weight"] = next(iter(idx["weight_map"].values()))
    p.write_text(json.dumps(idx))
    with pytest.raises(MalformedFile, match="ghost.weight"):
        repo.commit(tiny_sharded, "bad index")
    assert object_ids(repo) == set() and repo.refs.list() == {}


def test_index_with_a_deleted_shard_file_is_refused(repo, tiny_sharded):
    shard = sorted(tiny_sharded.glob("model-*.safetensors"))[-1]
    shard.unlink()
    with pytest.raises(MalformedFile, match=shard.name):
        repo.commit(tiny_sharded, "missing shard")
    assert object_ids(repo) == set() and repo.refs.list() == {}


def test_index_without_weight_map_is_refused(repo, tiny_sharded):
    p, _ = _index(tiny_sharded)
    p.write_text('{"metadata": {}}')
    with pytest.raises(MalformedFile):
        repo.commit(tiny_sharded, "bad index")
    p.write_text("not json")
    with pytest.raises(MalformedFile):
        repo.commit(tiny_sharded, "bad index")
    assert object_ids(repo) == set()


def test_shard_deleted_after_commit_is_refused_even_though_index_is_unchanged(repo, tiny_sharded):
    # The index file is unchanged (its stat cache entry matches), but the shard it names is gone.
    age(tiny_sharded)
    first = repo.commit(tiny_sharded, "sharded").id
    shard = sorted(tiny_sharded.glob("model-*.safetensors"))[-1]
    shard.unlink()
    before = object_ids(repo)
    with pytest.raises(MalformedFile, match=shard.name):
        repo.commit(tiny_sharded, "lost a shard")
    assert repo.refs.read("refs/heads/main") == first
    assert object_ids(repo) == before


def test_index_edited_while_shards_unchanged_is_accepted(repo, tiny_sharded, tmp_path):
    # The shards are cached (not re-read); the edited index must still be checked against them.
    age(tiny_sharded)
    first = repo.commit(tiny_sharded, "sharded").id
    p, idx = _index(tiny_sharded)
    idx.setdefault("metadata", {})["note"] = "edited"
    p.write_text(json.dumps(idx, indent=2))
    second = repo.commit(tiny_sharded, "edited index").id
    assert second != first
    assert repo.read_commit(second).parents == (first,)
    roundtrip(repo, second, tiny_sharded, tmp_path / "out")

    # ... and an edit that breaks it is still refused
    idx["weight_map"]["ghost.weight"] = next(iter(idx["weight_map"].values()))
    p.write_text(json.dumps(idx))
    with pytest.raises(MalformedFile, match="ghost.weight"):
        repo.commit(tiny_sharded, "broken index")
    assert repo.refs.read("refs/heads/main") == second


def test_shard_rewritten_without_a_tensor_is_refused_while_index_is_cached(repo, tiny_sharded):
    from safetensors.numpy import load_file, save_file

    age(tiny_sharded)
    first = repo.commit(tiny_sharded, "sharded").id
    p, idx = _index(tiny_sharded)
    shard_name = next(iter(idx["weight_map"].values()))
    tensors = load_file(str(tiny_sharded / shard_name))
    dropped = sorted(tensors)[0]
    del tensors[dropped]
    save_file(tensors, str(tiny_sharded / shard_name), metadata={"format": "pt"})
    with pytest.raises(MalformedFile, match=dropped.replace(".", r"\.")):
        repo.commit(tiny_sharded, "shard lost a tensor")
    assert repo.refs.read("refs/heads/main") == first


# --- large opaque files ----------------------------------------------------------------------


@pytest.fixture
def small_chunks(monkeypatch):
    monkeypatch.setattr(snapshot_mod, "SMALL_FILE", 4096)
    monkeypatch.setattr(snapshot_mod, "CDC_MIN", 1024)
    monkeypatch.setattr(snapshot_mod, "CDC_AVG", 4096)
    monkeypatch.setattr(snapshot_mod, "CDC_MAX", 16384)


def _chunks(repo: Repo, cid: str, rel: str) -> list:
    entry = repo.read_tree(repo.read_commit(cid).tree).entries[rel]
    assert entry.kind == "file"
    m = load_manifest(repo.objects, entry)
    assert m.format == "chunks"
    return list(m.chunks)


def test_large_opaque_file_is_chunked_and_round_trips(repo, tmp_path, small_chunks):
    rng = random.Random(7)
    data = rng.randbytes(256 * 1024)
    model = tmp_path / "m"
    model.mkdir()
    (model / "optimizer.bin").write_bytes(data)
    (model / "at_limit.bin").write_bytes(rng.randbytes(4096))
    (model / "over_limit.bin").write_bytes(rng.randbytes(4097))
    cid = repo.commit(model, "big").id
    chunks = _chunks(repo, cid, "optimizer.bin")
    assert len(chunks) > 10
    assert all(c.size <= 16384 for c in chunks)
    assert sum(c.size for c in chunks) == len(data)
    assert b"".join(repo.objects.get(c.id) for c in chunks) == data
    tree = repo.read_tree(repo.read_commit(cid).tree)
    assert tree.entries["at_limit.bin"].kind == "blob"
    assert tree.entries["over_limit.bin"].kind == "file"
    assert tree.entries["optimizer.bin"].hash == hash_bytes(data)
    roundtrip(repo, cid, model, tmp_path / "out")


@pytest.mark.parametrize("edit", ["append", "insert"])
def test_editing_a_chunked_file_reuses_most_chunks(repo, tmp_path, small_chunks, edit):
    rng = random.Random(11)
    data = rng.randbytes(256 * 1024)
    model = tmp_path / "m"
    model.mkdir()
    (model / "data.bin").write_bytes(data)
    first = repo.commit(model, "v1").id
    old = _chunks(repo, first, "data.bin")
    changed = data + b"\x00" if edit == "append" else data[:100_000] + b"!" + data[100_000:]
    (model / "data.bin").write_bytes(changed)
    r = repo.commit(model, "v2")
    new = _chunks(repo, r.id, "data.bin")
    fresh = {c.id for c in new} - {c.id for c in old}
    assert len(fresh) <= 3, f"{len(fresh)} of {len(new)} chunks are new after a one-byte {edit}"
    assert r.stats.bytes_written < len(data) * 0.25
    roundtrip(repo, r.id, model, tmp_path / "out")
    export(repo, first, tmp_path / "old")
    assert (tmp_path / "old" / "data.bin").read_bytes() == data
