"""``mvc train``: run a training spec; every checkpoint becomes a commit on ``runs/NAME``.

A thin shell over ``trainers.run`` (imported inside the command, so ``mvc --help`` stays light).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from mvc.cli import app
from mvc.cli._output import author_from_env, emit_json, info, open_repo, out, state
from mvc.errors import InvalidArgument, InvalidSpec


def _flags(**values) -> dict:
    """Flag values as a nested spec mapping (unset flags are left out)."""
    spec: dict = {}

    def put(path: str, value) -> None:
        if value is None:
            return
        node = spec
        *parents, last = path.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value

    for path, value in values.items():
        put(path, value)
    return spec


def _data_path(text: str | None, spec_file: str | None) -> str | None:
    """``text`` as given when it exists from here, else relative to the spec file's directory."""
    if text is None:
        return None
    p = Path(text)
    if p.exists() or p.is_absolute() or spec_file is None:
        return text
    beside = Path(spec_file).parent / p
    return str(beside) if beside.exists() else text


@app.command("train")
def train_cmd(
    spec_file: Annotated[str | None, typer.Argument(help="Run spec (YAML). Flags and --set override its values.")] = None,
    method: Annotated[str | None, typer.Option("--method", help="pretrain, continue, sft, dpo, lora, qlora, distill or reward.")] = None,
    base: Annotated[str | None, typer.Option("--base", help="Ref of the model to start from.")] = None,
    data: Annotated[str | None, typer.Option("--data", help="Training data file (.txt, .jsonl, .json).")] = None,
    eval_data: Annotated[str | None, typer.Option("--eval-data", help="Evaluation data file.")] = None,
    model_config: Annotated[str | None, typer.Option("--model-config", help="pretrain: a preset (tiny, small, medium) or a config.json.")] = None,
    teacher: Annotated[str | None, typer.Option("--teacher", help="distill: ref of the teacher model.")] = None,
    max_steps: Annotated[int | None, typer.Option("--max-steps", help="Optimizer steps to train.")] = None,
    save_steps: Annotated[int | None, typer.Option("--save-steps", help="Commit a checkpoint every N steps.")] = None,
    eval_steps: Annotated[int | None, typer.Option("--eval-steps", help="Evaluate every N steps.")] = None,
    batch_size: Annotated[str | None, typer.Option("--batch-size", help="Per-device batch size, or auto.")] = None,
    lr: Annotated[float | None, typer.Option("--lr", help="Peak learning rate.")] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="Random seed.")] = None,
    precision: Annotated[str | None, typer.Option("--precision", help="auto, fp32, fp16 or bf16.")] = None,
    name: Annotated[str | None, typer.Option("--name", help="Run name; the run branch is runs/NAME.")] = None,
    into: Annotated[str | None, typer.Option("--into", help="Also move this branch to the final commit.")] = None,
    hooks_file: Annotated[str | None, typer.Option("--hooks-file", help="Python file with run callbacks and an optional compute_loss.")] = None,
    launcher: Annotated[str | None, typer.Option("--launcher", help="none, or accelerate for several processes (DDP/FSDP).")] = None,
    num_processes: Annotated[int | None, typer.Option("--num-processes", help="Processes to launch with --launcher accelerate.")] = None,
    accelerate_config: Annotated[str | None, typer.Option("--accelerate-config", help="An accelerate config file (FSDP, DeepSpeed).")] = None,
    sets: Annotated[list[str] | None, typer.Option("--set", help="Override any spec key: --set train.learning_rate=1e-4 (repeatable).")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the resolved spec and exit.")] = False,
    from_commit: Annotated[str | None, typer.Option("--from", help="Replay the spec (and data) recorded on this commit.")] = None,
    resume: Annotated[str | None, typer.Option("--resume", help="Continue run NAME from its last checkpoint commit.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result (or the resolved spec) as JSON.")] = False,
) -> None:
    """Train a model; every checkpoint becomes a commit on the branch runs/NAME."""
    from trainers import run as runner
    from trainers.spec import load_spec

    batch: int | str | None = batch_size
    if batch_size is not None and batch_size != "auto":
        try:
            batch = int(batch_size)
        except ValueError:
            raise InvalidSpec(f"bad value for 'train.batch_size': {batch_size!r} is neither an integer nor auto") from None
    flags = _flags(**{
        "method": method, "base": base, "data.train": _data_path(data, spec_file), "data.eval": _data_path(eval_data, spec_file),
        "model_config": model_config, "teacher": teacher, "train.max_steps": max_steps, "checkpoint.save_steps": save_steps,
        "train.eval_steps": eval_steps, "train.batch_size": batch, "train.learning_rate": lr, "train.seed": seed,
        "train.precision": precision, "name": name, "into": into, "hooks_file": hooks_file, "launch.launcher": launcher,
        "launch.num_processes": num_processes, "launch.config_file": accelerate_config,
    })
    quiet = state["quiet"]
    notify = None if quiet else info
    stream = None if quiet else sys.stderr

    if resume is not None:
        if spec_file or from_commit or any(k for k in flags if k != "train"):
            raise InvalidArgument("--resume takes only --max-steps and --set (the run keeps its recorded spec)")
        extra = list(sets or [])
        if max_steps is not None:
            extra.append(f"train.max_steps={max_steps}")
        repo = open_repo()
        result = runner.resume(repo, resume, sets=extra, stream=stream, author=author_from_env(repo), notify=notify)
        _report(result, as_json)
        return

    recorded: dict | None = None
    dataset_commits: dict[str, str] | None = None
    repo = None
    if from_commit is not None:
        repo = open_repo()
        recorded, dataset_commits = runner.replay_source(repo, from_commit)
        recorded.pop("name", None)
        if "data" in flags:  # new data files replace the recorded ones
            for role in ("train", "eval"):
                if role in flags["data"]:
                    dataset_commits.pop(role, None)
    spec = load_spec(spec_file, flags, sets, base_data=recorded)
    if spec_file and spec.data.train:
        spec.data.train = _data_path(spec.data.train, spec_file)
    if spec_file and spec.data.eval:
        spec.data.eval = _data_path(spec.data.eval, spec_file)
    if spec.hooks_file and spec_file:
        spec.hooks_file = _data_path(spec.hooks_file, spec_file)
    if dry_run:
        resolved = runner.dry_run(spec)
        if as_json:
            emit_json(resolved)
        else:
            import yaml

            out(yaml.safe_dump(resolved, sort_keys=False).rstrip())
        return
    repo = repo or open_repo()
    if from_commit is not None and spec.name is None:
        spec.name = _replay_name(repo, recorded or {}, from_commit)
    result = runner.train(repo, spec, stream=stream, author=author_from_env(repo), dataset_commits=dataset_commits, notify=notify)
    _report(result, as_json)


def _replay_name(repo, recorded: dict, rev: str) -> str:
    from mvc import runs

    stem = f"replay-{repo.resolve(rev)[:8]}"
    name, n = stem, 1
    while runs.read(repo, name) is not None or repo.refs.read(f"refs/heads/runs/{name}") is not None:
        n += 1
        name = f"{stem}-{n}"
    return name


def _report(result, as_json: bool) -> None:
    from mvc.errors import TrainingCancelled

    if as_json:
        emit_json(result.to_json())
    if result.status == "cancelled":
        last = result.commits[-1][:12] if result.commits else None
        raise TrainingCancelled(
            f"run {result.name} cancelled at step {result.step}; " + (f"its last checkpoint {last} is kept on {result.branch}" if last else "no checkpoint was saved"),
            hint=f"continue with `mvc train --resume {result.name}`",
        )
    if as_json:
        return
    m = result.metrics
    loss = f", loss {m['loss']:.4g}" if isinstance(m.get("loss"), (int, float)) else ""
    tps = f", {m['tokens_per_s']:.0f} tokens/s" if isinstance(m.get("tokens_per_s"), (int, float)) else ""
    out(f"run {result.name} completed at step {result.step}{loss}{tps}")
    out(f"  {len(result.commits)} commit(s) on {result.branch}; final model {result.final[:12] if result.final else '-'}"
        + (f"; {result.into} moved to it" if result.into else ""))
