"""The stat cache: an unchanged model is not read again; a changed or racily clean file is.

Reading is detected by replacing the functions that read model files (``split_file``,
``_open_view``, ``read_header``) with counters or with functions that raise.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

import store.snapshot as snapshot_mod
from mvc.errors import NothingToCommit
from mvc.repo import Repo
from mvc.status import status
from store.statcache import StatCache


def age(directory: Path, seconds: float = 1000) -> None:
    t = time.time() - seconds
    for dirpath, _dirs, names in os.walk(directory):
        for n in names:
            os.utime(Path(dirpath) / n, (t, t))


class ReadCounter:
    """Wraps ``split_file``; records which files were read."""

    def __init__(self, monkeypatch):
        self.read: list[str] = []
        real = snapshot_mod.split_file

        def counting(src, *a, **k):
            self.read.append(src.rel)
            return real(src, *a, **k)

        monkeypatch.setattr(snapshot_mod, "split_file", counting)


def forbid_reading(monkeypatch) -> None:
    def boom(*a, **k):
        raise AssertionError("an unchanged model file was read")

    monkeypatch.setattr(snapshot_mod, "split_file", boom)
    monkeypatch.setattr(snapshot_mod, "_open_view", boom)
    monkeypatch.setattr(snapshot_mod, "read_header", boom)


@pytest.fixture
def committed(repo, tiny_model):
    age(tiny_model)
    first = repo.commit(tiny_model, "init")
    assert first.stats.files_read == len(list(tiny_model.iterdir()))
    return repo, tiny_model, first.id


def test_unchanged_model_is_not_read_by_status_or_commit(committed, monkeypatch):
    repo, model, cid = committed
    forbid_reading(monkeypatch)
    st = status(repo, model)
    assert st.clean, st.files
    with pytest.raises(NothingToCommit):
        repo.commit(model, "again")
    r = repo.commit(model, "again", allow_empty=True)
    assert r.stats.files_read == 0
    assert r.stats.files_cached == len(list(model.iterdir()))
    assert r.tree == repo.read_commit(cid).tree


def test_unchanged_model_is_not_read_by_cli_status(committed, mvc):
    repo, model, cid = committed
    # a fresh process, a fresh StatCache object: the cache lives on disk
    cache = StatCache(repo.dir / "statcache.json")
    for p in model.iterdir():
        assert cache.lookup(model.resolve(), p.name, os.stat(p)) is not None, p.name
    proc = mvc("status", str(model), "--json", cwd=repo.root)
    assert proc.returncode == 0, proc.stderr
    assert '"clean": true' in proc.stdout


def test_unchanged_model_is_not_read_by_status_command(committed, monkeypatch, capsys):
    """The CLI verb in-process, so that reading can be forbidden."""
    import json

    from mvc.cli import main

    repo, model, cid = committed
    forbid_reading(monkeypatch)
    with pytest.raises(SystemExit) as ei:
        main(["-C", str(repo.root), "status", str(model), "--json"])
    assert ei.value.code in (0, None)
    assert json.loads(capsys.readouterr().out)["clean"] is True


def test_same_size_new_mtime_is_read_again(committed, monkeypatch):
    repo, model, cid = committed
    cfg = model / "config.json"
    text = cfg.read_text()
    changed = text.replace('"', "'", 1) if '"' in text else text[::-1]
    assert len(changed) == len(text) and changed != text
    cfg.write_text(changed)
    t = time.time() - 500  # old, but different from before
    os.utime(cfg, (t, t))
    counter = ReadCounter(monkeypatch)
    st = status(repo, model)
    assert [(f.path, f.change) for f in st.files] == [("config.json", "modified")]
    assert counter.read == ["config.json"]
    counter.read.clear()
    r = repo.commit(model, "edit config")
    assert counter.read == ["config.json"]
    assert r.stats.files_read == 1


def test_same_size_same_mtime_but_rewritten_is_read_again(committed, monkeypatch):
    """Content changed, size and mtime put back exactly: the inode change time still gives it away."""
    repo, model, cid = committed
    cfg = model / "config.json"
    before = os.stat(cfg)
    data = bytearray(cfg.read_bytes())
    data[-2] = ord("x") if data[-2] != ord("x") else ord("y")
    time.sleep(0.01)
    cfg.write_bytes(bytes(data))
    os.utime(cfg, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = os.stat(cfg)
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    counter = ReadCounter(monkeypatch)
    st = status(repo, model)
    assert [f.path for f in st.files] == ["config.json"]
    assert counter.read == ["config.json"]


def test_replaced_file_with_same_stat_is_read_again(committed, monkeypatch):
    """A file replaced by rename (new inode) with the same size and mtime is not trusted."""
    repo, model, cid = committed
    w = model / "tokenizer.json"
    before = os.stat(w)
    tmp = model.parent / "tokenizer.json.new"
    tmp.write_bytes(w.read_bytes())
    os.utime(tmp, ns=(before.st_atime_ns, before.st_mtime_ns))
    os.replace(tmp, w)
    counter = ReadCounter(monkeypatch)
    st = status(repo, model)
    assert st.clean
    assert counter.read == ["tokenizer.json"]


def test_racily_clean_file_is_not_trusted(repo, tmp_path, monkeypatch):
    model = tmp_path / "m"
    model.mkdir()
    (model / "old.bin").write_bytes(b"old" * 100)
    age(model)
    (model / "fresh.bin").write_bytes(b"fresh" * 100)
    fresh_mtime = os.stat(model / "fresh.bin").st_mtime_ns
    if fresh_mtime % 1_000_000_000 == 0:  # keep to the fine-grained window
        os.utime(model / "fresh.bin", ns=(fresh_mtime + 1000, fresh_mtime + 1000))
        fresh_mtime += 1000
    # the commit reads the files 10 ms after fresh.bin was written: a write in the same tick could go unseen
    monkeypatch.setattr(snapshot_mod, "now_ns", lambda: fresh_mtime + 10_000_000)
    repo.commit(model, "one")
    monkeypatch.undo()
    cache = StatCache(repo.dir / "statcache.json")
    root = model.resolve()
    assert cache.lookup(root, "old.bin", os.stat(model / "old.bin")) is not None
    assert cache.lookup(root, "fresh.bin", os.stat(model / "fresh.bin")) is None

    counter = ReadCounter(monkeypatch)
    assert status(repo, model).clean
    assert counter.read == ["fresh.bin"]  # re-read because it could have changed in the same tick

    # a same-size write after the commit read it: must be seen
    (model / "fresh.bin").write_bytes(b"FRESH" * 100)
    st = status(repo, model)
    assert [(f.path, f.change) for f in st.files] == [("fresh.bin", "modified")]


def test_file_read_well_after_its_mtime_is_trusted(repo, tmp_path, monkeypatch):
    model = tmp_path / "m"
    model.mkdir()
    (model / "a.bin").write_bytes(b"a" * 100)
    mtime = os.stat(model / "a.bin").st_mtime_ns
    if mtime % 1_000_000_000 == 0:
        os.utime(model / "a.bin", ns=(mtime + 1000, mtime + 1000))
        mtime += 1000
    monkeypatch.setattr(snapshot_mod, "now_ns", lambda: mtime + 200_000_000)  # read 200 ms after the write
    repo.commit(model, "one")
    monkeypatch.undo()
    forbid_reading(monkeypatch)
    assert status(repo, model).clean


def test_whole_second_mtimes_get_a_wider_racy_window(repo, tmp_path, monkeypatch):
    """A filesystem with whole-second mtimes could hide a write up to a second later."""
    model = tmp_path / "m"
    model.mkdir()
    read_at = (int(time.time()) - 100) * 1_000_000_000 + 500_000_000
    stamps = {
        "coarse_recent.bin": read_at - 1_500_000_000,  # a whole second, 1.5 s before the read: not trusted
        "fine_recent.bin": read_at - 1_500_000_000 + 123_456,  # the same moment with sub-second precision: trusted
        "coarse_old.bin": read_at - 60_500_000_000,  # a whole second, a minute before: trusted
    }
    for name, ns in stamps.items():
        (model / name).write_bytes(name.encode())
        os.utime(model / name, ns=(ns, ns))
    assert stamps["coarse_recent.bin"] % 1_000_000_000 == 0
    monkeypatch.setattr(snapshot_mod, "now_ns", lambda: read_at)
    repo.commit(model, "one")
    monkeypatch.undo()
    counter = ReadCounter(monkeypatch)
    assert status(repo, model).clean
    assert counter.read == ["coarse_recent.bin"]


def test_cache_hit_whose_objects_are_gone_is_read_again(committed, monkeypatch):
    """A cached entry is used by commit only while its object is in the store."""
    repo, model, cid = committed
    tree = repo.read_tree(repo.read_commit(cid).tree)
    weights = tree.entries["model.safetensors"]
    repo.objects.delete(weights.id)  # e.g. a damaged store, or a cache shared with another repo
    counter = ReadCounter(monkeypatch)
    r = repo.commit(model, "again", allow_empty=True)
    assert counter.read == ["model.safetensors"]
    assert repo.objects.has(weights.id)
    assert r.tree == repo.read_commit(cid).tree
    from store.fsck import fsck

    assert fsck(repo.objects, repo.refs).ok


def test_damaged_cache_file_costs_only_a_reread(committed, monkeypatch):
    repo, model, cid = committed
    (repo.dir / "statcache.json").write_text("{not json")
    repo = Repo(repo.root)  # a new process would load the damaged file
    counter = ReadCounter(monkeypatch)
    assert status(repo, model).clean
    assert sorted(counter.read) == sorted(p.name for p in model.iterdir())


def test_cache_rows_with_bad_ids_are_ignored(committed, monkeypatch):
    import json

    repo, model, cid = committed
    path = repo.dir / "statcache.json"
    data = json.loads(path.read_text())
    rows = data[str(model.resolve())]
    rows["config.json"][5] = "../../etc/passwd"
    path.write_text(json.dumps(data))
    repo = Repo(repo.root)
    counter = ReadCounter(monkeypatch)
    assert status(repo, model).clean
    assert counter.read == ["config.json"]
