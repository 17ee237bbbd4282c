"""Crash safety of ``mvc commit`` (DESIGN.md, "Write order and invariants", 4).

A commit runs in a subprocess whose chosen step is replaced by one that SIGKILLs (or SIGINTs)
the process right before or right after the real step. Whatever the point, afterwards every
ref points at a complete commit (the previous one while the ref has not moved yet), fsck is
clean, ``mvc log`` works, the index answers like a fresh ``reindex``, and the next commit
succeeds without being blocked by the dead process's lock file.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _cli import run_cli

from mvc.errors import UnknownRevision
from mvc.repo import Repo

KILLER = r"""
import importlib, os, signal, sys
from pathlib import Path

target, when, nth, signame, ready, *args = sys.argv[1:]
nth = int(nth)
sig = getattr(signal, signame)
calls = [0]
if target != "none":
    mod_name, _, attr = target.partition(":")
    owner = importlib.import_module(mod_name)
    parts = attr.split(".")
    for p in parts[:-1]:
        owner = getattr(owner, p)
    orig = getattr(owner, parts[-1])

def hit():
    sys.stderr.flush()
    os.kill(os.getpid(), sig)

def wrapper(*a, **k):
    calls[0] += 1
    if calls[0] == nth and when == "before":
        hit()
    result = orig(*a, **k)
    if calls[0] == nth and when == "after":
        hit()
    return result

if target != "none":
    setattr(owner, parts[-1], wrapper)
from mvc.cli import main
if ready != "-":
    Path(ready).write_text("ready")
main(args)
"""


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("MVC_REPO", "MVC_DEBUG")}


def run_killed(root: Path, target: str, when: str, nth: int, args: list[str], sig: str = "SIGKILL") -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", KILLER, target, when, str(nth), sig, "-", *args], cwd=root, env=_env(), capture_output=True, text=True, timeout=120
    )


def mvc(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """The real CLI entry point in this process: the checks after each crash would otherwise spend
    most of their time importing mvc again."""
    return run_cli(*args, cwd=cwd)


INDEX_QUERIES = [
    "SELECT id, tree, message FROM commits ORDER BY id",
    "SELECT commit_id, parent_id, pos FROM parents ORDER BY commit_id, pos",
    "SELECT name, commit_id FROM refs ORDER BY name",
    "SELECT commit_id, path, object_id FROM files ORDER BY commit_id, path",
    "SELECT commit_id, count(*) FROM tensors GROUP BY commit_id ORDER BY commit_id",
    "SELECT * FROM commit_bytes ORDER BY commit_id",
]


def _answers(repo: Repo) -> list:
    with repo.index().reader() as con:  # caught up with the refs, as every query is
        return [con.execute(q).fetchall() for q in INDEX_QUERIES]


def assert_index_matches_reindex(root: Path) -> None:
    repo = Repo(root)
    live = _answers(repo)
    repo.index().reindex()
    assert live == _answers(repo), "the index does not answer like a fresh reindex"


def check_intact(root: Path, expect: set[str | None]) -> str | None:
    """After a crash: main points at one of ``expect`` (None: absent), fsck is clean, log works."""
    repo = Repo(root)
    tip = repo.refs.read("refs/heads/main")
    assert tip in expect, f"main is at {tip}, expected one of {expect}"
    if tip is not None:
        c = repo.read_commit(tip)  # complete: parses, and its tree is readable
        repo.read_tree(c.tree)
    fsck = mvc("fsck", cwd=root)
    assert fsck.returncode == 0, fsck.stdout + fsck.stderr
    log = mvc("log", "--json", cwd=root)
    assert "Traceback" not in log.stderr
    if tip is None:
        assert log.returncode == UnknownRevision.exit_code, log.stderr
    else:
        assert log.returncode == 0, log.stderr
        assert json.loads(log.stdout)[0]["id"] == tip
    assert_index_matches_reindex(root)
    return tip


def recover(root: Path, model: Path, tip: str | None) -> str:
    """The next commit succeeds (no stale lock in the way) and builds on ``tip``."""
    # a lock left by the dead process would make this wait its 10 s out and fail with RefLocked
    proc = mvc("commit", str(model), "-m", "after the crash", "--json", "--allow-empty", cwd=root)
    assert proc.returncode == 0, proc.stderr
    cid = json.loads(proc.stdout)["commit"]
    repo = Repo(root)
    assert repo.refs.read("refs/heads/main") == cid
    assert list(repo.read_commit(cid).parents) == ([tip] if tip else [])
    fsck = mvc("fsck", "--full", cwd=root)
    assert fsck.returncode == 0, fsck.stdout + fsck.stderr
    assert sorted(p.name for p in (root / ".mvc" / "locks").iterdir()) == []
    assert_index_matches_reindex(root)
    return cid


@pytest.fixture(scope="module")
def template(tmp_path_factory, _tiny_base) -> tuple[Path, str]:
    root = tmp_path_factory.mktemp("crash") / "repo"
    repo = Repo.init(root)
    shutil.copytree(_tiny_base, root / "model")
    cid = repo.commit(root / "model", "base").id
    return root, cid


@pytest.fixture
def crash_repo(template, tmp_path) -> tuple[Path, str]:
    src, base = template
    root = tmp_path / "repo"
    shutil.copytree(src, root)
    return root, base


# (patched step, before/after it, which call) -> does the ref still hold the previous commit?
KILL_POINTS = [
    ("store.snapshot:split_file", "before", 3, "old"),  # some files stored, others not
    ("store.objects:ObjectBatch.add", "after", 4, "old"),  # object bytes in tmp/, not yet visible
    ("store.objects:ObjectBatch.commit", "before", 2, "old"),
    ("os:replace", "before", 2, "old"),  # between the renames of one batch
    ("store.objects:ObjectBatch.commit", "after", 3, "old"),
    ("store.statcache:StatCache.save", "before", 1, "old"),
    ("store.objects:ObjectStore.put", "after", 1, "old"),  # tree stored, no commit object
    ("store.objects:ObjectStore.put", "after", 2, "old"),  # commit object stored, not indexed
    ("mvc.index:Index.add_commit", "before", 1, "old"),
    ("mvc.index:Index.add_commit", "after", 1, "old"),  # indexed, ref not moved
    ("store.refs:RefLock.acquire", "after", 1, "old"),  # lock file held by a dead process
    ("store.refs:RefStore._append_log", "before", 1, "old"),
    ("store.refs:RefStore._append_log", "after", 1, "old"),  # reflog says moved, ref did not
    ("store.refs:RefStore._write_atomic", "before", 1, "old"),
    ("store.refs:RefStore._write_atomic", "after", 1, "new"),  # ref moved, lock still there
    ("mvc.index:Index.sync_refs", "before", 1, "new"),  # index not told about the move
    ("mvc.repo:run_hook", "before", 2, "new"),  # post-commit point
]


@pytest.mark.parametrize("target,when,nth,outcome", KILL_POINTS, ids=[f"{t.split(':')[1]}-{w}-{n}" for t, w, n, _ in KILL_POINTS])
def test_sigkill_during_commit(crash_repo, _tiny_tweaked, target, when, nth, outcome):
    root, base = crash_repo
    model = _tiny_tweaked[0]
    proc = run_killed(root, target, when, nth, ["commit", str(model), "-m", "doomed", "--json"])
    assert proc.returncode == -signal.SIGKILL, f"the kill point was not reached (exit {proc.returncode}): {proc.stderr}"
    if outcome == "old":
        tip = check_intact(root, {base})
    else:
        tip = check_intact(root, {base, *_new_commits(root, base)})
        assert tip != base
    recover(root, model, tip)


def _new_commits(root: Path, base: str) -> set[str]:
    repo = Repo(root)
    tip = repo.refs.read("refs/heads/main")
    return {tip} if tip and tip != base and list(repo.read_commit(tip).parents) == [base] else set()


FIRST_COMMIT_POINTS = [
    ("store.objects:ObjectBatch.commit", "before", 1),
    ("store.objects:ObjectStore.put", "after", 2),
    ("mvc.index:Index.add_commit", "after", 1),
    ("store.refs:RefStore._write_atomic", "before", 1),
]


@pytest.mark.parametrize("target,when,nth", FIRST_COMMIT_POINTS, ids=[f"{t.split(':')[1]}-{w}-{n}" for t, w, n in FIRST_COMMIT_POINTS])
def test_sigkill_during_first_commit(tmp_path, _tiny_base, target, when, nth):
    root = tmp_path / "repo"
    Repo.init(root)
    proc = run_killed(root, target, when, nth, ["commit", str(_tiny_base), "-m", "first", "--json"])
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    check_intact(root, {None})
    assert not (root / ".mvc" / "refs" / "heads" / "main").exists()
    recover(root, _tiny_base, None)


# -- Ctrl-C ---------------------------------------------------------------------------------
SIGINT_POINTS = [
    ("store.objects:ObjectBatch.add", "before", 5),  # a batch with pending temporary files
    ("store.objects:ObjectBatch.commit", "before", 2),
    ("store.objects:ObjectStore.put", "after", 2),
    ("mvc.index:Index.add_commit", "after", 1),
    ("store.refs:RefStore._append_log", "after", 1),
    ("store.refs:RefStore._write_atomic", "before", 1),
]


@pytest.mark.parametrize("target,when,nth", SIGINT_POINTS, ids=[f"{t.split(':')[1]}-{w}-{n}" for t, w, n in SIGINT_POINTS])
def test_ctrl_c_during_commit(crash_repo, _tiny_tweaked, target, when, nth):
    root, base = crash_repo
    model = _tiny_tweaked[0]
    proc = run_killed(root, target, when, nth, ["commit", str(model), "-m", "interrupted", "--json"], sig="SIGINT")
    assert proc.returncode == 130, f"exit {proc.returncode}: {proc.stderr}"
    assert "Traceback" not in proc.stderr
    assert proc.stdout == ""
    assert sorted(p.name for p in (root / ".mvc" / "tmp").iterdir()) == [], "temporary files left behind"
    assert sorted(p.name for p in (root / ".mvc" / "locks").iterdir()) == [], "lock left behind"
    check_intact(root, {base})
    recover(root, model, base)


# -- a larger model, killed at random moments -------------------------------------------------
def big_model(dest: Path, seed: int, mb: int = 4) -> Path:
    import numpy as np
    from safetensors.numpy import save_file

    rng = np.random.default_rng(seed)
    dest.mkdir(parents=True)
    tensors = {f"layers.{i}.weight": rng.standard_normal((256, 1024), dtype=np.float32) for i in range(mb)}
    save_file(tensors, str(dest / "model.safetensors"))
    (dest / "config.json").write_text(json.dumps({"seed": seed, "layers": mb}))
    (dest / "opaque.bin").write_bytes(rng.bytes(5 * 1024 * 1024))  # > SMALL_FILE: chunked
    return dest


def _start(root: Path, args: list[str], ready: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", KILLER, "none", "before", "0", "SIGKILL", str(ready), *args],
        cwd=root,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_ready(proc: subprocess.Popen, ready: Path) -> None:
    deadline = time.monotonic() + 60
    while not ready.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.002)


@pytest.mark.parametrize("sig", ["SIGKILL", "SIGINT"])
def test_random_kills_of_a_larger_commit(tmp_path, sig):
    rng = random.Random(20240611 if sig == "SIGKILL" else 7)
    root = tmp_path / "repo"
    Repo.init(root)
    # how long an uninterrupted commit takes (after imports), measured on a scratch repository
    scratch = tmp_path / "scratch"
    Repo.init(scratch)
    ready = tmp_path / "ready-0"
    p = _start(scratch, ["commit", str(big_model(tmp_path / "m0", 0)), "-m", "timing"], ready)
    _wait_ready(p, ready)
    t0 = time.monotonic()
    p.communicate(timeout=120)
    duration = time.monotonic() - t0
    assert p.returncode == 0
    tip: str | None = None
    outcomes = []
    for i in range(1, 5):
        model = big_model(tmp_path / f"m{i}", i)
        ready = tmp_path / f"ready-{i}"
        p = _start(root, ["commit", str(model), "-m", f"attempt {i}"], ready)
        _wait_ready(p, ready)
        time.sleep(rng.uniform(0, duration))
        p.send_signal(getattr(signal, sig))
        _out, err = p.communicate(timeout=120)
        outcomes.append(p.returncode)
        if sig == "SIGKILL":
            assert p.returncode in (0, -signal.SIGKILL), err
        else:
            # 130: interrupted during the work; -SIGINT: the signal came while the interpreter was
            # already shutting down after the work (a shell shows both as 130)
            assert p.returncode in (0, 130, -signal.SIGINT), err
            assert "Traceback" not in err
        # a commit that did not report success may or may not have moved its ref: both are complete
        now = check_intact(root, {tip, *_new_commits_from(root, tip)})
        if p.returncode == 0:
            assert now != tip
        if sig == "SIGINT" and p.returncode == 130:
            assert sorted(x.name for x in (root / ".mvc" / "locks").iterdir()) == []
        tip = recover(root, model, now)
    assert any(rc != 0 for rc in outcomes), f"no attempt was interrupted ({outcomes}); delays too long?"


def _new_commits_from(root: Path, tip: str | None) -> set[str]:
    repo = Repo(root)
    now = repo.refs.read("refs/heads/main")
    if now and now != tip and list(repo.read_commit(now).parents) == ([tip] if tip else []):
        return {now}
    return set()


# -- Ctrl-C while DuckDB runs a statement ------------------------------------------------------
# DuckDB reports an interrupted statement as RuntimeError("Query interrupted") (Ctrl-C) or
# duckdb.InterruptException; the index must hand both on as KeyboardInterrupt, or the CLI
# prints a traceback and exits 1 instead of 130.
HEAVY_SQL = "SELECT sum(hash(i)) FROM range(20000000000) t(i)"  # about a minute: only an interrupt ends it early


def test_interrupted_statement_is_a_keyboard_interrupt(crash_repo, monkeypatch):
    import threading

    import duckdb

    import mvc.index

    root, _base = crash_repo
    opened = []
    real_connect = duckdb.connect
    monkeypatch.setattr(mvc.index.duckdb, "connect", lambda *a, **k: opened.append(real_connect(*a, **k)) or opened[-1])
    done = threading.Event()

    def interrupter():
        while not done.wait(0.2):
            if opened:
                opened[-1].interrupt()

    t = threading.Thread(target=interrupter, daemon=True)
    t.start()
    t0 = time.monotonic()
    try:
        with pytest.raises(KeyboardInterrupt):
            Repo(root).index().query(HEAVY_SQL)
    finally:
        done.set()
        t.join()
    assert time.monotonic() - t0 < 30


def test_query_interrupted_error_is_translated(crash_repo):
    root, _base = crash_repo
    index = Repo(root).index()
    with pytest.raises(KeyboardInterrupt):
        with index.connect(read_only=True):
            raise RuntimeError("Query interrupted")  # what DuckDB raises on Ctrl-C during a statement
    with pytest.raises(RuntimeError, match="something else"):
        with index.connect(read_only=True):
            raise RuntimeError("something else")


def test_ctrl_c_during_mvc_query(crash_repo, tmp_path):
    root, base = crash_repo
    ready = tmp_path / "ready"
    # a few seconds of work (bounded, should DuckDB miss the signal); Ctrl-C arrives in the middle
    p = _start(root, ["query", "SELECT sum(hash(i)) FROM range(1000000000) t(i)"], ready)
    _wait_ready(p, ready)
    time.sleep(1.0)
    p.send_signal(signal.SIGINT)
    _out, err = p.communicate(timeout=120)
    assert p.returncode == 130, err
    assert "Traceback" not in err
    check_intact(root, {base})
