"""``mvc diff``: what changed between two commits (or a commit and a model directory)."""

from __future__ import annotations

from collections import defaultdict
from typing import Annotated

import typer

from mvc.cli import app
from mvc.cli._output import emit_json, open_repo, out
from mvc.diff import diff, layer_of
from store.ids import is_object_id


def _short(side: str) -> str:
    return side[:12] if is_object_id(side) else side


def _v(x: object) -> str:
    text = repr(x) if isinstance(x, str) else str(x)
    return text if len(text) <= 60 else text[:57] + "..."


@app.command("diff")
def diff_cmd(
    a: Annotated[str, typer.Argument(help="The old side: a commit (branch, tag, id, HEAD~N).")],
    b: Annotated[str | None, typer.Argument(help="The new side: a commit or a model directory (default: HEAD).")] = None,
    stat: Annotated[bool, typer.Option("--stat", help="Only a summary: changed tensors per layer group.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the full report as JSON.")] = False,
) -> None:
    """Compare models per file, config key, tokenizer token and tensor (with change statistics)."""
    repo = open_repo()
    r = diff(repo, a, b, stats=not stat)
    if as_json:
        emit_json(r.to_json())
        return
    out(f"diff {_short(r.a)} -> {_short(r.b)}")
    if not r.files:
        out("no differences")
        return
    out("Files:")
    for f in r.files:
        out(f"  {f['change']:<9} {f['path']}")
    for path, changes in r.config.items():
        if changes:
            out(f"Config ({path}):")
            for c in changes:
                sign = {"added": "+", "removed": "-", "changed": "~"}[c.change]
                out(f"  {sign} {c.key}: " + (_v(c.new) if c.change == "added" else _v(c.old) if c.change == "removed" else f"{_v(c.old)} -> {_v(c.new)}"))
    t = r.tokenizer
    if t and t.get("changed"):
        out("Tokenizer:")
        out(f"  vocab size {t['vocab_size'][0]} -> {t['vocab_size'][1]}")
        if t["added_tokens"]:
            out(f"  added tokens ({len(t['added_tokens'])}): " + ", ".join(map(repr, t["added_tokens"][:20])) + (" ..." if len(t["added_tokens"]) > 20 else ""))
        if t["removed_tokens"]:
            out(f"  removed tokens ({len(t['removed_tokens'])}): " + ", ".join(map(repr, t["removed_tokens"][:20])) + (" ..." if len(t["removed_tokens"]) > 20 else ""))
        for c in t["special_tokens"]:
            out(f"  special token {c['key']}: {_v(c['old'])} -> {_v(c['new'])}")
        if t["merges_changed"]:
            out(f"  merges changed ({t['merges_count'][0]} -> {t['merges_count'][1]})")
        if t["chat_template_changed"]:
            out("  chat template changed")
    if r.tensors:
        out(f"Tensors: {len(r.tensors)} changed of {r.tensors_total}")
        groups: dict[str, list] = defaultdict(list)
        for td in r.tensors:
            groups[layer_of(td.name)].append(td)
        for group, items in groups.items():
            if stat:
                kinds = ", ".join(f"{sum(1 for x in items if x.change == k)} {k}" for k in sorted({x.change for x in items}))
                out(f"  {group:<40} {kinds}")
                continue
            out(f"  {group}")
            for td in items:
                short = td.name[len(group) + 1 :] if td.name.startswith(group + ".") else td.name
                if td.change == "modified" and td.rel_change is not None:
                    out(f"    {short:<36} rel {td.rel_change:.3e}  max|d| {td.max_abs:.3e}  cos {td.cosine:.6f}  changed {100 * td.frac_changed:.1f}%")
                else:
                    extra = f" ({td.detail})" if td.detail else ""
                    out(f"    {short:<36} {td.change}{extra}")
    for title, changes in (("Metrics", r.metrics), ("Lineage", r.lineage)):
        if changes:
            out(f"{title}:")
            for c in changes:
                out(f"  {c.key}: {_v(c.old)} -> {_v(c.new)}")
