"""Concurrent commits to one branch: every process either wins or gets a clear, retryable error.

Processes are started first, import everything, and then wait for a start file, so the commits
really race. Afterwards nothing may be lost or overwritten: the branch's first-parent chain
holds exactly the winners, fsck is clean, the index agrees with the refs, no lock or temporary
file is left; and losers that retry all end up in one linear history.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import xxhash

from mvc.repo import Repo
from store.errors import RefLocked, RefMoved, RepositoryBusy

RETRYABLE = {RefMoved.exit_code, RefLocked.exit_code, RepositoryBusy.exit_code}

WORKER = r"""
import contextlib, io, json, os, random, sys, time
from pathlib import Path

import mvc.cli  # everything imported before the start signal: the commits themselves race
from mvc.cli import main

start, result_path, retry, *args = sys.argv[1:]
retryable = set(json.loads(os.environ["RETRYABLE_CODES"]))
Path(result_path + ".ready").write_text("ready")
while not os.path.exists(start):
    time.sleep(0.001)
attempts = []
while True:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(list(args))
            rc = 0
        except SystemExit as e:
            rc = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    attempts.append({"rc": rc, "stdout": out.getvalue(), "stderr": err.getvalue()})
    if rc == 0 or retry == "0" or rc not in retryable or len(attempts) >= 60:
        break
    time.sleep(random.uniform(0.0, 0.15))
Path(result_path).write_text(json.dumps(attempts))
"""


def make_models(base: Path, dest: Path, n: int) -> list[Path]:
    """``n`` model directories: the tiny model plus an adapter file with different random weights each."""
    import numpy as np
    from safetensors.numpy import save_file

    dirs = []
    for i in range(n):
        d = dest / f"model{i}"
        shutil.copytree(base, d)
        rng = np.random.default_rng(1000 + i)
        save_file(
            {"lora_A.weight": rng.standard_normal((8, 64), dtype=np.float32), "lora_B.weight": rng.standard_normal((64, 8), dtype=np.float32)},
            str(d / "adapter.safetensors"),
        )
        dirs.append(d)
    return dirs


def race(root: Path, tmp: Path, jobs: list[list[str]], *, retry: bool) -> list[list[dict]]:
    """Run ``mvc`` argument lists in parallel processes released at the same moment; return each one's attempts."""
    start = tmp / f"start-{time.monotonic_ns()}"
    env = {k: v for k, v in os.environ.items() if k not in ("MVC_REPO", "MVC_DEBUG")}
    env["RETRYABLE_CODES"] = json.dumps(sorted(RETRYABLE))
    results, procs = [], []
    for i, args in enumerate(jobs):
        res = tmp / f"{start.name}-result{i}.json"
        results.append(res)
        procs.append(
            subprocess.Popen(
                [sys.executable, "-c", WORKER, str(start), str(res), "1" if retry else "0", *args],
                cwd=root,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    deadline = time.monotonic() + 120
    while not all(Path(str(r) + ".ready").exists() for r in results):
        for p in procs:
            if p.poll() is not None:
                raise AssertionError(f"worker died before the start: {p.communicate()}")
        assert time.monotonic() < deadline, "workers never got ready"
        time.sleep(0.02)
    start.write_text("go")
    out = []
    for p, res in zip(procs, results, strict=True):
        stdout, stderr = p.communicate(timeout=240)
        assert p.returncode == 0, f"worker crashed: {stderr}"
        out.append(json.loads(res.read_text()))
    return out


def first_parent_chain(repo: Repo, tip: str) -> list[str]:
    chain = []
    cid: str | None = tip
    while cid:
        chain.append(cid)
        parents = repo.read_commit(cid).parents
        cid = parents[0] if parents else None
    return chain


def adapter_hash(d: Path) -> str:
    return xxhash.xxh3_128_hexdigest((d / "adapter.safetensors").read_bytes())


def commit_adapter_hash(repo: Repo, cid: str) -> str | None:
    e = repo.read_tree(repo.read_commit(cid).tree).entries.get("adapter.safetensors")
    return e.hash if e else None


def mvc_run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("MVC_REPO", "MVC_DEBUG")}
    return subprocess.run([sys.executable, "-m", "mvc", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def check_repository(root: Path, branch: str, expected_chain_len: int) -> list[str]:
    """Invariants after a race; returns the branch's first-parent chain (tip first)."""
    repo = Repo(root)
    tip = repo.refs.read(f"refs/heads/{branch}")
    chain = first_parent_chain(repo, tip)
    assert len(chain) == expected_chain_len
    fsck = mvc_run("fsck", cwd=root)
    assert fsck.returncode == 0, fsck.stdout + fsck.stderr
    # the index answers the same as the store
    sql = (
        f"WITH RECURSIVE anc(id) AS (SELECT '{tip}' UNION SELECT p.parent_id FROM parents p JOIN anc ON p.commit_id = anc.id) "
        "SELECT count(*) AS n FROM anc JOIN commits c USING (id)"
    )
    q = mvc_run("query", "--json", sql, cwd=root)
    assert q.returncode == 0, q.stderr
    assert json.loads(q.stdout) == [{"n": len(chain)}]
    log = mvc_run("log", "--json", branch, cwd=root)
    assert log.returncode == 0, log.stderr
    assert [c["id"] for c in json.loads(log.stdout)] == chain
    # commits that lost their race are not left in the index
    q = mvc_run("query", "--json", "SELECT count(*) AS n FROM commits", cwd=root)
    assert json.loads(q.stdout) == [{"n": len(chain)}], "the index holds commits no ref reaches"
    # the reflog records every move, each from the previous tip
    entries = [e for e in repo.refs.reflog(f"refs/heads/{branch}")]
    assert [e.new for e in entries] == list(reversed(chain))
    assert [e.old for e in entries[1:]] == list(reversed(chain))[:-1]
    # no lock or temporary file left behind
    assert sorted(p.name for p in (root / ".mvc" / "locks").iterdir()) == []
    assert sorted(p.name for p in (root / ".mvc" / "tmp").iterdir()) == []
    return chain


def _commit_id(attempt: dict) -> str:
    return json.loads(attempt["stdout"])["commit"]


def _check_outcomes(results: list[list[dict]]) -> None:
    for attempts in results:
        for a in attempts:
            if a["rc"] == 0:
                continue
            assert a["rc"] in RETRYABLE, f"not a retryable failure (exit {a['rc']}): {a['stderr']}"
            assert "retry" in a["stderr"].lower(), a["stderr"]
            assert "Traceback" not in a["stderr"]
            assert a["stderr"].lstrip().startswith("error: "), a["stderr"]


N = 8


@pytest.fixture
def racing_repo(_tiny_base, tmp_path):
    root = tmp_path / "repo"
    Repo.init(root)
    dirs = make_models(_tiny_base, tmp_path, N)
    return root, dirs


def test_concurrent_commits_then_retries(racing_repo, _tiny_base, tmp_path):
    root, dirs = racing_repo
    repo = Repo(root)
    base = repo.commit(_tiny_base, "base").id
    jobs = [["commit", str(d), "-m", f"worker {i}", "--json"] for i, d in enumerate(dirs)]

    results = race(root, tmp_path, jobs, retry=False)
    _check_outcomes(results)
    winners = {i: _commit_id(r[0]) for i, r in enumerate(results) if r[0]["rc"] == 0}
    assert winners, "nobody won"
    chain = check_repository(root, "main", len(winners) + 1)
    assert chain[-1] == base
    assert set(chain[:-1]) == set(winners.values()), "the branch history is not exactly the successful commits"
    for i, cid in winners.items():  # nothing overwritten: each winner's commit holds its own model
        assert commit_adapter_hash(repo, cid) == adapter_hash(dirs[i])

    losers = [i for i, r in enumerate(results) if r[0]["rc"] != 0]
    if losers:
        again = race(root, tmp_path, [jobs[i] for i in losers], retry=True)
        _check_outcomes(again)
        for attempts in again:
            assert attempts[-1]["rc"] == 0, f"never succeeded after {len(attempts)} attempts: {attempts[-1]['stderr']}"
        for i, attempts in zip(losers, again, strict=True):
            winners[i] = _commit_id(attempts[-1])
    assert len(winners) == N
    chain = check_repository(root, "main", N + 1)
    assert chain[-1] == base
    assert set(chain[:-1]) == set(winners.values())
    for cid in chain:
        assert len(repo.read_commit(cid).parents) <= 1, "history is not linear"
    assert sorted(commit_adapter_hash(repo, c) for c in chain[:-1]) == sorted(adapter_hash(d) for d in dirs)


def test_concurrent_first_commits_on_unborn_branch(racing_repo, tmp_path):
    root, dirs = racing_repo
    dirs = dirs[:4]
    jobs = [["commit", str(d), "-m", f"first {i}", "--json"] for i, d in enumerate(dirs)]
    results = race(root, tmp_path, jobs, retry=False)
    _check_outcomes(results)
    winners = [_commit_id(r[0]) for r in results if r[0]["rc"] == 0]
    assert winners
    chain = check_repository(root, "main", len(winners))
    assert set(chain) == set(winners)
    again = race(root, tmp_path, [j for j, r in zip(jobs, results, strict=True) if r[0]["rc"] != 0], retry=True)
    _check_outcomes(again)
    assert all(a[-1]["rc"] == 0 for a in again)
    chain = check_repository(root, "main", len(dirs))
    repo = Repo(root)
    assert sorted(commit_adapter_hash(repo, c) for c in chain) == sorted(adapter_hash(d) for d in dirs)


def test_concurrent_branch_creation(racing_repo, _tiny_base, tmp_path):
    """Creating the same branch from several processes: one wins, the others are told it exists."""
    root, _dirs = racing_repo
    repo = Repo(root)
    a = repo.commit(_tiny_base, "base").id
    results = race(root, tmp_path, [["branch", "same", a] for _ in range(4)], retry=False)
    codes = sorted(r[0]["rc"] for r in results)
    from store.errors import AlreadyExists

    assert codes.count(0) == 1
    assert all(c in (AlreadyExists.exit_code, RefLocked.exit_code) for c in codes if c), codes
    assert repo.refs.read("refs/heads/same") == a
    assert sorted(p.name for p in (root / ".mvc" / "locks").iterdir()) == []


def test_busy_index_after_the_ref_moved_is_not_a_failure(tiny_model, tmp_path, monkeypatch):
    """Once the ref has moved the commit has happened: an index held by another process at that
    moment must not turn it into a (retryable!) error, or a retry would record it twice."""
    from mvc.index import Index

    repo = Repo.init(tmp_path / "r")
    base = repo.commit(tiny_model, "base").id
    (tiny_model / "notes.txt").write_text("second\n")

    def busy(self):
        raise RepositoryBusy("repository busy: the index is held by another process (PID 1)")

    monkeypatch.setattr(Index, "sync_refs", busy)
    result = repo.commit(tiny_model, "second")
    monkeypatch.undo()
    assert repo.refs.read("refs/heads/main") == result.id
    assert [c["id"] for c in repo.index().ancestry(result.id)] == [result.id, base]  # caught up on the next read
    with repo.index().reader() as con:
        assert con.execute("SELECT count(*) FROM commits").fetchone()[0] == 2
