"""The DuckDB lineage index: answers checked against the store and the model files themselves,
rebuilt identically by ``reindex``, caught up after refs move behind its back, and polite when
another process holds the file.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
import xxhash
from _cli import run_cli

from mvc.errors import InvalidQuery, RepositoryBusy
from mvc.repo import Repo
from store.materialize import load_manifest
from store.model import Commit
from store.walk import walk

run = run_cli


def query(root: Path, sql: str) -> list[dict]:
    return json.loads(run("query", "--json", sql, cwd=root, check=True).stdout)


def header_tensors(path: Path) -> dict[str, dict]:
    """name -> {dtype, shape, size, id}, computed from the file bytes here, not by mvc."""
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        begin, end = info["data_offsets"]
        raw = data[8 + n + begin : 8 + n + end]
        out[name] = {"dtype": info["dtype"], "shape": info["shape"], "size": len(raw), "id": xxhash.xxh3_128_hexdigest(raw)}
    return out


class Hist:
    root: Path
    sources: dict[str, Path]  # commit id -> model directory it was made from
    a: str
    b: str
    c: str
    changed: list[str]


@pytest.fixture(scope="module")
def hist(tmp_path_factory, _tiny_base, _tiny_tweaked) -> Hist:
    """main: A (base) <- B (tweaked); side: A <- C (base plus a notes file); tag v1 at A."""
    h = Hist()
    h.root = tmp_path_factory.mktemp("index") / "repo"
    repo = Repo.init(h.root)
    model = h.root / "model"
    shutil.copytree(_tiny_base, model)
    h.a = repo.commit(model, "A").id
    tweaked, h.changed = _tiny_tweaked
    shutil.copytree(tweaked, model, dirs_exist_ok=True)
    h.b = repo.commit(model, "B").id
    side = h.root.parent / "side"
    shutil.copytree(_tiny_base, side)
    (side / "notes.txt").write_text("side branch\n")
    repo.create_ref("heads", "side", h.a, message="branch: created")
    h.c = repo.commit(side, "C", branch="side").id
    repo.create_ref("tags", "v1", h.a, message="tag")
    h.sources = {h.a: _tiny_base, h.b: tweaked, h.c: side}
    return h


@pytest.fixture
def fresh(hist, tmp_path) -> Path:
    """A private copy of the history repository, for tests that change it."""
    dst = tmp_path / "repo"
    shutil.copytree(hist.root, dst)
    return dst


# -- answers checked against the files and the store -----------------------------------------
def test_commits_and_parents(hist):
    rows = query(hist.root, "SELECT id, message FROM commits ORDER BY id")
    assert {r["id"]: r["message"] for r in rows} == {hist.a: "A", hist.b: "B", hist.c: "C"}
    parents = query(hist.root, "SELECT commit_id, parent_id, pos FROM parents ORDER BY commit_id")
    assert sorted((r["commit_id"], r["parent_id"], r["pos"]) for r in parents) == sorted([(hist.b, hist.a, 0), (hist.c, hist.a, 0)])


def test_refs_table(hist):
    rows = query(hist.root, "SELECT name, commit_id FROM refs ORDER BY name")
    assert {r["name"]: r["commit_id"] for r in rows} == {
        "HEAD": hist.b,
        "refs/heads/main": hist.b,
        "refs/heads/side": hist.c,
        "refs/tags/v1": hist.a,
    }


def test_files_table(hist):
    rows = query(hist.root, "SELECT commit_id, path, size, file_hash FROM files")
    got = {(r["commit_id"], r["path"]): (r["size"], r["file_hash"]) for r in rows}
    want = {}
    for cid, src in hist.sources.items():
        for p in src.rglob("*"):
            if p.is_file():
                data = p.read_bytes()
                want[(cid, p.relative_to(src).as_posix())] = (len(data), xxhash.xxh3_128_hexdigest(data))
    assert got == want


def test_tensors_table(hist):
    rows = query(hist.root, "SELECT commit_id, path, name, dtype, shape, tensor_id, size FROM tensors")
    got = {(r["commit_id"], r["name"]): (r["path"], r["dtype"], list(r["shape"]), r["tensor_id"], r["size"]) for r in rows}
    want = {}
    for cid, src in hist.sources.items():
        for name, t in header_tensors(src / "model.safetensors").items():
            want[(cid, name)] = ("model.safetensors", t["dtype"], t["shape"], t["id"], t["size"])
    assert got == want


def test_which_commits_share_a_tensor(hist):
    expected: dict[str, set[str]] = {}
    for cid, src in hist.sources.items():
        for t in header_tensors(src / "model.safetensors").values():
            expected.setdefault(t["id"], set()).add(cid)
    rows = query(hist.root, "SELECT tensor_id, commits, commit_ids FROM tensor_sharing ORDER BY tensor_id")
    got = {r["tensor_id"]: (r["commits"], r["commit_ids"]) for r in rows}
    assert got == {tid: (len(cs), sorted(cs)) for tid, cs in expected.items()}

    # a tensor the tweak changed lives in B only; one it did not change is shared by all three
    base_t = header_tensors(hist.sources[hist.a] / "model.safetensors")
    changed = hist.changed[0]
    unchanged = next(n for n in sorted(base_t) if n not in hist.changed)
    sql = "SELECT s.commit_ids FROM tensor_sharing s JOIN tensors t USING (tensor_id) WHERE t.commit_id = '{c}' AND t.name = '{n}'"
    assert query(hist.root, sql.format(c=hist.b, n=changed)) == [{"commit_ids": [hist.b]}]
    assert query(hist.root, sql.format(c=hist.a, n=unchanged)) == [{"commit_ids": sorted([hist.a, hist.b, hist.c])}]


def test_bytes_unique_to_each_commit(hist):
    repo = Repo(hist.root)
    needs: dict[str, set[str]] = {}
    for cid in hist.sources:
        # what this commit alone needs: its tree, manifests and blobs (not the commit object, not its parents)
        everything = walk(repo.objects, [cid]).objects
        ancestors = set().union(*(walk(repo.objects, [p]).objects for p in repo.read_commit(cid).parents))
        tree = repo.read_tree(repo.read_commit(cid).tree)
        objs = {repo.read_commit(cid).tree}
        for e in tree.entries.values():
            objs.add(e.id)
            m = load_manifest(repo.objects, e)
            objs.update(p.id for p in (m.parts() if m else []))
        assert objs == (everything - ancestors - {cid}) | (objs & ancestors)
        needs[cid] = objs
    count: dict[str, int] = {}
    for objs in needs.values():
        for o in objs:
            count[o] = count.get(o, 0) + 1
    rows = query(hist.root, "SELECT commit_id, total_bytes, unique_bytes FROM commit_bytes ORDER BY commit_id")
    got = {r["commit_id"]: (r["total_bytes"], r["unique_bytes"]) for r in rows}
    want = {cid: (sum(repo.objects.size(o) for o in objs), sum(repo.objects.size(o) for o in objs if count[o] == 1)) for cid, objs in needs.items()}
    assert got == want
    # sanity against the models themselves: B's unique bytes hold at least the changed tensors' data
    tw = header_tensors(hist.sources[hist.b] / "model.safetensors")
    assert got[hist.b][1] >= sum(tw[n]["size"] for n in hist.changed)
    # C differs from A only by notes.txt (plus its own tree object)
    c_tree = repo.read_commit(hist.c).tree
    assert got[hist.c][1] == len("side branch\n") + repo.objects.size(c_tree)


def test_show_tables_and_text_output(hist):
    names = {r["name"] for r in query(hist.root, "SHOW TABLES")}
    assert {"commits", "parents", "refs", "files", "tensors", "blobs", "tensor_sharing", "commit_bytes"} <= names
    text = run("query", "SELECT id, message FROM commits ORDER BY message", cwd=hist.root, check=True).stdout.splitlines()
    assert text[0].split() == ["id", "message"]
    assert [ln.split()[1] for ln in text[1:]] == ["A", "B", "C"]


# -- reindex --------------------------------------------------------------------------------
QUERIES = [
    "SELECT id, tree, author, time, message, kind, lineage, metrics FROM commits ORDER BY id",
    "SELECT commit_id, parent_id, pos FROM parents ORDER BY commit_id, pos",
    "SELECT name, commit_id FROM refs ORDER BY name",
    "SELECT commit_id, path, kind, object_id, file_hash, size, mode, format FROM files ORDER BY commit_id, path",
    "SELECT commit_id, path, name, dtype, shape, tensor_id, size, parts FROM tensors ORDER BY commit_id, path, name",
    "SELECT commit_id, blob_id, size FROM blobs ORDER BY commit_id, blob_id",
    "SELECT * FROM commit_bytes ORDER BY commit_id",
    "SELECT tensor_id, size, commits, commit_ids FROM tensor_sharing ORDER BY tensor_id",
]


def _answers(root: Path) -> list:
    repo = Repo(root)
    return [repo.index().query(q) for q in QUERIES]


def test_reindex_from_nothing_gives_identical_answers(fresh):
    before = _answers(fresh)
    assert all(rows for _cols, rows in before)
    (fresh / ".mvc" / "index.duckdb").unlink()
    for extra in (fresh / ".mvc").glob("index.duckdb.wal"):
        extra.unlink()
    out = run("reindex", cwd=fresh, check=True)
    assert "3 commit" in out.stdout
    assert _answers(fresh) == before
    # reindexing a complete index changes nothing either
    run("reindex", cwd=fresh, check=True)
    assert _answers(fresh) == before


def test_index_is_rebuilt_on_demand_when_deleted(fresh):
    before = _answers(fresh)
    (fresh / ".mvc" / "index.duckdb").unlink()
    log = json.loads(run("log", "--json", cwd=fresh, check=True).stdout)
    assert len(log) == 2
    assert _answers(fresh) == before


def test_ref_moved_behind_the_index_is_caught_up(fresh, hist):
    repo = Repo(fresh)
    # a commit object that exists in the store but was never indexed (as after a crash)
    parent = repo.read_commit(hist.b)
    d = Commit(
        tree=repo.read_commit(hist.c).tree,
        parents=(hist.b,),
        author="hand",
        time="2030-01-01T00:00:00.000000Z",
        message="D",
        kind="commit",
        lineage={},
        metrics={},
    )
    did = repo.objects.put(d.encode())
    assert parent is not None
    refs = fresh / ".mvc" / "refs"
    (refs / "heads" / "main").write_text(hist.a + "\n")
    (refs / "heads" / "direct").write_text(did + "\n")
    (refs / "tags" / "byhand").write_text(hist.c + "\n")
    rows = query(fresh, "SELECT name, commit_id FROM refs ORDER BY name")
    assert {r["name"]: r["commit_id"] for r in rows} == {
        "HEAD": hist.a,
        "refs/heads/main": hist.a,
        "refs/heads/direct": did,
        "refs/heads/side": hist.c,
        "refs/tags/v1": hist.a,
        "refs/tags/byhand": hist.c,
    }
    assert [c["id"] for c in json.loads(run("log", "--json", cwd=fresh, check=True).stdout)] == [hist.a]
    assert [c["id"] for c in json.loads(run("log", "--json", "direct", cwd=fresh, check=True).stdout)] == [did, hist.b, hist.a]
    assert query(fresh, f"SELECT count(*) AS n FROM files WHERE commit_id = '{did}'") == [{"n": len(list(hist.sources[hist.c].iterdir()))}]
    # a ref deleted by hand disappears from the index too
    (refs / "tags" / "byhand").unlink()
    assert "refs/tags/byhand" not in {r["name"] for r in query(fresh, "SELECT name FROM refs")}


# -- a busy index ---------------------------------------------------------------------------
HOLDER = """
import duckdb, pathlib, sys, time
con = duckdb.connect(sys.argv[1])
con.execute("SELECT 1").fetchall()
pathlib.Path(sys.argv[2]).write_text("ready")
while not pathlib.Path(sys.argv[3]).exists():
    time.sleep(0.05)
con.close()
"""


class Holder:
    def __init__(self, db: Path, tmp: Path) -> None:
        self.ready = tmp / "holder.ready"
        self.stop_file = tmp / "holder.stop"
        self.proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(db), str(self.ready), str(self.stop_file)])
        deadline = time.monotonic() + 60
        while not self.ready.exists():
            assert self.proc.poll() is None, "holder died"
            assert time.monotonic() < deadline, "holder never got the index"
            time.sleep(0.05)

    def stop(self) -> None:
        self.stop_file.write_text("stop")
        try:
            self.proc.wait(timeout=30)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()


def test_busy_index(fresh, tmp_path, hist):
    holder = Holder(fresh / ".mvc" / "index.duckdb", tmp_path)
    try:
        for args in (("log",), ("query", "SELECT 1")):
            t0 = time.monotonic()
            proc = run(*args, cwd=fresh, env={"MVC_BUSY_TIMEOUT": "1"}, process=True)
            took = time.monotonic() - t0
            assert proc.returncode == RepositoryBusy.exit_code, proc.stderr
            assert "busy" in proc.stderr.lower()
            assert "Traceback" not in proc.stderr
            errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error: ")]
            assert len(errors) == 1
            assert "retry" in proc.stderr.lower()
            assert 1.0 <= took < 8, f"MVC_BUSY_TIMEOUT=1 not honoured: took {took:.1f}s"
        # a command waiting with a longer timeout gets through once the holder lets go
        waiting = subprocess.Popen(
            [sys.executable, "-m", "mvc", "log", "--json"],
            cwd=fresh,
            env={**os.environ, "MVC_BUSY_TIMEOUT": "30"},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        time.sleep(1.0)
        assert waiting.poll() is None, "mvc log did not wait for the index"
    finally:
        holder.stop()
    out, err = waiting.communicate(timeout=60)
    assert waiting.returncode == 0, err
    assert [c["id"] for c in json.loads(out)] == [hist.b, hist.a]
    proc = run("log", cwd=fresh, env={"MVC_BUSY_TIMEOUT": "1"}, process=True)
    assert proc.returncode == 0, proc.stderr


# -- bad queries ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "sql",
    [
        "SELEC 1",
        "SELECT nope FROM commits",
        "SELECT * FROM no_such_table",
        "DELETE FROM commits",
        "DROP TABLE commits",
        "INSERT INTO refs VALUES ('x', 'y')",
    ],
)
def test_bad_or_writing_query(hist, sql):
    proc = run("query", sql, cwd=hist.root, process=sql == "SELEC 1")
    assert proc.returncode == InvalidQuery.exit_code, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert lines[0].startswith("error: ")
    assert [ln for ln in lines if not ln.startswith("hint: ")] == [lines[0]], proc.stderr  # one line, plus a hint
    assert "Traceback" not in proc.stderr
    assert proc.stdout == ""


def test_index_unharmed_by_rejected_writes(hist):
    run("query", "DELETE FROM commits", cwd=hist.root)
    assert len(query(hist.root, "SELECT id FROM commits")) == 3


def test_json_output_types(hist):
    rows = query(
        hist.root, f"SELECT id, parents.pos, length(message) AS n, lineage FROM commits LEFT JOIN parents ON id = commit_id WHERE id = '{hist.b}'"
    )
    assert rows == [{"id": hist.b, "pos": 0, "n": 1, "lineage": "{}"}]
    assert query(hist.root, "SELECT 1 AS x WHERE false") == []
