"""The object store: atomic create-only writes, read-only files, and re-hashing on every read.

Damage is done by hand (a flipped byte, a truncated file) and must be caught by
``ObjectStore.get``, by ``mvc fsck`` and by ``mvc checkout -o`` without leaving a wrong file.
"""

from __future__ import annotations

import os
import shutil
import stat
import time
from pathlib import Path

import pytest
from _files import files_under

from mvc.checkout import export
from mvc.errors import FsckFailed
from store.errors import MvcError, ObjectCorrupt, ObjectMissing
from store.fsck import fsck
from store.ids import hash_bytes
from store.materialize import load_manifest
from store.objects import ObjectStore

DAY = 86400


# --- helpers ---------------------------------------------------------------------------------




def visible_objects(store: ObjectStore) -> set[str]:
    return set(store.iter_ids())


def assert_all_objects_intact(store: ObjectStore) -> None:
    for oid in store.iter_ids():
        assert hash_bytes(store.path(oid).read_bytes()) == oid, f"visible object {oid} is incomplete or wrong"


def assert_no_tmp(mvc_dir: Path) -> None:
    leftovers = list((mvc_dir / "tmp").iterdir()) if (mvc_dir / "tmp").exists() else []
    assert leftovers == [], f"temporary files left behind: {leftovers}"


@pytest.fixture
def store(tmp_path) -> ObjectStore:
    return ObjectStore(tmp_path / "objects", tmp_path / "tmp", fsync=True)


def make_writable(path: Path) -> None:
    os.chmod(path, stat.S_IMODE(path.stat().st_mode) | stat.S_IWUSR)


def flip_byte(path: Path, offset: int | None = None) -> None:
    make_writable(path)
    data = bytearray(path.read_bytes())
    i = len(data) // 2 if offset is None else offset
    data[i] ^= 0x01
    path.write_bytes(bytes(data))


def truncate(path: Path) -> None:
    make_writable(path)
    data = path.read_bytes()
    path.write_bytes(data[: max(0, len(data) // 2)])


# --- basic store behaviour -------------------------------------------------------------------


def test_put_get_round_trip_and_layout(store):
    data = os.urandom(5000)
    oid = store.put(data)
    assert oid == hash_bytes(data)
    assert len(oid) == 32 and oid == oid.lower()
    p = store.root / oid[:2] / oid[2:]
    assert p.is_file()
    assert p.read_bytes() == data
    assert store.get(oid) == data
    assert store.has(oid)
    assert store.size(oid) == len(data)
    assert visible_objects(store) == {oid}


def test_empty_object_round_trips(store):
    oid = store.put(b"")
    assert store.get(oid) == b""
    assert store.size(oid) == 0


def test_object_files_are_read_only(store):
    oid = store.put(b"some bytes that must never change")
    mode = stat.S_IMODE(store.path(oid).stat().st_mode)
    assert mode & 0o222 == 0, f"object file is writable: {oct(mode)}"


def test_missing_object_raises_object_missing(store):
    with pytest.raises(ObjectMissing):
        store.get("0" * 32)
    with pytest.raises(ObjectMissing):
        store.size("0" * 32)
    with pytest.raises(ObjectMissing):
        store.get("../../etc/passwd")


def test_existing_object_is_success_and_refreshes_mtime(store):
    data = b"written twice"
    oid = store.put(data)
    old = time.time() - 30 * DAY
    os.utime(store.path(oid), (old, old))
    assert store.mtime(oid) == pytest.approx(old, abs=1)

    assert store.put(data) == oid  # no error
    assert store.mtime(oid) > time.time() - 60, "re-writing an existing object must refresh its mtime (gc grace)"
    assert store.get(oid) == data
    assert list(store.tmp_dir.iterdir()) == []

    # The same through a batch: counted as existing, not written.
    os.utime(store.path(oid), (old, old))
    with store.batch() as batch:
        assert batch.add(data) == oid
    assert batch.bytes_existing == len(data) and batch.bytes_written == 0
    assert store.mtime(oid) > time.time() - 60


def test_passing_a_wrong_precomputed_id_is_not_trusted_by_get(store):
    # put() trusts the caller's id; get() must not trust the disk.
    wrong = hash_bytes(b"other")
    store.put(b"content", wrong)
    with pytest.raises(ObjectCorrupt):
        store.get(wrong)


# --- interrupted writes ----------------------------------------------------------------------


class _DiskFull:
    """A file object that writes a few bytes and then fails, like a full disk."""

    def __init__(self, real):
        self.real = real

    def write(self, b):
        self.real.write(bytes(b[:7]))
        raise OSError(28, "No space left on device")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.real.close()


def test_write_interrupted_mid_file_leaves_nothing(store, monkeypatch):
    real_fdopen = os.fdopen
    monkeypatch.setattr(os, "fdopen", lambda fd, *a, **k: _DiskFull(real_fdopen(fd, *a, **k)))
    with pytest.raises(OSError):
        store.put(os.urandom(10_000))
    monkeypatch.undo()
    assert visible_objects(store) == set()
    assert list(store.tmp_dir.iterdir()) == []


def test_failing_rename_leaves_no_visible_object_and_no_tmp(store, monkeypatch):
    def boom(*a, **k):
        raise OSError(5, "I/O error")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        store.put(b"never visible")
    monkeypatch.undo()
    assert visible_objects(store) == set()
    assert list(store.tmp_dir.iterdir()) == []


def test_batch_interrupted_by_exception_makes_nothing_visible(store):
    with pytest.raises(KeyboardInterrupt):
        with store.batch() as batch:
            batch.add(b"one")
            batch.add(b"two")
            assert len(list(store.tmp_dir.iterdir())) == 2
            raise KeyboardInterrupt
    assert visible_objects(store) == set()
    assert list(store.tmp_dir.iterdir()) == []


def test_batch_rename_failing_halfway_leaves_only_complete_objects(store, monkeypatch):
    real_replace = os.replace
    calls = []

    def flaky(src, dst):
        calls.append(dst)
        if len(calls) == 2:
            raise OSError(5, "I/O error")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", flaky)
    with pytest.raises(OSError):
        with store.batch() as batch:
            for i in range(4):
                batch.add(f"object number {i}".encode() * 100)
    monkeypatch.undo()
    assert len(visible_objects(store)) == 1
    assert_all_objects_intact(store)
    assert list(store.tmp_dir.iterdir()) == []


def test_commit_interrupted_mid_write_moves_no_ref_and_leaves_store_clean(repo, tiny_model, monkeypatch):
    real_fdopen = os.fdopen
    opened = []

    def fdopen(fd, *a, **k):
        f = real_fdopen(fd, *a, **k)
        opened.append(fd)  # the third object written dies half-way
        if len(opened) == 3:
            return _DiskFull(f)
        return f

    monkeypatch.setattr("store.objects.os.fdopen", fdopen)
    with pytest.raises(OSError):
        repo.commit(tiny_model, "interrupted")
    monkeypatch.undo()
    assert len(opened) == 3
    assert repo.refs.list() == {}
    assert repo.head() == ("main", None)
    assert_no_tmp(repo.dir)
    assert_all_objects_intact(repo.objects)
    assert fsck(repo.objects, repo.refs, full=True).ok

    # the retry works and round-trips
    cid = repo.commit(tiny_model, "retry").id
    out = repo.root.parent / "out"
    export(repo, cid, out)
    assert files_under(out) == files_under(tiny_model)


def test_commit_interrupted_by_ctrl_c_moves_no_ref(repo, tiny_model):
    seen = []

    def progress(n):
        seen.append(n)
        if len(seen) == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        repo.commit(tiny_model, "ctrl-c", progress=progress)
    assert repo.refs.list() == {}
    assert_no_tmp(repo.dir)
    assert_all_objects_intact(repo.objects)
    assert fsck(repo.objects, repo.refs, full=True).ok


# --- damaged objects -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def _committed_template(tmp_path_factory, _tiny_base):
    from mvc.repo import Repo

    root = tmp_path_factory.mktemp("objects-template") / "repo"
    root.mkdir()
    repo = Repo.init(root)
    repo.commit(_tiny_base, "init")
    return root


@pytest.fixture
def committed(_committed_template, _tiny_base, tmp_path):
    """A repository with the tiny model committed on main, and the ids of its objects by kind."""
    from mvc.repo import Repo

    root = tmp_path / "repo"
    shutil.copytree(_committed_template, root)
    repo = Repo(root)
    tiny_model = _tiny_base
    cid = repo.resolve("main")
    commit = repo.read_commit(cid)
    tree = repo.read_tree(commit.tree)
    weights = tree.entries["model.safetensors"]
    manifest = load_manifest(repo.objects, weights)
    biggest = max(manifest.tensors, key=lambda t: t.size)
    assert tree.entries["config.json"].kind == "blob"
    ids = {
        "tensor": biggest.parts[0].id,
        "header": manifest.header.id,
        "small_file": tree.entries["config.json"].id,
        "manifest": weights.id,
        "tree": commit.tree,
        "commit": cid,
    }
    return repo, tiny_model, cid, ids


KINDS = ["tensor", "header", "small_file", "manifest", "tree", "commit"]
DAMAGE = {"flip": flip_byte, "truncate": truncate}


def assert_no_wrong_file(out: Path, original: Path) -> None:
    """Whatever a failed checkout left in ``out`` is complete and correct; no temporary files."""
    if not out.exists():
        return
    want = files_under(original)
    for rel, data in files_under(out).items():
        assert rel in want, f"unexpected file {rel} left in the checkout target"
        assert data == want[rel], f"{rel} was left with wrong content"


@pytest.mark.parametrize("damage", sorted(DAMAGE))
@pytest.mark.parametrize("kind", KINDS)
def test_damaged_object_is_caught_everywhere(committed, kind, damage, tmp_path):
    repo, model, cid, ids = committed
    oid = ids[kind]
    assert fsck(repo.objects, repo.refs).ok
    DAMAGE[damage](repo.objects.path(oid))

    with pytest.raises(ObjectCorrupt):
        repo.objects.get(oid)
    assert repo.objects.get(oid, verify=False) == repo.objects.path(oid).read_bytes()  # only verify=False trusts the disk

    report = fsck(repo.objects, repo.refs)
    assert not report.ok
    assert any(oid in p for p in report.problems), report.problems

    out = tmp_path / "export"
    with pytest.raises(ObjectCorrupt):
        export(repo, "main", out)
    assert_no_wrong_file(out, model)


@pytest.mark.parametrize("kind,damage", [("tensor", "flip"), ("small_file", "truncate"), ("manifest", "flip")])
def test_damage_via_cli_fsck_and_checkout(committed, kind, damage, tmp_path, mvc):
    repo, model, cid, ids = committed
    oid = ids[kind]
    DAMAGE[damage](repo.objects.path(oid))

    proc = mvc("fsck", cwd=repo.root)
    assert proc.returncode == FsckFailed.exit_code, (proc.returncode, proc.stdout, proc.stderr)
    assert oid in proc.stdout + proc.stderr

    out = tmp_path / "co"
    proc = mvc("checkout", "main", "-o", str(out), cwd=repo.root)
    assert proc.returncode == ObjectCorrupt.exit_code, (proc.returncode, proc.stdout, proc.stderr)
    assert "error:" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert_no_wrong_file(out, model)


def test_corrupt_part_never_becomes_a_visible_file(committed, tmp_path):
    """The safetensors file is rebuilt in a temporary file and checked before it appears."""
    repo, model, cid, ids = committed
    flip_byte(repo.objects.path(ids["tensor"]))
    out = tmp_path / "export"
    with pytest.raises(ObjectCorrupt):
        export(repo, "main", out)
    assert not (out / "model.safetensors").exists()
    assert [p.name for p in out.iterdir() if "mvc-tmp" in p.name] == []
    # files rebuilt before the failure are complete
    assert_no_wrong_file(out, model)


def test_cli_fsck_of_a_clean_repository_succeeds(committed, mvc):
    repo, *_ = committed
    proc = mvc("fsck", "--full", cwd=repo.root)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_fsck_full_finds_damaged_unreachable_object(committed):
    repo, *_ = committed
    stray = repo.objects.put(b"nobody points at me")
    flip_byte(repo.objects.path(stray), 0)
    assert fsck(repo.objects, repo.refs).ok  # unreachable objects are not checked by default
    report = fsck(repo.objects, repo.refs, full=True)
    assert not report.ok
    assert any(stray in p for p in report.problems)


def test_missing_object_is_reported_not_crashing(committed, tmp_path):
    repo, model, cid, ids = committed
    repo.objects.delete(ids["tensor"])
    report = fsck(repo.objects, repo.refs)
    assert any(ids["tensor"] in p for p in report.problems)
    with pytest.raises(MvcError):
        export(repo, "main", tmp_path / "x")
    assert_no_wrong_file(tmp_path / "x", model)
