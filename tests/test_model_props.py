"""Property tests (hypothesis, fixed and repeatable profile) for the object model and the snapshot.

- canonical JSON of trees, commits and file manifests decodes to equal objects;
- identical content gets identical bytes and ids, whatever the order it was built in;
- random files of random bytes round-trip byte-exact through snapshot and materialize.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from unittest import mock

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import store.snapshot as snapshot_mod
from store import FORMAT_VERSION
from store.ids import hash_bytes
from store.materialize import materialize
from store.model import Commit, FileManifest, Note, Part, TensorEntry, Tree, TreeEntry, canonical_json, decode
from store.objects import ObjectStore
from store.paths import check_tree_path
from store.safetensors import DTYPE_BITS
from store.snapshot import snapshot
from store.walk import walk

PROFILE = settings(
    derandomize=True,
    max_examples=50,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# --- strategies ------------------------------------------------------------------------------

oids = st.binary(min_size=1, max_size=64).map(hash_bytes)
counts = st.integers(min_value=0, max_value=2**53)
# text without lone surrogates (they cannot be UTF-8); anything else, control characters included
texts = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)
name_chars = st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="/\\")
components = st.text(name_chars, min_size=1, max_size=12).filter(lambda c: c not in (".", "..") and not (len(c) >= 2 and c[1] == ":"))
tree_paths = st.lists(components, min_size=1, max_size=4).map("/".join).filter(lambda p: p.split("/")[0] != ".mvc")

json_scalars = st.none() | st.booleans() | st.integers(-(2**63), 2**63) | st.floats(allow_nan=False, allow_infinity=False) | texts
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4),
    max_leaves=12,
)
json_objects = st.dictionaries(texts, json_values, max_size=5)


@st.composite
def parts(draw, max_parts: int = 4) -> tuple[Part, ...]:
    return tuple(Part(draw(oids), draw(st.integers(0, 10**9))) for _ in range(draw(st.integers(0, max_parts))))


@st.composite
def tensor_entries(draw) -> TensorEntry:
    ps = draw(parts())
    return TensorEntry(
        name=draw(texts),
        dtype=draw(st.sampled_from(sorted(DTYPE_BITS))),
        shape=tuple(draw(st.lists(st.integers(0, 10**6), max_size=4))),
        id=draw(oids),
        size=sum(p.size for p in ps),
        parts=ps,
    )


@st.composite
def manifests(draw) -> FileManifest:
    if draw(st.booleans()):
        header = Part(draw(oids), draw(st.integers(8, 10**6)))
        tensors = tuple(draw(st.lists(tensor_entries(), max_size=5)))
        size = header.size + sum(t.size for t in tensors)
        return FileManifest("safetensors", size, draw(oids), header=header, tensors=tensors)
    chunks = draw(parts(8))
    return FileManifest("chunks", sum(c.size for c in chunks), draw(oids), chunks=chunks)


def _no_file_dir_clash(paths: list[str]) -> bool:
    s = set(paths)
    return not any("/".join(p.split("/")[:i]) in s for p in paths for i in range(1, p.count("/") + 1))


tree_entries = st.builds(TreeEntry, kind=st.sampled_from(["blob", "file"]), id=oids, size=counts, hash=oids, mode=st.sampled_from(["644", "755"]))
trees = st.dictionaries(tree_paths, tree_entries, max_size=8).filter(lambda d: _no_file_dir_clash(list(d))).map(Tree)

commits = st.builds(
    Commit,
    tree=oids,
    parents=st.lists(oids, max_size=3).map(tuple),
    author=texts,
    time=texts,
    message=texts,
    kind=st.sampled_from(["commit", "checkpoint", "train", "merge"]) | texts,
    lineage=json_objects,
    metrics=json_objects,
)

notes = st.builds(Note, commit=oids, author=texts, time=texts, data=json_objects)


# --- canonical JSON round trips --------------------------------------------------------------


def _assert_canonical(obj, data: bytes) -> None:
    import json

    parsed = json.loads(data)
    assert parsed["v"] == FORMAT_VERSION and isinstance(parsed["type"], str)
    assert canonical_json(parsed) == data  # sorted keys, no whitespace: re-encoding is a fixed point
    assert data.decode("utf-8")


@PROFILE
@given(trees)
def test_tree_round_trips(tree):
    data = tree.encode()
    _assert_canonical(tree, data)
    assert decode(data, hash_bytes(data)) == tree


@PROFILE
@given(commits)
def test_commit_round_trips(commit):
    data = commit.encode()
    _assert_canonical(commit, data)
    back = decode(data, hash_bytes(data))
    assert back == commit
    assert back.encode() == data


@PROFILE
@given(manifests())
def test_manifest_round_trips(manifest):
    data = manifest.encode()
    _assert_canonical(manifest, data)
    back = decode(data, hash_bytes(data))
    assert back == manifest
    assert back.parts() == manifest.parts()


@PROFILE
@given(notes)
def test_note_round_trips(note):
    data = note.encode()
    assert decode(data) == note


@PROFILE
@given(trees, st.randoms(use_true_random=False))
def test_identical_trees_get_identical_ids_whatever_the_insertion_order(tree, rnd):
    items = list(tree.entries.items())
    rnd.shuffle(items)
    shuffled = Tree(dict(items))
    assert shuffled.encode() == tree.encode()
    assert hash_bytes(shuffled.encode()) == hash_bytes(tree.encode())


@PROFILE
@given(commits, st.randoms(use_true_random=False))
def test_identical_commits_get_identical_ids_whatever_the_key_order(commit, rnd):
    def shuffle(d):
        if isinstance(d, dict):
            items = [(k, shuffle(v)) for k, v in d.items()]
            rnd.shuffle(items)
            return dict(items)
        if isinstance(d, list):
            return [shuffle(v) for v in d]
        return d

    other = Commit(
        commit.tree, commit.parents, commit.author, commit.time, commit.message, commit.kind, shuffle(commit.lineage), shuffle(commit.metrics)
    )
    assert hash_bytes(other.encode()) == hash_bytes(commit.encode())


@PROFILE
@given(commits, commits)
def test_different_commits_get_different_ids(a, b):
    if a != b:
        assert hash_bytes(a.encode()) != hash_bytes(b.encode())


@PROFILE
@given(st.binary(max_size=300))
def test_decode_of_arbitrary_bytes_never_crashes_unexpectedly(data):
    from store.errors import MvcError

    try:
        decode(data, "x")
    except MvcError:
        pass


hostile_fields = st.dictionaries(
    st.sampled_from(
        [
            "tree",
            "parents",
            "author",
            "time",
            "message",
            "kind",
            "lineage",
            "metrics",
            "entries",
            "format",
            "size",
            "hash",
            "header",
            "tensors",
            "chunks",
            "commit",
            "data",
        ]
    ),
    json_values
    | oids
    | st.lists(oids, max_size=2)
    | st.dictionaries(tree_paths | texts, json_values | st.builds(lambda e: e.to_json(), tree_entries), max_size=3),
    max_size=8,
)


@PROFILE
@given(st.sampled_from(["tree", "commit", "file", "note", "blob", None]), st.integers(-1, 3), hostile_fields)
def test_decode_of_hostile_objects_raises_only_mvc_errors(kind, version, fields):
    """Objects from a damaged disk or a hostile remote: decoding either succeeds or raises an MvcError."""
    from store.errors import MvcError

    obj = dict(fields, type=kind, v=version)
    data = canonical_json(obj)
    try:
        decoded = decode(data, hash_bytes(data))
    except MvcError:
        return
    # whatever decoded must encode back to a valid object of the same kind
    again = decode(decoded.encode())
    assert again == decoded


# --- snapshot / materialize round trips ------------------------------------------------------

file_names = st.text(st.sampled_from("abcdefghijklmnopqrstuvwxyz0123456789_-.é"), min_size=1, max_size=10).filter(
    lambda n: (
        n not in (".", "..")
        and n not in snapshot_mod.ALWAYS_IGNORED
        and n != snapshot_mod.IGNORE_FILE
        and not n.endswith(".safetensors")
        and not n.endswith(snapshot_mod.SHARD_INDEX_SUFFIX)
    )
)
rel_paths = st.lists(file_names, min_size=1, max_size=3).map("/".join)
small_files = st.dictionaries(rel_paths, st.tuples(st.binary(max_size=3000), st.booleans()), min_size=1, max_size=8).filter(
    lambda d: _no_file_dir_clash(list(d))
)


def _write(root: Path, files: dict[str, tuple[bytes, bool]]) -> None:
    for rel, (data, executable) in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        os.chmod(p, 0o755 if executable else 0o644)


def _read(root: Path) -> dict[str, tuple[bytes, bool]]:
    out = {}
    for dirpath, _dirs, names in os.walk(root):
        for n in names:
            p = Path(dirpath) / n
            assert not p.is_symlink()
            out[p.relative_to(root).as_posix()] = (p.read_bytes(), bool(p.stat().st_mode & 0o100))
    return out


@PROFILE
@given(small_files, st.sampled_from(["whole", "chunked"]))
def test_random_files_round_trip_byte_exact(files, how):
    for rel in files:
        check_tree_path(rel)
    small = snapshot_mod.SMALL_FILE if how == "whole" else 300
    with (
        tempfile.TemporaryDirectory() as tmp,
        mock.patch.object(snapshot_mod, "SMALL_FILE", small),
        mock.patch.object(snapshot_mod, "CDC_MIN", 256),
        mock.patch.object(snapshot_mod, "CDC_AVG", 512),
        mock.patch.object(snapshot_mod, "CDC_MAX", 1024),
    ):
        tmp = Path(tmp)
        src, out = tmp / "src", tmp / "out"
        src.mkdir()
        _write(src, files)
        store = ObjectStore(tmp / "objects", tmp / "tmp", fsync=False)
        tree, _stats = snapshot(store, src)
        assert set(tree.entries) == set(files)
        for rel, (data, _x) in files.items():
            assert tree.entries[rel].hash == hash_bytes(data)
            assert tree.entries[rel].size == len(data)
        tid = store.put(tree.encode())
        assert decode(store.get(tid), tid) == tree

        # the tree alone, through the store, gives the files back
        cid = store.put(Commit(tid, (), "a", "t", "m").encode())
        assert not walk(store, [cid], verify=True).problems
        materialize(store, decode(store.get(tid)), out)
        assert _read(out) == files

        # the same content snapshotted again gets the same tree id
        tree2, stats2 = snapshot(store, out)
        assert hash_bytes(tree2.encode()) == tid
        assert stats2.bytes_written == 0
