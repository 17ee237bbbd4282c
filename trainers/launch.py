"""Several processes: ``mvc train --launcher accelerate --num-processes N``.

The run is prepared once in this process (refs resolved, models and data materialised, run
recorded), then ``accelerate launch`` starts N workers (``python -m trainers.worker
prepared.json``), which train with DDP, or FSDP/DeepSpeed when ``--accelerate-config`` names
such a config. Every worker builds the same Trainer; only global rank 0 commits checkpoints
and the final model and updates the run record. Without a GPU the workers use the CPU and
the gloo backend. Ctrl-C is passed on to the workers, whose rank 0 marks the run cancelled.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Callable

from mvc import runs as runsmod
from mvc.errors import MissingDependency, TrainingFailed
from mvc.repo import Repo
from trainers.spec import RunSpec


def launch_command(prepared_path: str, spec: RunSpec, *, cuda: bool) -> list[str]:
    """The command line that starts the workers.

    On GPUs (or with an accelerate config file): ``accelerate launch`` (DDP, or FSDP/DeepSpeed from
    the config). On CPU, ``accelerate launch --cpu`` starts a single process (it expects mpirun for
    more), so CPU workers are started with torchrun, and the Trainer joins them with gloo.
    """
    n = str(spec.launch.num_processes)
    worker = ["-m", "trainers.worker", prepared_path]
    if cuda or spec.launch.config_file:
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", n, "--main_process_port", "0"]
        if spec.launch.config_file:
            cmd += ["--config_file", spec.launch.config_file]
        elif spec.launch.num_processes > 1:
            cmd += ["--multi_gpu"]
        return cmd + worker
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", n, *worker]


def launch(repo: Repo, prepared, spec: RunSpec, *, notify: Callable[[str], None] | None = None):
    """Run the prepared run in ``spec.launch.num_processes`` worker processes; return its RunResult."""
    import importlib.util

    from trainers.environment import detect_runtime
    from trainers.run import RunResult

    if importlib.util.find_spec("accelerate") is None:
        raise MissingDependency("--launcher accelerate needs the Python package 'accelerate', which is not installed")
    path = str(prepared.save())
    cmd = launch_command(path, spec, cuda=detect_runtime(spec.train.precision).cuda)
    if notify:
        notify(f"launching {spec.launch.num_processes} worker process(es) with accelerate")
    proc = subprocess.Popen(cmd)
    old = signal.signal(signal.SIGINT, lambda s, f: proc.send_signal(signal.SIGINT))
    try:
        rc = proc.wait()
    finally:
        signal.signal(signal.SIGINT, old)
    record = runsmod.read(repo, prepared.name)
    if record is None:
        raise TrainingFailed(f"run {prepared.name}: the workers left no record (exit {rc})")
    if rc != 0 and record.status in runsmod.ACTIVE:
        record.status, record.error = "failed", f"worker processes exited with status {rc}"
        runsmod.write(repo, record)
    result = RunResult(name=record.name, status=record.status, branch=record.branch, step=record.step, metrics=dict(record.metrics),
                       error=record.error)
    tip = repo.refs.read(f"refs/heads/{record.branch}")
    if tip:
        result.commits = [tip]
        if repo.read_commit(tip).kind == "train":
            result.final = tip
    if record.status == "failed":
        raise TrainingFailed(f"run {record.name} failed: {record.error}")
    return result
