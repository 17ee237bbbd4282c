"""Training runs: their records and their status.

A run named NAME keeps its working state in ``.mvc/runs/NAME/`` and its commits on the branch
``runs/NAME``. ``run.json`` in that directory is the run's record (method, status, step,
latest commit, resolved spec, error); it is written atomically at every change of status and
mirrored into the index's ``runs`` table, which ``mvc runs`` reads and ``mvc reindex``
rebuilds from the records. A run whose record was lost (a clone, a deleted ``.mvc/runs``) is
still listed from its branch: its tip commit's kind says whether it completed.

Statuses: queued, running, checkpointing, completed, failed, cancelled. A record that says
running (or queued, checkpointing) but whose process is gone on this host is shown as failed.
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from store.model import sanitize_json
from store.paths import check_ref_name
from store.refs import pid_alive, utc_now

if TYPE_CHECKING:
    from mvc.repo import Repo

STATUSES = ("queued", "running", "checkpointing", "completed", "failed", "cancelled")
ACTIVE = ("queued", "running", "checkpointing")
RUN_BRANCH_PREFIX = "runs/"
RECORD = "run.json"


@dataclass
class RunRecord:
    """What is known about one training run."""

    name: str
    method: str = ""
    status: str = "queued"
    branch: str = ""
    base: str | None = None
    head: str | None = None  # the run's latest commit (checkpoint or final)
    step: int = 0
    max_steps: int | None = None
    checkpoints: int = 0
    started: str = ""
    updated: str = ""
    pid: int | None = None
    host: str = ""
    error: str | None = None
    spec: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return sanitize_json(asdict(self))

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunRecord:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def check_run_name(name: str) -> str:
    """``name`` if it can name a run (and so the branch ``runs/NAME``)."""
    check_ref_name(RUN_BRANCH_PREFIX + name)
    if "/" in name:
        from mvc.errors import InvalidArgument

        raise InvalidArgument(f"run name {name!r} may not contain '/'", hint="use letters, digits, '-', '_' and '.'")
    return name


def runs_dir(repo: Repo) -> Path:
    return repo.dir / "runs"


def run_dir(repo: Repo, name: str) -> Path:
    return runs_dir(repo) / check_run_name(name)


def read(repo: Repo, name: str) -> RunRecord | None:
    """The record of run ``name``, or None when it has none."""
    try:
        data = json.loads((run_dir(repo, name) / RECORD).read_text())
    except (FileNotFoundError, ValueError):
        return None
    return RunRecord.from_json(data)


def write(repo: Repo, record: RunRecord, *, index: bool = True) -> RunRecord:
    """Save ``record`` atomically (stamping ``updated``) and mirror it into the index."""
    record.updated = utc_now()
    if not record.started:
        record.started = record.updated
    d = run_dir(repo, record.name)
    d.mkdir(parents=True, exist_ok=True)
    tmp = d / (RECORD + ".tmp")
    tmp.write_text(json.dumps(record.to_json(), indent=2, sort_keys=True))
    os.replace(tmp, d / RECORD)
    if index:
        repo.index().upsert_runs([record])
    return record


def this_host() -> str:
    return socket.gethostname()


def effective(record: RunRecord) -> RunRecord:
    """``record`` with an active status turned into failed when its process is gone (same host only)."""
    if record.status in ACTIVE and record.pid and record.host == this_host() and not pid_alive(record.pid):
        record.status = "failed"
        record.error = record.error or f"the training process {record.pid} ended without recording a result"
    return record


def from_branch(repo: Repo, name: str, tip: str) -> RunRecord:
    """What a run's branch alone says about it (used when its record is missing)."""
    commit = repo.read_commit(tip)
    lineage = commit.lineage or {}
    spec = lineage.get("spec") or {}
    status = "completed" if commit.kind == "train" else ("cancelled" if commit.kind == "checkpoint" else "unknown")
    return RunRecord(
        name=name, method=str(spec.get("method", "")), status=status, branch=RUN_BRANCH_PREFIX + name,
        base=lineage.get("base"), head=tip, step=int(commit.metrics.get("step", 0) or 0) if isinstance(commit.metrics, dict) else 0,
        max_steps=(spec.get("train") or {}).get("max_steps"), started=commit.time, updated=commit.time, spec=spec,
        metrics=dict(commit.metrics or {}),
    )


def list_records(repo: Repo) -> list[RunRecord]:
    """Every run: those with a record, and run branches without one; sorted by start time."""
    out: dict[str, RunRecord] = {}
    base = runs_dir(repo)
    if base.is_dir():
        for entry in sorted(os.scandir(base), key=lambda e: e.name):
            if entry.is_dir():
                rec = read(repo, entry.name)
                if rec is not None:
                    out[rec.name] = effective(rec)
    prefix = f"refs/heads/{RUN_BRANCH_PREFIX}"
    for ref, tip in repo.refs.list(prefix).items():
        name = ref[len(prefix) :]
        if name not in out and "/" not in name:
            try:
                out[name] = from_branch(repo, name, tip)
            except Exception:  # a damaged commit must not hide the other runs; fsck reports it
                continue
    return sorted(out.values(), key=lambda r: (r.started, r.name))
