"""Reading history for people: ref decorations, the ASCII commit graph, commit summaries."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from store.materialize import load_manifest
from store.safetensors import DTYPE_BITS

if TYPE_CHECKING:
    from mvc.repo import Repo


def decorations(repo: Repo) -> dict[str, list[str]]:
    """``commit id -> ["HEAD -> main", "tag: v1", "pin: prod", ...]``."""
    out: dict[str, list[str]] = {}
    branch, head = repo.head()
    if head and branch is None:
        out.setdefault(head, []).append("HEAD")
    for full, oid in repo.refs.list().items():
        _refs, ns, name = full.split("/", 2)
        label = {"heads": name, "tags": f"tag: {name}", "pins": f"pin: {name}", "remotes": name}[ns]
        if ns == "heads" and name == branch:
            label = f"HEAD -> {name}"
            out.setdefault(oid, []).insert(0, label)
            continue
        out.setdefault(oid, []).append(label)
    return out


def graph_lines(commits: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any] | None]]:
    """Yield ``(graph prefix, commit)`` lines, plus ``(connector, None)`` lines between them.

    Commits must be in topological order (children first). Each lane holds the id of the
    commit it waits for; a merge opens a lane per extra parent (``|\\``), and lanes waiting for
    the same commit join just before it is drawn (``|/``).
    """
    lanes: list[str] = []
    for c in commits:
        cid = c["id"]
        if cid not in lanes:
            lanes.append(cid)
        col = lanes.index(cid)
        joining = [i for i, lane in enumerate(lanes) if lane == cid and i != col]
        if joining:
            row = [" "] * (2 * len(lanes) - 1)
            for i in range(len(lanes)):
                if i < joining[0]:
                    row[2 * i] = "|"
                else:
                    row[2 * i - 1] = "/"
            yield "".join(row).rstrip(), None
            for i in reversed(joining):
                del lanes[i]
        yield " ".join("*" if i == col else "|" for i in range(len(lanes))), c
        parents = c["parents"]
        if not parents:
            del lanes[col]
            continue
        lanes[col] = parents[0]
        extra = [p for p in parents[1:] if p not in lanes]
        for k, p in enumerate(extra):
            lanes.insert(col + 1 + k, p)
        if extra:
            row = [" "] * (2 * len(lanes) - 1)
            for i in range(len(lanes)):
                if i <= col:
                    row[2 * i] = "|"
                else:
                    row[2 * i - 1] = "\\"
            yield "".join(row).rstrip(), None


def describe_commit(repo: Repo, cid: str) -> dict[str, Any]:
    """Everything ``mvc show`` prints, as plain data."""
    c = repo.read_commit(cid)
    tree = repo.read_tree(c.tree)
    files = []
    count = params = nbytes = 0
    by_dtype: dict[str, int] = {}
    for path, e in sorted(tree.entries.items()):
        f: dict[str, Any] = {"path": path, "size": e.size, "mode": e.mode, "hash": e.hash, "kind": e.kind}
        manifest = load_manifest(repo.objects, e)
        if manifest is not None and manifest.format == "safetensors":
            f["tensors"] = len(manifest.tensors)
            for t in manifest.tensors:
                numel = 1
                for d in t.shape:
                    numel *= d
                count += 1
                params += numel
                nbytes += t.size
                by_dtype[t.dtype] = by_dtype.get(t.dtype, 0) + numel
        files.append(f)
    return {
        "id": cid, "tree": c.tree, "parents": list(c.parents), "author": c.author, "time": c.time, "message": c.message,
        "kind": c.kind, "lineage": c.lineage, "metrics": c.metrics, "files": files,
        "total_bytes": sum(e.size for e in tree.entries.values()),
        "tensors": {"count": count, "parameters": params, "bytes": nbytes, "parameters_by_dtype": by_dtype,
                    "known_dtypes": sorted(set(by_dtype) & set(DTYPE_BITS))},
    }
