"""Shared fixtures: isolated repositories, tiny transformers models built locally, CLI runners."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "examples"))
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_VERBOSITY"] = "error"
os.environ.pop("MVC_REPO", None)
os.environ.pop("MVC_DEBUG", None)


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def _tiny_base(model_cache) -> Path:
    import tiny_models

    return tiny_models.build_base(model_cache / "base", seed=0)


@pytest.fixture(scope="session")
def _tiny_tweaked(_tiny_base, model_cache) -> tuple[Path, list[str]]:
    import tiny_models

    out = model_cache / "tweaked"
    changed = tiny_models.tweak(_tiny_base, out, fraction=0.1, seed=1)
    return out, changed


@pytest.fixture(scope="session")
def _tiny_sharded(model_cache) -> Path:
    import tiny_models

    return tiny_models.build_base(model_cache / "sharded", seed=0, shard_size="200KB")


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


@pytest.fixture
def tiny_model(_tiny_base, tmp_path) -> Path:
    """A fresh copy of a tiny Llama model directory (config, tokenizer, model.safetensors)."""
    return _copy(_tiny_base, tmp_path / "model")


@pytest.fixture
def tiny_tweaked(_tiny_tweaked, tmp_path) -> tuple[Path, list[str]]:
    """A copy of the tiny model with ~10% of its tensors changed, and the names changed."""
    path, changed = _tiny_tweaked
    return _copy(path, tmp_path / "tweaked"), changed


@pytest.fixture
def tiny_sharded(_tiny_sharded, tmp_path) -> Path:
    """The tiny model saved in three shards with model.safetensors.index.json."""
    return _copy(_tiny_sharded, tmp_path / "sharded")


@pytest.fixture
def repo(tmp_path, monkeypatch):
    """An empty repository in a temporary directory, which is also the working directory."""
    from mvc.repo import Repo

    root = tmp_path / "repo"
    root.mkdir()
    monkeypatch.chdir(root)
    return Repo.init(root)


def run_mvc(*args: str, cwd: Path | None = None, env: dict | None = None, check: bool = False, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run the real ``mvc`` console entry point in a subprocess."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    proc = subprocess.run([sys.executable, "-m", "mvc", *args], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"mvc {' '.join(args)} exited {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    return proc


@pytest.fixture
def mvc():
    """``mvc(*args, cwd=..., check=...)``: run the CLI in a subprocess."""
    return run_mvc
