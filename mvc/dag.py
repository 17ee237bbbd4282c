"""The commit DAG: ancestry and merge-bases, computed with networkx.

Edges run from parent to child, so ``networkx.ancestors`` are a commit's history. The graph
is built from the store (the truth), reading only the commits reachable from the tips asked
about. networkx is imported inside the functions: the CLI must not pay for it on every call.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from store.objects import ObjectStore
from store.walk import load_commit

if TYPE_CHECKING:
    import networkx as nx


class CommitGraph:
    """The ancestry of a set of commits: nodes are commit ids, edges go parent -> child."""

    def __init__(self, graph: nx.DiGraph) -> None:
        self.graph = graph

    @classmethod
    def from_store(cls, store: ObjectStore, tips: Iterable[str]) -> CommitGraph:
        """Every commit reachable from ``tips``, each node carrying its commit ``time``."""
        import networkx as nx

        g = nx.DiGraph()
        stack = list(tips)
        while stack:
            cid = stack.pop()
            if cid in g and "time" in g.nodes[cid]:
                continue
            commit = load_commit(store, cid)
            g.add_node(cid, time=commit.time)
            for parent in commit.parents:
                g.add_edge(parent, cid)
                if "time" not in g.nodes[parent]:
                    stack.append(parent)
        return cls(g)

    def ancestors(self, cid: str) -> set[str]:
        """The commits ``cid`` descends from (``cid`` itself excluded)."""
        import networkx as nx

        return nx.ancestors(self.graph, cid)

    def is_ancestor(self, a: str, b: str) -> bool:
        """True when ``a`` is ``b`` or in ``b``'s history."""
        import networkx as nx

        return a == b or nx.has_path(self.graph, a, b)

    def merge_bases(self, a: str, b: str) -> list[str]:
        """The lowest common ancestors of ``a`` and ``b``: newest first (then by id), empty when unrelated.

        A common ancestor is lowest when none of its children is also a common ancestor. Criss-cross
        histories have more than one; callers pick the first and may record the rest.
        """
        common = (self.ancestors(a) | {a}) & (self.ancestors(b) | {b})
        # ``common`` is closed under taking parents, so "no child in common" means "no descendant in common"
        lowest = [c for c in common if not any(child in common for child in self.graph.successors(c))]
        times = self.graph.nodes
        return sorted(lowest, key=lambda c: (times[c].get("time", ""), c), reverse=True)


def merge_bases(store: ObjectStore, a: str, b: str) -> list[str]:
    """The lowest common ancestor(s) of commits ``a`` and ``b`` (see ``CommitGraph.merge_bases``)."""
    return CommitGraph.from_store(store, [a, b]).merge_bases(a, b)


def merge_base(store: ObjectStore, a: str, b: str) -> str | None:
    """The newest lowest common ancestor of ``a`` and ``b``, or None for unrelated histories."""
    bases = merge_bases(store, a, b)
    return bases[0] if bases else None


def is_ancestor(store: ObjectStore, a: str, b: str) -> bool:
    """True when commit ``a`` is ``b`` or one of ``b``'s ancestors."""
    if a == b:
        return True
    return CommitGraph.from_store(store, [b]).graph.has_node(a)
