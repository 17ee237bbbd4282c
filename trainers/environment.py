"""Where a run happens: device, precision, library versions and the user's code version.

All of it goes into the lineage of every commit of the run, so a model says what trained it.
"""

from __future__ import annotations

import importlib.metadata
import platform
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mvc.errors import MissingDependency, UnsupportedHardware

TRAIN_EXTRA_HINT = "install the training extra: pip install 'mvc[train]' (with torch installed first)"
LIBRARIES = ("torch", "transformers", "trl", "peft", "accelerate", "datasets", "tokenizers")


@dataclass(frozen=True)
class Runtime:
    """The device a run trains on and the precision it really uses."""

    device: str  # cpu, cuda, mps
    device_name: str
    precision: str  # fp32, fp16, bf16
    requested: str  # what the spec asked for
    note: str | None = None  # why precision differs from the request

    @property
    def cuda(self) -> bool:
        return self.device == "cuda"


def require(*modules: str) -> None:
    """Raise MissingDependency naming the first of ``modules`` that is not installed."""
    import importlib.util

    for m in modules:
        if importlib.util.find_spec(m) is None:
            raise MissingDependency(f"training needs the Python package {m!r}, which is not installed", hint=TRAIN_EXTRA_HINT)


def version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def detect_runtime(requested: str = "auto", *, force_cpu: bool = False) -> Runtime:
    """Pick the device and resolve ``requested`` precision, falling back safely where the hardware lacks it."""
    import torch

    if not force_cpu and torch.cuda.is_available():
        name = torch.cuda.get_device_name(0)
        bf16 = torch.cuda.is_bf16_supported()
        if requested == "auto":
            return Runtime("cuda", name, "bf16" if bf16 else "fp16", requested)
        if requested == "bf16" and not bf16:
            return Runtime("cuda", name, "fp16", requested, f"{name} has no bf16 support: training in fp16 instead")
        return Runtime("cuda", name, requested, requested)
    mps = not force_cpu and getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    device, name = ("mps", "Apple MPS") if mps else ("cpu", platform.processor() or platform.machine() or "cpu")
    if requested in ("fp16", "bf16"):
        return Runtime(device, name, "fp32", requested, f"{requested} mixed precision needs a CUDA GPU; training in fp32 on {device}")
    return Runtime(device, name, "fp32", requested)


def require_qlora(runtime: Runtime) -> None:
    """QLoRA loads the base model in 4 bits through bitsandbytes, which needs a CUDA GPU."""
    import importlib.util

    if not runtime.cuda:
        raise UnsupportedHardware(
            f"qlora needs a CUDA GPU (4-bit quantisation through bitsandbytes); this machine trains on {runtime.device}",
            hint="use --method lora on this machine, or run qlora on a machine with an NVIDIA GPU",
        )
    if importlib.util.find_spec("bitsandbytes") is None:
        raise MissingDependency("qlora needs the Python package 'bitsandbytes', which is not installed", hint="pip install bitsandbytes")


def environment(runtime: Runtime, *, world_size: int = 1) -> dict[str, Any]:
    """The environment recorded in lineage.environment."""
    env: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": f"{platform.system()} {platform.machine()}",
        "device": runtime.device,
        "device_name": runtime.device_name,
        "precision": runtime.precision,
        "world_size": world_size,
    }
    for lib in LIBRARIES:
        v = version(lib)
        if v:
            env[lib] = v
    if runtime.cuda:
        import torch

        env["cuda"] = torch.version.cuda
    return env


def code_version(start: Path | str) -> dict[str, Any] | None:
    """The git commit and dirty flag of the user's training repository containing ``start``, if any."""
    try:
        import git
    except ImportError:
        return None
    try:
        repo = git.Repo(Path(start), search_parent_directories=True)
    except (git.InvalidGitRepositoryError, git.NoSuchPathError, git.GitCommandError, OSError):
        return None
    out: dict[str, Any] = {"repository": str(repo.working_tree_dir)}
    try:
        out["commit"] = repo.head.commit.hexsha
    except (ValueError, git.GitCommandError):
        out["commit"] = None  # a repository without commits yet
    try:
        out["branch"] = repo.active_branch.name
    except (TypeError, git.GitCommandError):
        out["branch"] = None  # detached HEAD
    try:
        out["dirty"] = repo.is_dirty(untracked_files=True)
    except git.GitCommandError:
        out["dirty"] = None
    return out


def python_executable() -> str:
    return sys.executable
