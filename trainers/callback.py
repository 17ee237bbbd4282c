"""``MvcCallback``: every checkpoint a ``transformers.Trainer`` saves becomes an mvc commit.

Two lines turn a training script of your own into one whose checkpoints are versioned::

    from trainers.callback import MvcCallback
    trainer.add_callback(MvcCallback(repo=".", branch="runs/my-experiment"))

Each save of the Trainer becomes a ``checkpoint`` commit on the branch (step and metrics so
far), and with ``commit_final`` the model at the end of ``train()`` becomes a ``train``
commit. Only the process of global rank 0 writes to the repository.

What a checkpoint commit holds: the model files the Trainer wrote (weights or adapter,
config, tokenizer, generation config, ``trainer_state.json``). The optimizer, scheduler,
scaler and RNG states and ``training_args.bin`` are pickles needed only to resume: they stay
out of commits, in the checkpoint directory (here) or in ``.mvc/runs/NAME/state/`` for
``mvc train``, which keeps them only for the newest ``keep_optimizer`` checkpoints.
"""

from __future__ import annotations

import fnmatch
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mvc.repo import Repo

# Files of a Trainer checkpoint that only resuming needs (never committed).
RESUME_STATE = ("optimizer*", "scheduler*", "scaler*", "rng_state*", "training_args.bin", "global_step*", "latest", "zero_to_fp32.py")


def is_resume_state(name: str) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in RESUME_STATE)


def stage_model_files(checkpoint: Path, staging: Path) -> list[str]:
    """Hard-link (or copy) the model files of ``checkpoint`` into ``staging``; return their names."""
    staging.mkdir(parents=True, exist_ok=True)
    names = []
    for entry in sorted(checkpoint.iterdir()):
        if is_resume_state(entry.name):
            continue
        dst = staging / entry.name
        if entry.is_dir():
            shutil.copytree(entry, dst, copy_function=_link_or_copy)
        else:
            _link_or_copy(entry, dst)
        names.append(entry.name)
    return names


def _link_or_copy(src, dst) -> None:
    try:
        Path(dst).hardlink_to(src)
    except OSError:
        shutil.copy2(src, dst)


def move_resume_state(checkpoint: Path, state_dir: Path) -> list[str]:
    """Move the resume-only files of ``checkpoint`` into ``state_dir``."""
    moved = []
    for entry in sorted(checkpoint.iterdir()):
        if is_resume_state(entry.name):
            state_dir.mkdir(parents=True, exist_ok=True)
            target = state_dir / entry.name
            if target.exists():
                shutil.rmtree(target) if target.is_dir() else target.unlink()
            shutil.move(str(entry), target)
            moved.append(entry.name)
    return moved


def prune_resume_state(state_root: Path, keep: int) -> list[str]:
    """Delete the resume state of all but the newest ``keep`` checkpoints under ``state_root``."""
    if not state_root.is_dir():
        return []
    dirs = sorted((d for d in state_root.iterdir() if d.is_dir() and d.name.startswith("checkpoint-")), key=lambda d: _step_of(d.name))
    doomed = dirs[: max(0, len(dirs) - keep)]
    for d in doomed:
        shutil.rmtree(d, ignore_errors=True)
    return [d.name for d in doomed]


def _step_of(name: str) -> int:
    try:
        return int(name.rsplit("-", 1)[1])
    except (IndexError, ValueError):
        return -1


def _base():
    from transformers import TrainerCallback

    return TrainerCallback


class _Lazy(type):
    """Make ``MvcCallback`` a real ``TrainerCallback`` subclass without importing transformers at import time."""

    _real: type | None = None

    def _resolve(cls) -> type:
        if cls._real is None:
            cls._real = _build_class()
        return cls._real

    def __call__(cls, *args, **kwargs):
        return cls._resolve()(*args, **kwargs)

    def __instancecheck__(cls, obj) -> bool:
        return isinstance(obj, cls._resolve())

    def __subclasscheck__(cls, sub) -> bool:
        return issubclass(sub, cls._resolve())


class MvcCallback(metaclass=_Lazy):
    """Commit each checkpoint the Trainer saves (and optionally the final model) to an mvc repository.

    Arguments (all keyword):
      repo: a ``Repo`` or a path inside one (default ".").
      branch: the branch to commit to (default ``runs/<output_dir name>``); created on the first commit.
      base: a ref the first commit descends from when the branch does not exist yet.
      lineage: extra lineage for every commit (datasets, spec, ...); environment and code version are added.
      commit_final: also commit the model at the end of ``train()`` (kind ``train``).
      state_dir, keep_optimizer: move resume-only files out of each checkpoint into ``state_dir/checkpoint-N``
        and keep them for the newest ``keep_optimizer`` checkpoints (None: leave them in place).
      delete_after_commit: delete the checkpoint's model files once committed (they are in the store).
      metrics: a callable returning extra metrics for a commit (telemetry).
      on_commit: called as ``on_commit(step=..., commit=..., kind=...)`` after each commit.
      message: a prefix for commit messages (e.g. "exp-3: ").
      author: commit author (default: the user).
      background: commit checkpoints in a background thread so training goes on meanwhile (default).
        The model files are hard-linked into a staging directory first, so the Trainer may rotate or
        delete the checkpoint at once. Commits are made in order; ``flush()`` waits for them (the
        end of ``train()`` does) and re-raises the first failure.
    """


def _build_class() -> type:
    base_cls = _base()

    class MvcCallback(base_cls):  # noqa: D401 - docstring above
        __doc__ = MvcCallbackDoc

        def __init__(
            self,
            repo: Repo | str | Path = ".",
            branch: str | None = None,
            *,
            base: str | None = None,
            lineage: dict[str, Any] | None = None,
            commit_final: bool = False,
            state_dir: Path | str | None = None,
            keep_optimizer: int = 1,
            delete_after_commit: bool = False,
            metrics: Callable[[], dict[str, Any]] | None = None,
            on_commit: Callable[..., None] | None = None,
            before_commit: Callable[..., None] | None = None,
            author: str | None = None,
            message: str | None = None,
            add_environment: bool = True,
            background: bool = True,
        ) -> None:
            self.repo = repo if isinstance(repo, Repo) else Repo.find(repo)
            self.branch = branch
            self.base = self.repo.resolve(base) if base else None
            self.lineage = dict(lineage or {})
            self.commit_final = commit_final
            self.state_dir = Path(state_dir) if state_dir is not None else None
            self.keep_optimizer = keep_optimizer
            self.delete_after_commit = delete_after_commit
            self.metrics = metrics
            self.on_commit = on_commit
            self.before_commit = before_commit
            self.author = author
            self.message = message
            self.add_environment = add_environment
            self.commits: list[str] = []
            self.last_logs: dict[str, Any] = {}
            self.save_seconds: list[float] = []  # time each save blocked training (benchmarks read it)
            self.background = background
            self._executor = None
            self._pending: list = []

        # -- helpers -----------------------------------------------------------------
        def _branch(self, args) -> str:
            if self.branch is None:
                self.branch = "runs/" + Path(args.output_dir).resolve().name
            return self.branch

        def _common_lineage(self) -> dict[str, Any]:
            if self.add_environment and "environment" not in self.lineage:
                from trainers.environment import code_version, detect_runtime, environment

                self.lineage["environment"] = environment(detect_runtime())
                code = code_version(Path.cwd())
                if code is not None:
                    self.lineage.setdefault("code", code)
            return self.lineage

        def _metrics(self, state) -> dict[str, Any]:
            out: dict[str, Any] = {"step": state.global_step}
            if state.epoch is not None:
                out["epoch"] = round(float(state.epoch), 4)
            for k in ("loss", "eval_loss", "learning_rate"):
                if k in self.last_logs:
                    out[k] = self.last_logs[k]
            if self.metrics is not None:
                out.update(self.metrics())
            return out

        def commit_directory(self, directory: Path, *, kind: str, step: int, metrics: dict[str, Any], message: str) -> str:
            """Commit the model files of ``directory`` to the branch now; return the commit id."""
            self.flush()
            return self._commit_staged(self._stage(directory, kind), kind=kind, step=step, metrics=metrics, message=message)

        def _stage(self, directory: Path, kind: str) -> Path:
            (self.repo.dir / "tmp").mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(dir=self.repo.dir / "tmp", prefix=f"{kind}-"))
            try:
                stage_model_files(directory, tmp / "model")
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            return tmp

        def _commit_staged(self, tmp: Path, *, kind: str, step: int, metrics: dict[str, Any], message: str) -> str:
            try:
                branch = self.branch or "runs/unnamed"
                parents = None
                if self.repo.refs.read(f"refs/heads/{branch}") is None and self.base:
                    parents = [self.base]
                lineage = {**self._common_lineage(), "step": step}
                result = self.repo.commit(
                    tmp / "model", message, kind=kind, lineage=lineage, metrics=metrics, branch=branch, parents=parents,
                    author=self.author, allow_empty=True, scratch=True,
                )
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
            self.commits.append(result.id)
            return result.id

        def flush(self) -> None:
            """Wait for background commits; re-raise the first one that failed."""
            pending, self._pending = self._pending, []
            error = None
            for future in pending:
                try:
                    future.result()
                except BaseException as e:  # noqa: BLE001 - re-raised below, after all have finished
                    error = error or e
            if error is not None:
                raise error

        # -- Trainer events ------------------------------------------------------------
        def on_log(self, args, state, control, logs=None, **kwargs):
            for k, v in (logs or {}).items():
                if isinstance(v, (int, float)):
                    self.last_logs[k] = v

        def on_save(self, args, state, control, **kwargs):
            if not state.is_world_process_zero:
                return
            started = time.perf_counter()
            self._branch(args)
            checkpoint = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if not checkpoint.is_dir():
                return
            if self.before_commit is not None:
                self.before_commit(step=state.global_step)
            if self.state_dir is not None:
                move_resume_state(checkpoint, self.state_dir / checkpoint.name)
            step, metrics = state.global_step, self._metrics(state)
            staged = self._stage(checkpoint, "checkpoint")

            def commit() -> None:
                cid = self._commit_staged(staged, kind="checkpoint", step=step, metrics=metrics,
                                          message=f"{self.message or ''}checkpoint at step {step}")
                if self.state_dir is not None:
                    prune_resume_state(self.state_dir, self.keep_optimizer)
                if self.delete_after_commit:
                    shutil.rmtree(checkpoint, ignore_errors=True)
                if self.on_commit is not None:
                    self.on_commit(step=step, commit=cid, kind="checkpoint")

            if self.background:
                if self._executor is None:
                    from concurrent.futures import ThreadPoolExecutor

                    self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mvc-commit")
                failed = [f for f in self._pending if f.done() and f.exception() is not None]
                if failed:
                    self.flush()
                self._pending.append(self._executor.submit(commit))
            else:
                commit()
            self.save_seconds.append(time.perf_counter() - started)

        def on_train_end(self, args, state, control, model=None, processing_class=None, **kwargs):
            if state.is_world_process_zero:
                self.flush()
            if not self.commit_final or not state.is_world_process_zero or model is None:
                return
            self._branch(args)
            with tempfile.TemporaryDirectory(dir=self.repo.dir / "tmp", prefix="final-") as tmp:
                out = Path(tmp) / "final"
                model.save_pretrained(out)
                if processing_class is not None:
                    processing_class.save_pretrained(out)
                cid = self.commit_directory(out, kind="train", step=state.global_step, metrics=self._metrics(state),
                                            message=f"{self.message or ''}final model at step {state.global_step}")
            if self.on_commit is not None:
                self.on_commit(step=state.global_step, commit=cid, kind="train")

    return MvcCallback


MvcCallbackDoc = MvcCallback.__doc__
