"""The DuckDB lineage index: a query index derived from the store and refs.

Tables (docs/format.md, "Index"): ``commits``, ``parents``, ``refs``, ``files``, ``tensors``
and ``blobs`` (the distinct objects each commit needs). Deleting ``index.duckdb`` loses
nothing: ``reindex`` rebuilds the same rows from the store. The indexed commits are those
reachable from refs, HEAD and reflog entries; on every open the index catches up with refs
that moved without it (after a crash, or a ref changed by hand).

DuckDB allows one read-write process per file; a connection is opened per operation, and a
lock conflict is retried with back-off until ``Repo.busy_timeout``, then RepositoryBusy.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import duckdb

from mvc.errors import InvalidQuery, RepositoryBusy
from store.errors import MvcError
from store.gc import roots
from store.materialize import load_manifest
from store.model import Commit
from store.walk import ancestors

if TYPE_CHECKING:
    from mvc.repo import Repo

SCHEMA_VERSION = "2"  # 2: the runs table
SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key VARCHAR PRIMARY KEY, value VARCHAR);
CREATE TABLE IF NOT EXISTS commits (
    id VARCHAR PRIMARY KEY, tree VARCHAR, author VARCHAR, time TIMESTAMP, message VARCHAR,
    kind VARCHAR, lineage JSON, metrics JSON);
CREATE TABLE IF NOT EXISTS parents (commit_id VARCHAR, parent_id VARCHAR, pos INTEGER);
CREATE TABLE IF NOT EXISTS refs (name VARCHAR PRIMARY KEY, commit_id VARCHAR);
CREATE TABLE IF NOT EXISTS files (
    commit_id VARCHAR, path VARCHAR, kind VARCHAR, object_id VARCHAR, file_hash VARCHAR,
    size BIGINT, mode VARCHAR, format VARCHAR);
CREATE TABLE IF NOT EXISTS tensors (
    commit_id VARCHAR, path VARCHAR, name VARCHAR, dtype VARCHAR, shape BIGINT[],
    tensor_id VARCHAR, size BIGINT, parts VARCHAR[]);
CREATE TABLE IF NOT EXISTS blobs (commit_id VARCHAR, blob_id VARCHAR, size BIGINT);
CREATE TABLE IF NOT EXISTS runs (
    name VARCHAR PRIMARY KEY, method VARCHAR, status VARCHAR, branch VARCHAR, base VARCHAR, head VARCHAR,
    step BIGINT, max_steps BIGINT, checkpoints BIGINT, started TIMESTAMP, updated TIMESTAMP, pid BIGINT,
    host VARCHAR, error VARCHAR, spec JSON, metrics JSON);
CREATE OR REPLACE VIEW commit_bytes AS
    SELECT b.commit_id, sum(b.size) AS total_bytes,
           sum(CASE WHEN s.n = 1 THEN b.size ELSE 0 END) AS unique_bytes
    FROM blobs b JOIN (SELECT blob_id, count(*) AS n FROM blobs GROUP BY blob_id) s USING (blob_id)
    GROUP BY b.commit_id;
CREATE OR REPLACE VIEW tensor_sharing AS
    SELECT tensor_id, any_value(name) AS name, any_value(size) AS size,
           count(DISTINCT commit_id) AS commits, list(DISTINCT commit_id ORDER BY commit_id) AS commit_ids
    FROM tensors GROUP BY tensor_id;
"""
PENDING = "pending:"  # meta key prefix marking a commit indexed before its ref moved (see add_commit)
TABLES = ("commits", "parents", "refs", "files", "tensors", "blobs", "runs")


class Index:
    """Short-lived connections to ``.mvc/index.duckdb``."""

    def __init__(self, repo: Repo) -> None:
        self.repo = repo
        self.path = repo.dir / "index.duckdb"

    @contextmanager
    def connect(self, *, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        """A connection, retried with back-off while another process holds the file."""
        deadline = time.monotonic() + self.repo.busy_timeout
        delay = 0.01
        while True:
            try:
                con = duckdb.connect(str(self.path), read_only=read_only)
                break
            except duckdb.IOException as e:
                if "lock" not in str(e).lower() and "conflicting" not in str(e).lower():
                    raise MvcError(f"cannot open the index {self.path}: {e}", hint="delete it and run `mvc reindex`") from None
                if time.monotonic() >= deadline:
                    raise RepositoryBusy(f"repository busy: the index is held by another process ({_holder(e)})") from None
                time.sleep(delay)
                delay = min(delay * 2, 0.25)
        try:
            if not read_only and not _schema_current(con):
                con.execute(SCHEMA)
                con.execute("INSERT OR REPLACE INTO meta VALUES ('schema', ?)", [SCHEMA_VERSION])
            yield con
        except (RuntimeError, duckdb.InterruptException) as e:
            # DuckDB turns Ctrl-C during a statement into RuntimeError("Query interrupted"):
            # give it back its meaning, so the CLI exits 130 like everywhere else
            if isinstance(e, duckdb.InterruptException) or "interrupted" in str(e).lower():
                raise KeyboardInterrupt from None
            raise
        finally:
            con.close()

    @contextmanager
    def reader(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A read-only connection to an index that is caught up with the refs.

        The common case (nothing moved) costs one read-only open; otherwise the index is
        caught up through a read-write connection first.
        """
        if self.path.exists():
            with self.connect(read_only=True) as con:
                if (_schema_current(con) and not _pending(con)
                        and dict(con.execute("SELECT name, commit_id FROM refs").fetchall()) == self._current_refs()):
                    yield con
                    return
        self.sync_refs()
        with self.connect(read_only=True) as con:
            yield con

    # -- writing -------------------------------------------------------------------------
    def add_commit(self, cid: str) -> None:
        """Index ``cid`` (its ancestors must be indexed or indexable).

        The commit is marked pending until a ref (or reflog entry) reaches it: if the process
        dies before its ref moves, the next open finds the mark and drops the rows, so the
        index never answers for a commit that ``reindex`` would not rebuild.
        """
        with self.connect() as con:
            con.execute("INSERT OR REPLACE INTO meta VALUES (?, '')", [PENDING + cid])
            self._index_missing(con, [cid])

    def forget_commit(self, cid: str) -> None:
        """Remove the rows of a commit that never got a ref (it lost a race or was aborted)."""
        try:
            with self.connect() as con:
                con.execute("BEGIN")
                # kept when a reflog entry names it (the ref move was cut short after logging): reindex keeps it too
                self._settle(con, [cid], [t for t in roots(self.repo.refs) if self.repo.objects.has(t)])
                con.execute("COMMIT")
        except MvcError:
            pass  # the pending mark stays, and the next open settles it

    def sync_refs(self) -> None:
        """Catch the index up with the refs on disk."""
        with self.connect() as con:
            self._sync(con)

    def reindex(self) -> int:
        """Rebuild every row from the store; return the number of commits indexed."""
        with self.connect() as con:
            con.execute("BEGIN")
            for table in TABLES:
                con.execute(f"DELETE FROM {table}")
            con.execute("COMMIT")
            self._sync(con, force=True)
            self._upsert_runs(con, _run_records(self.repo))
            return con.execute("SELECT count(*) FROM commits").fetchone()[0]

    # -- runs (mvc.runs): rows mirror the run records, rebuilt from them by reindex ----------
    def upsert_runs(self, records: list) -> None:
        """Insert or replace the rows of these ``mvc.runs.RunRecord`` s."""
        with self.connect() as con:
            self._upsert_runs(con, records)

    def runs(self) -> list[dict[str, Any]]:
        """Every run, caught up with the run records on disk first (a crashed writer leaves them ahead)."""
        records = _run_records(self.repo)
        want = {r.name: r.updated for r in records}
        with self.reader() as con:
            have = dict(con.execute("SELECT name, strftime(updated, '%Y-%m-%dT%H:%M:%S.%fZ') FROM runs").fetchall())
        if {k: _ts(v) for k, v in want.items()} != {k: _ts(v) for k, v in have.items()}:
            with self.connect() as con:
                con.execute("DELETE FROM runs")
                self._upsert_runs(con, records)
        cols, rows = self.query("SELECT * FROM runs ORDER BY started, name")
        out = []
        for row in rows:
            d = dict(zip(cols, row, strict=True))
            d["spec"] = json.loads(d["spec"] or "{}")
            d["metrics"] = json.loads(d["metrics"] or "{}")
            for k in ("started", "updated"):
                d[k] = d[k].strftime("%Y-%m-%dT%H:%M:%S.%fZ") if d[k] is not None else None
            out.append(d)
        # a record whose process died shows as failed (mvc.runs.effective), though its file says running
        by_name = {r.name: r for r in records}
        for d in out:
            r = by_name.get(d["name"])
            if r is not None and r.status != d["status"]:
                d["status"], d["error"] = r.status, r.error
        return out

    def _upsert_runs(self, con: duckdb.DuckDBPyConnection, records: list) -> None:
        if not records:
            return
        rows = [
            (r.name, r.method, r.status, r.branch, r.base, r.head, r.step, r.max_steps, r.checkpoints,
             _ts(r.started) if r.started else None, _ts(r.updated) if r.updated else None, r.pid, r.host, r.error,
             json.dumps(r.to_json()["spec"]), json.dumps(r.to_json()["metrics"]))
            for r in records
        ]
        con.execute("BEGIN")
        try:
            con.executemany(f"INSERT OR REPLACE INTO runs VALUES ({', '.join('?' * len(rows[0]))})", rows)
            con.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(duckdb.Error):  # an interrupted COMMIT leaves no transaction to roll back
                con.execute("ROLLBACK")
            raise

    def _current_refs(self) -> dict[str, str]:
        refs = dict(self.repo.refs.list())
        _branch, head = self.repo.refs.head()
        if head:
            refs["HEAD"] = head
        return refs

    def _sync(self, con: duckdb.DuckDBPyConnection, force: bool = False) -> None:
        disk = self._current_refs()
        indexed = dict(con.execute("SELECT name, commit_id FROM refs").fetchall())
        pending = _pending(con)
        if disk == indexed and not pending and not force:
            return
        tips = [t for t in roots(self.repo.refs) | set(disk.values()) if self.repo.objects.has(t)]
        self._index_missing(con, tips)
        con.execute("BEGIN")
        con.execute("DELETE FROM refs")
        if disk:
            con.executemany("INSERT INTO refs VALUES (?, ?)", list(disk.items()))
        if pending:
            self._settle(con, pending, tips)
        con.execute("COMMIT")

    def _settle(self, con: duckdb.DuckDBPyConnection, pending: list[str], tips: list[str]) -> None:
        """Unmark pending commits that a ref or reflog entry now reaches; drop the rows of the rest.

        A dropped commit whose writer is still running comes back when its ref moves (the
        writer catches the index up then), so this is safe while commits are in flight.
        """
        reached = {r[0] for r in con.execute(
            """
            WITH RECURSIVE r(id) AS (
                SELECT unnest(?::VARCHAR[]) UNION SELECT p.parent_id FROM parents p JOIN r ON p.commit_id = r.id)
            SELECT id FROM r
            """,
            [tips],
        ).fetchall()}
        for cid in pending:
            if cid not in reached:
                con.execute("DELETE FROM commits WHERE id = ?", [cid])
                for table in ("parents", "files", "tensors", "blobs"):
                    con.execute(f"DELETE FROM {table} WHERE commit_id = ?", [cid])
            con.execute("DELETE FROM meta WHERE key = ?", [PENDING + cid])

    def _index_missing(self, con: duckdb.DuckDBPyConnection, tips: list[str]) -> None:
        known = {r[0] for r in con.execute("SELECT id FROM commits").fetchall()}
        cache: dict[str, Commit] = {}
        todo = ancestors(self.repo.objects, tips, stop=known, cache=cache, missing_ok=True)
        if not todo:
            return
        rows: dict[str, list[tuple]] = {t: [] for t in ("commits", "parents", "files", "tensors", "blobs")}
        trees: dict[str, tuple[list, list, list]] = {}
        for cid in sorted(todo):
            c = cache[cid]
            rows["commits"].append((cid, c.tree, c.author, _ts(c.time), c.message, c.kind, json.dumps(c.lineage), json.dumps(c.metrics)))
            rows["parents"].extend((cid, p, i) for i, p in enumerate(c.parents))
            if c.tree not in trees:
                trees[c.tree] = self._tree_rows(c.tree)
            f_rows, t_rows, b_rows = trees[c.tree]
            rows["files"].extend((cid, *r) for r in f_rows)
            rows["tensors"].extend((cid, *r) for r in t_rows)
            rows["blobs"].extend((cid, *r) for r in b_rows)
        con.execute("BEGIN")
        try:
            for table, table_rows in rows.items():
                if table_rows:
                    insert_rows(con, table, table_rows)
            con.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(duckdb.Error):  # an interrupted COMMIT leaves no transaction to roll back
                con.execute("ROLLBACK")
            raise

    def _tree_rows(self, tree_id: str) -> tuple[list, list, list]:
        tree = self.repo.read_tree(tree_id)
        files, tensors, blobs = [], [], {tree_id: len(tree.encode())}
        for path, e in sorted(tree.entries.items()):
            manifest = load_manifest(self.repo.objects, e)
            fmt = manifest.format if manifest else "blob"
            files.append((path, e.kind, e.id, e.hash, e.size, e.mode, fmt))
            if manifest is None:
                blobs[e.id] = e.size
                continue
            blobs[e.id] = self.repo.objects.size(e.id)
            for part in manifest.parts():
                blobs[part.id] = part.size
            for t in manifest.tensors:
                tensors.append((path, t.name, t.dtype, list(t.shape), t.id, t.size, [p.id for p in t.parts]))
        return files, tensors, sorted(blobs.items())

    # -- reading -------------------------------------------------------------------------
    def query(self, sql: str, params: list[Any] | None = None) -> tuple[list[str], list[tuple]]:
        """Run ``sql`` read-only after catching up; return (column names, rows)."""
        with self.reader() as con:
            try:
                cur = con.execute(sql, params or [])
            except duckdb.InterruptException:
                raise KeyboardInterrupt from None
            except duckdb.Error as e:
                raise InvalidQuery(f"query failed: {str(e).splitlines()[0]}") from None
            if cur.description is None:
                return [], []
            return [d[0] for d in cur.description], cur.fetchall()

    def ancestry(self, tip: str, limit: int | None = None) -> list[dict[str, Any]]:
        """Commits reachable from ``tip`` with their parents, newest first, children before parents."""
        _cols, rows = self.query(
            """
            WITH RECURSIVE anc(id) AS (
                SELECT ?::VARCHAR UNION SELECT p.parent_id FROM parents p JOIN anc ON p.commit_id = anc.id)
            SELECT c.id, c.tree, c.author, strftime(c.time, '%Y-%m-%dT%H:%M:%S.%fZ'), c.message, c.kind,
                   c.lineage, c.metrics,
                   (SELECT list(parent_id ORDER BY pos) FROM parents WHERE commit_id = c.id)
            FROM commits c JOIN anc USING (id)
            """,
            [tip],
        )
        commits = {
            r[0]: {"id": r[0], "tree": r[1], "author": r[2], "time": r[3], "message": r[4], "kind": r[5],
                   "lineage": json.loads(r[6] or "{}"), "metrics": json.loads(r[7] or "{}"), "parents": list(r[8] or [])}
            for r in rows
        }
        return topo_order(commits, limit)


def insert_rows(con: duckdb.DuckDBPyConnection, table: str, rows: list[tuple], batch: int = 500) -> None:
    """Insert ``rows`` with multi-row VALUES statements: far fewer round trips than executemany."""
    if not rows:
        return
    one = "(" + ", ".join("?" * len(rows[0])) + ")"
    for i in range(0, len(rows), batch):
        chunk = rows[i : i + batch]
        con.execute(f"INSERT INTO {table} VALUES " + ", ".join([one] * len(chunk)), [v for row in chunk for v in row])


def topo_order(commits: dict[str, dict[str, Any]], limit: int | None = None) -> list[dict[str, Any]]:
    """Newest first, but never a parent before its child (git log's --topo-order)."""
    import heapq

    children: dict[str, int] = dict.fromkeys(commits, 0)
    for c in commits.values():
        for p in c["parents"]:
            if p in children:
                children[p] += 1
    heap = [(_neg(c["time"]), cid) for cid, c in commits.items() if children[cid] == 0]
    heapq.heapify(heap)
    out = []
    while heap and (limit is None or len(out) < limit):
        _t, cid = heapq.heappop(heap)
        c = commits[cid]
        out.append(c)
        for p in c["parents"]:
            if p in children:
                children[p] -= 1
                if children[p] == 0:
                    heapq.heappush(heap, (_neg(commits[p]["time"]), p))
    return out


def _neg(t: str) -> tuple:
    # newest first: invert the characters of the sortable ISO time
    return tuple(-ord(ch) for ch in t)


def _ts(text: str) -> str:
    return text.rstrip("Z").replace("T", " ")


def _run_records(repo: Repo) -> list:
    from mvc.runs import list_records

    return list_records(repo)


def _pending(con: duckdb.DuckDBPyConnection) -> list[str]:
    """Commits indexed by ``add_commit`` whose ref has not been seen to move yet."""
    try:
        rows = con.execute("SELECT key FROM meta WHERE starts_with(key, ?)", [PENDING]).fetchall()
    except duckdb.CatalogException:
        return []
    return [r[0][len(PENDING) :] for r in rows]


def _schema_current(con: duckdb.DuckDBPyConnection) -> bool:
    try:
        row = con.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
    except duckdb.CatalogException:
        return False
    return row is not None and row[0] == SCHEMA_VERSION


def _holder(e: Exception) -> str:
    msg = str(e)
    i = msg.find("PID")
    return msg[i:].split(")")[0] if i >= 0 else "another process"
