"""gc: delete only what no ref, pin, reflog entry, HEAD or recent write can reach.

Commits are built without moving any ref (snapshot + objects.put), then exactly one root is
pointed at each, and the reflogs that would also keep them alive are removed, so every test
shows that *that* root alone protects the commit. Old objects get old mtimes with os.utime.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from _files import files_under

from mvc.checkout import export
from mvc.cli.cmd_gc import parse_duration
from mvc.errors import InvalidArgument
from mvc.repo import Repo
from store.fsck import fsck
from store.gc import gc
from store.model import Commit
from store.refs import utc_now
from store.snapshot import snapshot
from store.walk import walk

DAY = 86400
OLD = 30 * DAY


# --- helpers ---------------------------------------------------------------------------------




def make_model(base: Path, name: str, seed: int) -> Path:
    """A small model directory whose every file is unique to ``seed``."""
    from safetensors.numpy import save_file

    d = base / name
    d.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    save_file({"w": rng.standard_normal((16, 16)).astype(np.float32), "b": rng.standard_normal(16).astype(np.float32)}, str(d / "model.safetensors"))
    (d / "config.json").write_text(json.dumps({"name": name, "seed": seed}))
    (d / "extra").mkdir()
    (d / "extra" / "notes.bin").write_bytes(rng.bytes(300))
    return d


def make_commit(repo: Repo, directory: Path, parents: tuple[str, ...] = ()) -> str:
    """Store ``directory`` as a commit that no ref names (no index row, no reflog)."""
    tree, _ = snapshot(repo.objects, directory)
    tid = repo.objects.put(tree.encode())
    return repo.objects.put(Commit(tid, parents, "tester", utc_now(), f"snapshot of {directory.name}").encode())


def reachable(repo: Repo, cid: str) -> set[str]:
    r = walk(repo.objects, [cid], verify=True, strict=True)
    return r.objects


def age_all(repo: Repo, seconds: float = OLD) -> None:
    t = time.time() - seconds
    for oid in repo.objects.iter_ids():
        os.utime(repo.objects.path(oid), (t, t))


def age(repo: Repo, oids, seconds: float) -> None:
    t = time.time() - seconds
    for oid in oids:
        os.utime(repo.objects.path(oid), (t, t))


def drop_reflogs(repo: Repo) -> None:
    shutil.rmtree(repo.dir / "logs")
    (repo.dir / "logs").mkdir()


def garbage(repo: Repo, n: int = 3, seconds: float = OLD) -> set[str]:
    ids = {repo.objects.put(os.urandom(100 + i)) for i in range(n)}
    age(repo, ids, seconds)
    return ids


# --- each root protects on its own -----------------------------------------------------------

ROOTS = ["branch", "tag", "pin", "remote", "deleted_branch_reflog", "detached_head", "parent_of_branch", "young", "none"]


@pytest.mark.parametrize("root", ROOTS)
def test_each_root_alone_keeps_its_commit(repo, tmp_path, root):
    model = make_model(tmp_path, "m", seed=1)
    cid = make_commit(repo, model)
    needed = reachable(repo, cid)
    assert len(needed) >= 6  # commit, tree, manifest, header, tensors, small blobs

    if root == "branch":
        repo.refs.compare_and_swap("refs/heads/keep", None, cid, message="test")
    elif root == "tag":
        repo.refs.compare_and_swap("refs/tags/v1", None, cid, message="test")
    elif root == "pin":
        repo.refs.compare_and_swap("refs/pins/x", None, cid, message="pin: keep forever")
    elif root == "remote":
        repo.refs.compare_and_swap("refs/remotes/origin/main", None, cid, message="fetch")
    elif root == "deleted_branch_reflog":
        repo.refs.compare_and_swap("refs/heads/gone", None, cid, message="branch: created")
        repo.refs.compare_and_swap("refs/heads/gone", cid, None, message="branch: deleted")
        assert repo.refs.read("refs/heads/gone") is None
    elif root == "detached_head":
        repo.refs.set_head(cid, message="checkout: detached")
    elif root == "parent_of_branch":
        child = make_commit(repo, make_model(tmp_path, "child", seed=2), parents=(cid,))
        repo.refs.compare_and_swap("refs/heads/child", None, child, message="test")
    if root != "deleted_branch_reflog":
        drop_reflogs(repo)  # the root under test must be the only thing that names the commit
    if root != "young":
        age_all(repo)
    junk = garbage(repo)

    report = gc(repo.objects, repo.refs, grace_seconds=14 * DAY)

    present = set(repo.objects.iter_ids())
    assert not (junk & present), "old unreachable objects must be deleted"
    if root == "none":
        assert not (needed & present), "an unreachable old commit must be deleted entirely"
        assert report.removed == len(needed) + len(junk)
    else:
        assert needed <= present, f"gc deleted objects reachable from the {root}"
        out = tmp_path / "out"
        export(repo, cid, out)
        assert files_under(out) == files_under(model)
    if root == "young":
        assert report.kept_recent >= len(needed)
    assert fsck(repo.objects, repo.refs, full=True).ok


def test_gc_keeps_everything_reachable_and_everything_checks_out(repo, tmp_path, mvc):
    """A realistic repository: branches, tags, pins, a deleted branch, history; then garbage."""
    models = {name: make_model(tmp_path / "models", name, seed=i) for i, name in enumerate(["a1", "a2", "f1", "t1", "p1", "d1"])}
    a1 = repo.commit(models["a1"], "a1").id
    a2 = repo.commit(models["a2"], "a2").id
    f1 = repo.commit(models["f1"], "f1", branch="feature").id
    t1 = repo.commit(models["t1"], "t1", branch="for-tag").id
    repo.create_ref("tags", "v1", "for-tag", message="tag")
    p1 = repo.commit(models["p1"], "p1", branch="for-pin").id
    repo.refs.compare_and_swap("refs/pins/prod", None, p1, message="pin")
    d1 = repo.commit(models["d1"], "d1", branch="doomed").id
    for b in ("for-tag", "for-pin", "doomed"):
        repo.delete_ref("heads", b, message="branch: deleted")
    expected = {"main": (a2, "a2"), "main~1": (a1, "a1"), "feature": (f1, "f1"), "v1": (t1, "t1"), "prod": (p1, "p1"), d1: (d1, "d1")}

    age_all(repo)
    junk = garbage(repo, 5)
    # an unreachable object written a minute ago by a command that has not moved its ref yet
    fresh = repo.objects.put(b"being written right now")
    # a temporary file of a write in progress
    (repo.dir / "tmp" / "obj-inprogress").write_bytes(b"partial")
    before = set(repo.objects.iter_ids())

    proc = mvc("gc", "--grace", "14d", "--json", cwd=repo.root)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["removed"] == len(junk)
    after = set(repo.objects.iter_ids())
    assert after == before - junk
    assert fresh in after
    assert (repo.dir / "tmp" / "obj-inprogress").exists()

    proc = mvc("fsck", "--full", cwd=repo.root)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for rev, (cid, name) in expected.items():
        assert repo.resolve(rev) == cid
        out = tmp_path / "out" / name
        if rev in ("feature", "prod"):  # the CLI for a couple, the API for all
            proc = mvc("checkout", rev, "-o", str(out), cwd=repo.root)
            assert proc.returncode == 0, (rev, proc.stderr)
        else:
            export(repo, rev, out)
        assert files_under(out) == files_under(models[name]), rev


def test_dry_run_deletes_nothing(repo, tmp_path, mvc):
    repo.commit(make_model(tmp_path, "m", 0), "m")
    age_all(repo)
    junk = garbage(repo, 4)
    before = set(repo.objects.iter_ids())
    mtimes = {o: repo.objects.mtime(o) for o in before}

    report = gc(repo.objects, repo.refs, grace_seconds=0, dry_run=True)
    assert report.removed == len(junk)
    assert set(repo.objects.iter_ids()) == before

    proc = mvc("gc", "--dry-run", "--grace", "0", "--json", cwd=repo.root)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["removed"] == len(junk)
    assert set(repo.objects.iter_ids()) == before
    assert {o: repo.objects.mtime(o) for o in before} == mtimes

    proc = mvc("gc", "--grace", "0", cwd=repo.root)
    assert proc.returncode == 0, proc.stderr
    assert set(repo.objects.iter_ids()) == before - junk


def test_rewriting_an_object_refreshes_it_for_gc(repo, tmp_path):
    """A command that re-uses an old unreachable object (e.g. a retried commit) keeps it alive."""
    model = make_model(tmp_path, "m", 3)
    cid = make_commit(repo, model)
    needed = reachable(repo, cid)
    age_all(repo)
    cid2 = make_commit(repo, model)  # same content, new commit object: every other object already exists
    assert needed - {cid} <= set(repo.objects.iter_ids())
    gc(repo.objects, repo.refs, grace_seconds=DAY)
    present = set(repo.objects.iter_ids())
    assert cid not in present  # the old commit object itself was not rewritten
    assert (reachable(repo, cid2) - {cid2}) <= present


# --- --grace ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text,seconds",
    [("0", 0), ("90", 90), ("90s", 90), ("30m", 1800), ("2h", 7200), ("14d", 14 * DAY), ("2w", 14 * DAY), ("1.5h", 5400), (" 2H ", 7200)],
)
def test_grace_parsing(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "abc", "-1", "-5m", "1x", "h", "1e", "nan", "14dd", "1.2.3h"])
def test_bad_grace_is_rejected(text):
    with pytest.raises(InvalidArgument):
        parse_duration(text)


def test_bad_grace_on_cli_exits_with_invalid_argument(repo, tmp_path, mvc):
    repo.commit(make_model(tmp_path, "m", 0), "m")
    junk = garbage(repo, 2)
    for bad in ("forever", "--grace=-1"):
        args = [bad] if bad.startswith("--") else ["--grace", bad]
        proc = mvc("gc", *args, cwd=repo.root)
        assert proc.returncode == InvalidArgument.exit_code, (bad, proc.returncode, proc.stderr)
        assert "error:" in proc.stderr
    assert junk <= set(repo.objects.iter_ids())


def test_grace_period_on_cli_is_honoured(repo, tmp_path, mvc):
    repo.commit(make_model(tmp_path, "m", 0), "m")
    age_all(repo)
    one_hour = garbage(repo, 2, seconds=3600)
    three_hours = garbage(repo, 2, seconds=3 * 3600)
    proc = mvc("gc", "--grace", "2h", cwd=repo.root)
    assert proc.returncode == 0, proc.stderr
    present = set(repo.objects.iter_ids())
    assert one_hour <= present
    assert not (three_hours & present)
    proc = mvc("gc", "--grace", "30m", cwd=repo.root)
    assert proc.returncode == 0, proc.stderr
    assert not (one_hour & set(repo.objects.iter_ids()))
    assert mvc("fsck", cwd=repo.root).returncode == 0
