"""Running a training run: prepare it, train, and turn every checkpoint into a commit.

``train(repo, spec)`` is the Python API behind ``mvc train``:

1. prepare (one process): resolve the base and teacher refs to commits and materialise them
   into ``.mvc/runs/NAME/``; store the data files in the store (``mvc.datasets``) and export
   them back from it, so the run reads exactly what its lineage names; build the lineage
   (base, teacher, datasets, resolved spec, seed, code version, environment); record the run
   (status queued) in ``run.json`` and the index.
2. execute (every process of the run; only global rank 0 writes to the repository): build the
   method's Trainer, attach the callbacks (telemetry, progress line, ``MvcCallback``, the
   hooks file, Ctrl-C), train. Each checkpoint is committed on ``runs/NAME`` as it is saved.
3. finish: commit the final model (kind ``train``) with the final metrics, move ``--into``,
   mark the run completed. Ctrl-C (SIGINT) or SIGTERM stops at the end of the current step and
   marks the run cancelled: its checkpoints stay. An error marks it failed.

Resume state: checkpoint commits hold the model only; optimizer, scheduler and RNG state stay in
``.mvc/runs/NAME/state/checkpoint-N`` for the newest ``checkpoint.keep_optimizer``
checkpoints. ``resume(repo, NAME)`` materialises the run's last checkpoint commit, adds that
state when it was kept (else continues with a fresh optimizer and says so) and trains on.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO

from mvc import runs as runsmod
from mvc.checkout import export
from mvc.datasets import export_dataset, store_dataset
from mvc.errors import (
    AlreadyExists,
    InvalidArgument,
    InvalidSpec,
    MvcError,
    RunNotFound,
    TrainingCancelled,
    TrainingFailed,
)
from mvc.repo import Repo
from trainers.environment import code_version, detect_runtime, environment, require, require_qlora
from trainers.spec import RunSpec, validate

PREPARED = "prepared.json"
SCRATCH = ("base", "teacher", "data", "checkpoints", "final", "resume")


@dataclass
class RunResult:
    """What a run did."""

    name: str
    status: str
    branch: str
    commits: list[str] = field(default_factory=list)
    final: str | None = None
    step: int = 0
    metrics: dict[str, Any] = field(default_factory=dict)
    into: str | None = None
    error: str | None = None
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Prepared:
    """Everything a training process needs; written to ``prepared.json`` for launched workers."""

    repo_root: str
    name: str
    spec: dict[str, Any]
    run_dir: str
    base: str | None = None
    teacher: str | None = None
    base_dir: str | None = None
    teacher_dir: str | None = None
    train_data: str = ""
    eval_data: str | None = None
    lineage: dict[str, Any] = field(default_factory=dict)
    resume_from: str | None = None
    author: str | None = None
    world_size: int = 1

    def save(self) -> Path:
        path = Path(self.run_dir) / PREPARED
        path.write_text(json.dumps(asdict(self), indent=2, sort_keys=True))
        return path

    @classmethod
    def load(cls, path: Path | str) -> Prepared:
        return cls(**json.loads(Path(path).read_text()))


# -- public API ----------------------------------------------------------------------------------
def train(
    repo: Repo,
    spec: RunSpec,
    *,
    stream: TextIO | None = None,
    author: str | None = None,
    code_dir: Path | str | None = None,
    dataset_commits: dict[str, str] | None = None,
    notify: Callable[[str], None] | None = None,
) -> RunResult:
    """Run ``spec`` to completion (or cancellation) and return what it committed.

    ``dataset_commits`` ({"train": id, "eval": id}) takes the data from the store instead of
    the files the spec names (replaying a recorded run). ``stream`` receives the progress line;
    ``notify`` one-line messages (precision fallbacks, checkpoints).
    """
    spec = spec.resolved()
    name = runsmod.check_run_name(spec.name or _default_name(spec))
    spec.name = name
    record = runsmod.read(repo, name)
    if record is not None or repo.refs.read(f"refs/heads/runs/{name}") is not None:
        raise AlreadyExists(f"a run named {name!r} already exists", hint=f"pick another --name, or continue it with `mvc train --resume {name}`")
    prepared = prepare(repo, spec, author=author, code_dir=code_dir, dataset_commits=dataset_commits, notify=notify)
    return _run(repo, prepared, stream=stream, notify=notify)


def resume(
    repo: Repo,
    name: str,
    *,
    sets: list[str] | None = None,
    stream: TextIO | None = None,
    author: str | None = None,
    code_dir: Path | str | None = None,
    notify: Callable[[str], None] | None = None,
) -> RunResult:
    """Continue run ``name`` from its last checkpoint commit (``sets`` may change e.g. train.max_steps)."""
    from trainers.spec import apply_set

    record = runsmod.read(repo, name)
    branch_tip = repo.refs.read(f"refs/heads/runs/{name}")
    if record is None and branch_tip is None:
        raise RunNotFound(f"no run named {name!r}")
    record = record or runsmod.from_branch(repo, name, branch_tip)  # type: ignore[arg-type]
    record = runsmod.effective(record)
    if record.status in runsmod.ACTIVE:
        raise AlreadyExists(f"run {name!r} is still {record.status} (process {record.pid})", hint="wait for it, or stop it with Ctrl-C first")
    data = json.loads(json.dumps(record.spec))
    for s in sets or []:
        apply_set(data, s)
    spec = validate(data, source=f"spec of run {name}")
    tip_commit = repo.read_commit(branch_tip) if branch_tip else None
    if tip_commit is not None and tip_commit.kind == "train":
        raise InvalidArgument(
            f"run {name!r} already completed (final commit {branch_tip[:12]})",  # type: ignore[index]
            hint=f"train further from it as a new run: mvc train --method continue --base runs/{name} ...",
        )
    dataset_commits = {d["role"]: d["commit"] for d in (tip_commit.lineage.get("datasets", []) if tip_commit else []) if "commit" in d}
    if not dataset_commits:
        prev = _read_prepared(repo, name)
        if prev is not None:
            dataset_commits = {d["role"]: d["commit"] for d in prev.lineage.get("datasets", []) if "commit" in d}
    prepared = prepare(repo, spec, author=author, code_dir=code_dir, dataset_commits=dataset_commits or None, notify=notify, resuming=True)
    if tip_commit is not None and tip_commit.kind == "checkpoint":
        prepared.resume_from = str(_materialise_checkpoint(repo, prepared, branch_tip, tip_commit, notify))  # type: ignore[arg-type]
    elif notify:
        notify(f"run {name} has no checkpoint commit yet: starting it again from step 0")
    prepared.save()
    return _run(repo, prepared, stream=stream, notify=notify)


def replay_source(repo: Repo, rev: str) -> tuple[dict[str, Any], dict[str, str]]:
    """The spec recorded on commit ``rev`` and its datasets' commits (for ``mvc train --from``)."""
    cid = repo.resolve(rev)
    commit = repo.read_commit(cid)
    spec = (commit.lineage or {}).get("spec")
    if not isinstance(spec, dict):
        raise InvalidArgument(f"commit {cid[:12]} records no run spec (lineage.spec)", hint="--from takes a commit made by `mvc train`")
    datasets = {d["role"]: d["commit"] for d in commit.lineage.get("datasets", []) if isinstance(d, dict) and "commit" in d}
    return json.loads(json.dumps(spec)), datasets


# -- prepare -------------------------------------------------------------------------------------
def prepare(
    repo: Repo,
    spec: RunSpec,
    *,
    author: str | None = None,
    code_dir: Path | str | None = None,
    dataset_commits: dict[str, str] | None = None,
    notify: Callable[[str], None] | None = None,
    resuming: bool = False,
) -> Prepared:
    """Resolve refs, materialise models and data, build the lineage and record the run (queued)."""
    spec = spec.resolved()
    assert spec.name
    name = spec.name
    _check_libraries(spec)
    for role, src in (("train", spec.data.train), ("eval", spec.data.eval)):
        if src and role not in (dataset_commits or {}) and not Path(src).is_file():
            raise InvalidSpec(f"data.{role}: {src} is not a file", hint="paths are relative to the current directory (or to the spec file)")
    if spec.hooks_file and not Path(spec.hooks_file).is_file():
        raise InvalidSpec(f"hooks_file: {spec.hooks_file} is not a file")
    runtime = detect_runtime(spec.train.precision)
    if spec.method == "qlora":
        require_qlora(runtime)
    if runtime.note and notify:
        notify(f"warning: {runtime.note}")
    rdir = runsmod.run_dir(repo, name)
    rdir.mkdir(parents=True, exist_ok=True)
    for sub in SCRATCH:
        shutil.rmtree(rdir / sub, ignore_errors=True)
    base_id = repo.resolve(spec.base) if spec.base else None
    teacher_id = repo.resolve(spec.teacher) if spec.teacher else None
    resolved = spec.model_copy(deep=True)
    resolved.base, resolved.teacher = base_id, teacher_id
    record = runsmod.read(repo, name) if resuming else None
    if record is None:
        record = runsmod.RunRecord(name=name)
    record.method, record.status, record.branch = spec.method, "queued", f"runs/{name}"
    record.base, record.pid, record.host, record.error = base_id, os.getpid(), runsmod.this_host(), None
    record.max_steps = spec.train.max_steps if spec.train.max_steps > 0 else None
    record.spec = resolved.resolved_dict()
    runsmod.write(repo, record)
    try:
        base_dir = teacher_dir = None
        if base_id:
            base_dir = rdir / "base"
            export(repo, base_id, base_dir)
        if teacher_id:
            teacher_dir = rdir / "teacher"
            export(repo, teacher_id, teacher_dir)
        datasets, paths = _store_data(repo, spec, rdir, dataset_commits or {}, author)
        code = code_version(code_dir or Path.cwd())
        lineage: dict[str, Any] = {
            "run": name,
            "method": spec.method,
            "base": base_id,
            "teacher": teacher_id,
            "datasets": datasets,
            "spec": record.spec,
            "seed": spec.train.seed,
            "environment": environment(runtime, world_size=spec.launch.num_processes),
        }
        if code is not None:
            lineage["code"] = code
        prepared = Prepared(
            repo_root=str(repo.root), name=name, spec=record.spec, run_dir=str(rdir), base=base_id, teacher=teacher_id,
            base_dir=str(base_dir) if base_dir else None, teacher_dir=str(teacher_dir) if teacher_dir else None,
            train_data=str(paths["train"]), eval_data=str(paths["eval"]) if paths.get("eval") else None,
            lineage={k: v for k, v in lineage.items() if v is not None}, author=author, world_size=spec.launch.num_processes,
        )
        prepared.save()
        (rdir / "spec.json").write_text(json.dumps(record.spec, indent=2, sort_keys=True))
        return prepared
    except BaseException as e:
        record.status = "cancelled" if isinstance(e, KeyboardInterrupt) else "failed"
        record.error = _describe(e)
        runsmod.write(repo, record)
        raise


def _check_libraries(spec: RunSpec) -> None:
    need = ["torch", "transformers", "datasets", "accelerate"]
    if spec.method in ("sft", "lora", "qlora", "dpo", "reward"):
        need.append("trl")
    if spec.method in ("lora", "qlora"):
        need.append("peft")
    if spec.method == "pretrain":
        need.append("tokenizers")
    require(*need)


def _store_data(repo: Repo, spec: RunSpec, rdir: Path, from_store: dict[str, str], author: str | None) -> tuple[list[dict[str, Any]], dict[str, Path]]:
    """Store each data file (or take it from the store) and export it into the run directory."""
    out: list[dict[str, Any]] = []
    paths: dict[str, Path] = {}
    for role, src in (("train", spec.data.train), ("eval", spec.data.eval)):
        if role in from_store:
            cid = from_store[role]
            commit = repo.read_commit(cid)
            meta = commit.lineage.get("dataset", {})
            path = export_dataset(repo, cid, rdir / "data" / role)
            entry = {"role": role, "path": meta.get("path", path.name), "commit": cid, "size": path.stat().st_size}
            entry["id"] = repo.read_tree(commit.tree).entries[path.name].hash
        elif src:
            stored = store_dataset(repo, src, author=author)
            path = export_dataset(repo, stored.commit, rdir / "data" / role)
            entry = {"role": role, **stored.to_json(), "source": str(Path(src))}
        else:
            continue
        out.append(entry)
        paths[role] = path
    return out, paths


def _materialise_checkpoint(repo: Repo, prepared: Prepared, cid: str, commit, notify) -> Path:
    step = int(commit.lineage.get("step") or commit.metrics.get("step") or 0)
    target = Path(prepared.run_dir) / "resume" / f"checkpoint-{step}"
    export(repo, cid, target, force=True)
    state = Path(prepared.run_dir) / "state" / f"checkpoint-{step}"
    if state.is_dir():
        for f in state.iterdir():
            (shutil.copytree if f.is_dir() else shutil.copy2)(f, target / f.name)
    elif notify:
        notify(f"note: the optimizer state of step {step} was not kept (checkpoint.keep_optimizer); continuing with a fresh optimizer")
    if notify:
        notify(f"resuming run {prepared.name} from checkpoint {cid[:12]} (step {step})")
    return target


def _read_prepared(repo: Repo, name: str) -> Prepared | None:
    try:
        return Prepared.load(runsmod.run_dir(repo, name) / PREPARED)
    except (FileNotFoundError, ValueError, TypeError):
        return None


# -- execute -------------------------------------------------------------------------------------
def _run(repo: Repo, prepared: Prepared, *, stream: TextIO | None, notify: Callable[[str], None] | None) -> RunResult:
    spec = validate(prepared.spec)
    if spec.launch.launcher == "accelerate":
        from trainers.launch import launch

        return launch(repo, prepared, spec, notify=notify)
    return execute(prepared, stream=stream, notify=notify)


class _Cancel:
    """Set by the first Ctrl-C/SIGTERM: the run stops after the current step. A second Ctrl-C stops at once."""

    def __init__(self) -> None:
        self.requested = False
        self.signal_name = ""


@contextlib.contextmanager
def _signals(cancel: _Cancel, notify: Callable[[str], None] | None) -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        if cancel.requested and signum == signal.SIGINT:
            signal.signal(signal.SIGINT, signal.default_int_handler)
            raise KeyboardInterrupt
        cancel.requested = True
        cancel.signal_name = signal.Signals(signum).name
        if notify:
            notify(f"{cancel.signal_name}: stopping after this step; the last checkpoint is kept (Ctrl-C again to stop now)")

    old_int = signal.signal(signal.SIGINT, handler)
    old_term = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old_int)
        signal.signal(signal.SIGTERM, old_term)


def quiet_libraries() -> None:
    """Silence the libraries' own progress bars and chatter: the run draws its own progress line."""
    import warnings

    import datasets
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    datasets.utils.logging.set_verbosity_error()
    datasets.disable_progress_bars()
    for mod in ("transformers", "trl", "peft", "accelerate", "torch"):
        warnings.filterwarnings("ignore", category=FutureWarning, module=mod)
        warnings.filterwarnings("ignore", category=UserWarning, module=mod)
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=mod)


def execute(prepared: Prepared, *, stream: TextIO | None = None, notify: Callable[[str], None] | None = None) -> RunResult:
    """Train in this process. In a distributed run every rank calls this; only global rank 0 writes.

    Which process is rank 0 is asked of the Trainer once it is built (it sets up the process
    group); until then a process of a multi-process run writes nothing.
    """
    from hooks.python import PythonHooks, load_hooks_file
    from trainers import data as datamod
    from trainers.callback import MvcCallback
    from trainers.methods import BuildContext, build
    from trainers.telemetry import make_progress, make_telemetry

    quiet_libraries()
    repo = Repo(Path(prepared.repo_root))
    spec = validate(prepared.spec)
    rank0 = {"main": prepared.world_size <= 1}
    runtime = detect_runtime(spec.train.precision)
    rdir = Path(prepared.run_dir)
    name = prepared.name
    branch = f"runs/{name}"
    result = RunResult(name=name, status="running", branch=branch)
    record = runsmod.read(repo, name) or runsmod.RunRecord(name=name, method=spec.method, branch=branch)
    def say(text: str) -> None:
        if notify is not None and rank0["main"]:
            (progress.message if progress is not None else notify)(text)

    def update(*, index: bool = True, **changes: Any) -> None:
        if not rank0["main"]:
            return
        for k, v in changes.items():
            setattr(record, k, v)
        record.pid, record.host = os.getpid(), runsmod.this_host()
        runsmod.write(repo, record, index=index)

    hooks = load_hooks_file(spec.hooks_file) if spec.hooks_file else PythonHooks()

    def call_hook(event: str, **kwargs: Any) -> None:
        if rank0["main"]:  # event hooks run in the rank-0 process only; compute_loss runs everywhere
            hooks.call(event, **kwargs)
    run_info = RunInfo(name=name, method=spec.method, branch=branch, spec=prepared.spec, repo=str(repo.root), run_dir=str(rdir))
    cancel = _Cancel()
    telemetry = make_telemetry()
    progress = make_progress(stream, telemetry, label=name) if stream is not None else None

    def on_commit(step: int, commit: str, kind: str) -> None:
        result.commits.append(commit)
        result.step = step
        update(status="running", head=commit, step=step, checkpoints=record.checkpoints + 1, metrics=telemetry.snapshot())
        say(f"checkpoint step {step} -> commit {commit[:12]} on {branch}")
        call_hook("on_checkpoint", run=run_info, step=step, commit=commit)

    mvc_cb = MvcCallback(
        repo, branch, base=prepared.base, lineage=dict(prepared.lineage), state_dir=rdir / "state",
        keep_optimizer=spec.checkpoint.keep_optimizer, delete_after_commit=True, metrics=telemetry.snapshot,
        on_commit=on_commit, before_commit=lambda step: update(status="checkpointing", step=step, index=False), author=prepared.author,
        message=f"{name} ({spec.method}): ", add_environment=False,
    )
    callbacks = [telemetry, _events_callback(call_hook, run_info, cancel, telemetry), mvc_cb]
    if progress is not None:
        callbacks.insert(1, progress)

    try:
        train_rows, fmt = datamod.load(prepared.train_data, spec.method, fmt=spec.data.format, text_field=spec.data.text_field)
        if prepared.eval_data:
            eval_rows, _ = datamod.load(prepared.eval_data, spec.method, fmt=fmt, text_field=spec.data.text_field)
        else:
            train_rows, eval_rows = datamod.split(train_rows, spec.data.eval_split, spec.train.seed)
        ctx = BuildContext(
            spec=spec, runtime=runtime, output_dir=rdir / "checkpoints", train_rows=train_rows, data_format=fmt, eval_rows=eval_rows,
            base_dir=Path(prepared.base_dir) if prepared.base_dir else None, teacher_dir=Path(prepared.teacher_dir) if prepared.teacher_dir else None,
            callbacks=callbacks, loss_hook=hooks.compute_loss, world_size=prepared.world_size, note=say,
            # a resumed pretraining run keeps the tokenizer it trained, which its checkpoint holds
            tokenizer_dir=Path(prepared.resume_from) if prepared.resume_from else None,
        )
        built = build(ctx)
        rank0["main"] = built.trainer.is_world_process_zero()
        _drop_printer(built.trainer)
        update(status="running", step=0 if not prepared.resume_from else record.step, error=None,
               metrics={"parameters": built.parameters, "trainable_parameters": built.trainable})
        call_hook("on_run_begin", run=run_info)
        with _signals(cancel, say):
            output = built.trainer.train(resume_from_checkpoint=prepared.resume_from)
        metrics = {**telemetry.snapshot(), **_numbers(output.metrics)}
        if built.has_eval and not cancel.requested:
            eval_metrics = _numbers(built.trainer.evaluate())
            metrics.update(eval_metrics)
            call_hook("on_eval", run=run_info, step=built.trainer.state.global_step, metrics=eval_metrics)
        metrics.update(parameters=built.parameters, trainable_parameters=built.trainable)
        result.step = built.trainer.state.global_step
        result.metrics = metrics
        if cancel.requested:
            result.status = "cancelled"
            update(status="cancelled", step=result.step, metrics=metrics, error=f"cancelled by {cancel.signal_name} at step {result.step}")
            call_hook("on_run_end", run=run_info, status="cancelled", commit=record.head)
            return result
        final_dir = rdir / "final"  # emptied by prepare (SCRATCH)
        final_dir.mkdir(parents=True, exist_ok=True)
        built.save_final(final_dir)  # every rank: saving may gather sharded weights; only rank 0 writes
        if rank0["main"]:
            cid = mvc_cb.commit_directory(final_dir, kind="train", step=result.step, metrics=_final_metrics(metrics),
                                          message=_final_message(name, spec.method, result.step, metrics))
            result.final = cid
            result.commits.append(cid)
            say(f"final model -> commit {cid[:12]} on {branch}")
            if spec.into:
                result.into = _advance(repo, spec.into, cid, name)
            update(status="completed", head=cid, step=result.step, metrics=_final_metrics(metrics))
        result.status = "completed"
        call_hook("on_run_end", run=run_info, status="completed", commit=result.final)
        return result
    except KeyboardInterrupt:
        with contextlib.suppress(BaseException):
            mvc_cb.flush()  # a checkpoint already handed to the background committer is kept
        result.status = "cancelled"
        update(status="cancelled", error="interrupted (second Ctrl-C)")
        with contextlib.suppress(Exception):
            call_hook("on_run_end", run=run_info, status="cancelled", commit=record.head)
        raise TrainingCancelled(
            f"run {name} cancelled at once; its last checkpoint is {record.head[:12] if record.head else 'none'}",
            hint=f"continue with `mvc train --resume {name}`",
        ) from None
    except BaseException as e:
        with contextlib.suppress(BaseException):
            mvc_cb.flush()
        result.status = "failed"
        result.error = _describe(e)
        update(status="failed", error=result.error)
        with contextlib.suppress(Exception):
            call_hook("on_run_end", run=run_info, status="failed", commit=record.head)
        if isinstance(e, MvcError):
            raise
        if isinstance(e, (SystemExit, GeneratorExit)):
            raise
        raise TrainingFailed(f"run {name} failed: {result.error}") from e
    finally:
        if rank0["main"]:
            for sub in SCRATCH:
                shutil.rmtree(rdir / sub, ignore_errors=True)


@dataclass(frozen=True)
class RunInfo:
    """What hooks are told about the run."""

    name: str
    method: str
    branch: str
    spec: dict[str, Any]
    repo: str
    run_dir: str


def _events_callback(call_hook, run_info: RunInfo, cancel: _Cancel, telemetry):
    """Hooks-file events and cancellation as a TrainerCallback."""
    from transformers import TrainerCallback

    class Events(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if cancel.requested:
                control.should_training_stop = True
                control.should_save = False
                control.should_evaluate = False
            call_hook("on_step", run=run_info, step=state.global_step, logs=dict(telemetry.logs))

        def on_evaluate(self, args, state, control, metrics=None, **kwargs):
            call_hook("on_eval", run=run_info, step=state.global_step, metrics=_numbers(metrics or {}))

    return Events()


def _drop_printer(trainer) -> None:
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    for cb in (PrinterCallback, ProgressCallback):
        with contextlib.suppress(ValueError):
            trainer.remove_callback(cb)


def _advance(repo: Repo, branch: str, cid: str, name: str) -> str:
    """Move ``branch`` to ``cid``: create it, or fast-forward it; refuse to drop its own commits."""
    from mvc.dag import is_ancestor

    ref = f"refs/heads/{branch}"
    current = repo.refs.read(ref)
    if current is None:
        repo.create_ref("heads", branch, cid, message=f"train: run {name} into new branch")
    elif current != cid:
        if not is_ancestor(repo.objects, current, cid):
            raise InvalidArgument(
                f"run {name} completed ({cid[:12]} on runs/{name}) but {branch} has commits the run does not contain; {branch} was not moved",
                hint=f"merge it instead: mvc merge runs/{name} (on {branch})",
            )
        repo.refs.compare_and_swap(ref, current, cid, message=f"train: fast-forward to run {name}")
        repo.index().sync_refs()
    return branch


def _final_message(name: str, method: str, step: int, metrics: dict[str, Any]) -> str:
    loss = metrics.get("train_loss", metrics.get("loss"))
    extra = f", train loss {loss:.4g}" if isinstance(loss, (int, float)) else ""
    if isinstance(metrics.get("eval_loss"), (int, float)):
        extra += f", eval loss {metrics['eval_loss']:.4g}"
    return f"{name} ({method}): final model at step {step}{extra}"


def _numbers(metrics: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def _final_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    out = dict(metrics)
    if "train_loss" in out and "loss" not in out:
        out["loss"] = out["train_loss"]
    return out


def _describe(e: BaseException) -> str:
    if isinstance(e, MvcError):
        return e.message
    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def _default_name(spec: RunSpec) -> str:
    return f"{spec.method}-{time.strftime('%Y%m%d-%H%M%S')}"


def dry_run(spec: RunSpec) -> dict[str, Any]:
    """The resolved spec, as ``mvc train --dry-run`` prints it (nothing is written)."""
    spec = spec.resolved()
    if not spec.name:
        spec.name = _default_name(spec)
    return spec.resolved_dict()
