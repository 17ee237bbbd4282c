"""``mvc merge``: merge another commit (or a LoRA adapter) into the current branch, in weight space."""

from __future__ import annotations

from typing import Annotated

import typer

from mvc.cli import app
from mvc.cli._output import author_from_env, emit_json, info, open_repo, out, progress_bar
from mvc.errors import InvalidArgument
from mvc.merge import merge, merge_adapter
from mvc.merge_strategies import DEFAULT_STRATEGY, STRATEGIES, Recipe


@app.command("merge")
def merge_cmd(
    ref: Annotated[str, typer.Argument(help="Branch, tag, pin or commit to merge into the current branch (with --adapter: the adapter commit).")],
    strategy: Annotated[str, typer.Option("-s", "--strategy", help=f"How tensors are merged: {', '.join(STRATEGIES)}.")] = DEFAULT_STRATEGY,
    weight: Annotated[list[float] | None, typer.Option(
        "-w", "--weight",
        help="Once: REF's share w (HEAD gets 1-w; slerp's t). Twice: HEAD's then REF's weight. "
             "Defaults: 0.5/0.5 for linear and slerp, 1/1 for the task-vector strategies.",
    )] = None,
    density: Annotated[float | None, typer.Option("--density", help="Fraction of each task vector kept by ties, dare-ties and dare-linear (default 0.2).")] = None,
    lam: Annotated[float | None, typer.Option("--lambda", help="Scale of the merged task vector for task-arithmetic, ties and dare-* (default 1).")] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="Seed of DARE's random drops (default: drawn and recorded in the lineage).")] = None,
    message: Annotated[str | None, typer.Option("-m", "--message", help="Message of the merge commit.")] = None,
    adapter: Annotated[bool, typer.Option("--adapter", help="REF is a LoRA adapter (peft save_pretrained): fold it into HEAD's weights.")] = False,
    force: Annotated[bool, typer.Option("-f", "--force", help="Merge even if the worktree has uncommitted changes, discarding them.")] = False,
    no_verify: Annotated[bool, typer.Option("--no-verify", help="Skip the pre-commit and post-commit hooks.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Merge REF into the current branch: fast-forward, or a merge commit whose tensors are merged by a strategy."""
    repo = open_repo()
    with progress_bar("merging") as (advance, _set_total):
        if adapter:
            if strategy != DEFAULT_STRATEGY or weight or density is not None or lam is not None or seed is not None:
                raise InvalidArgument("--adapter takes no --strategy, --weight, --density, --lambda or --seed")
            result = merge_adapter(repo, ref, message=message, force=force, run_hooks=not no_verify, author=author_from_env(repo), progress=advance)
        else:
            recipe = Recipe(strategy, tuple(weight or ()), density, lam, seed)
            result = merge(repo, ref, recipe, message=message, force=force, run_hooks=not no_verify, author=author_from_env(repo), progress=advance)
    for warning in repo.warnings:
        info(f"warning: {warning}")
    if as_json:
        emit_json(result.to_json())
        return
    if result.outcome == "up-to-date":
        out("Already up to date.")
        return
    where = result.branch or "detached HEAD"
    if result.outcome == "fast-forward":
        out(f"Fast-forward {where}: {result.previous[:12] if result.previous else '(none)'} -> {result.commit[:12]}")
    else:
        recipe = result.lineage["merge"]
        what = f"adapter {ref}" if recipe["strategy"] == "lora" else f"{ref} ({recipe['strategy']})"
        out(f"[{where} {result.commit[:12]}] merged {what}")
        base = recipe.get("merge_base")
        out(f" {result.tensors_changed} tensor(s) changed, {result.tensors_kept} kept as in HEAD" + (f"; merge-base {base[:12]}" if base else ""))
        if recipe.get("seed") is not None:
            out(f" seed {recipe['seed']}")
        for f in result.kept_ours:
            out(f" kept ours: {f['path']} ({f['reason']})")
    if result.worktree is None:
        info("no worktree recorded; use `mvc checkout REF -o DIR` to write the model somewhere")
