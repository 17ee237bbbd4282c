"""Shared helpers of the remote tests: synthetic models, backend specs, a local S3 endpoint (moto), wrappers.

Models are built with numpy + safetensors (no transformers): 20 fp16 tensors of 16 KiB each,
so a "fine-tune" that changes 2 of them changes 10% of the weight bytes.
"""

from __future__ import annotations

import atexit
import json
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from mvc.repo import Repo
from store.backends import Backend, Wrapper, open_raw_backend
from store.fsck import fsck

BUCKET = "mvc-tests"
N_TENSORS = 20
SHAPE = (64, 128)  # fp16: 16 KiB per tensor
TENSOR_BYTES = SHAPE[0] * SHAPE[1] * 2
AWS_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_DEFAULT_REGION", "AWS_EC2_METADATA_DISABLED",
            "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE", "AWS_PROFILE", "AWS_ENDPOINT_URL")


def tensor_name(i: int) -> str:
    return f"model.layers.{i:02d}.weight"


def write_model(directory: Path, *, changed: tuple[int, ...] = (), seed: int = 1, tokenizer: str = "v1") -> Path:
    """A model directory: model.safetensors (20 tensors), config.json, tokenizer.json, tokenizer_config.json."""
    import numpy as np
    from safetensors.numpy import save_file

    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    tensors = {tensor_name(i): rng.standard_normal(SHAPE).astype(np.float16) for i in range(N_TENSORS)}
    tweak = np.random.default_rng(seed)
    for i in changed:
        tensors[tensor_name(i)] = tweak.standard_normal(SHAPE).astype(np.float16)
    save_file(tensors, str(directory / "model.safetensors"), metadata={"format": "pt"})
    (directory / "config.json").write_text(json.dumps({"model_type": "toy", "hidden_size": SHAPE[1]}))
    (directory / "tokenizer.json").write_text(json.dumps({"version": tokenizer, "vocab": {str(i): i for i in range(50)}}))
    (directory / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 128}))
    return directory


def files_of(directory: Path) -> dict[str, bytes]:
    return {p.relative_to(directory).as_posix(): p.read_bytes() for p in sorted(directory.rglob("*"))
            if p.is_file() and ".mvc" not in p.relative_to(directory).parts}


def make_repo(root: Path, **model) -> Repo:
    """A repository at ``root`` whose worktree ``root/model`` holds a committed model."""
    root.mkdir(parents=True, exist_ok=True)
    write_model(root / "model", **model)
    Repo.init(root).set_config("core", "fsync", "false")  # tests need no durability; fsync costs 2-5 ms a file here
    repo = Repo(root)
    repo.commit(root / "model", "base", author="A <a@example.com>")
    return repo


def assert_fsck_clean(repo: Repo) -> None:
    report = fsck(repo.objects, repo.refs, full=True)
    assert report.ok, report.problems


# -- backends -----------------------------------------------------------------------------------
@dataclass
class RemoteSpec:
    kind: str
    url: str
    endpoint: str | None = None

    def raw(self) -> Backend:
        return open_raw_backend(self.url, endpoint_url=self.endpoint)

    def add_to(self, repo: Repo, name: str = "origin") -> None:
        from mvc.remotes import add_remote

        add_remote(repo, name, self.url, endpoint_url=self.endpoint)


_MOTO: dict = {}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def moto_endpoint() -> str:
    """A moto S3 server (``python -m moto.server``) on 127.0.0.1 and a free port, started once per test process.

    It runs in its own process, on its own core: in-process (ThreadedMotoServer) it would share the
    GIL with the code under test and make every request several times slower.
    """
    pytest.importorskip("moto.server")
    if "endpoint" in _MOTO and _MOTO["proc"].poll() is None:
        return _MOTO["endpoint"]
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    atexit.register(proc.kill)
    deadline = time.monotonic() + 30
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("moto server did not start") from None
            time.sleep(0.05)
    _MOTO.update(proc=proc, endpoint=f"http://127.0.0.1:{port}")
    return _MOTO["endpoint"]


DUMMY_AWS = {
    "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true", "AWS_CONFIG_FILE": "/nonexistent/aws-config", "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/aws-credentials",
}


@contextmanager
def dummy_aws_env():
    """Dummy credentials and no AWS config files while the S3 tests run; the old environment afterwards."""
    saved = {k: os.environ.get(k) for k in AWS_KEYS}
    for k in AWS_KEYS:
        os.environ.pop(k, None)
    os.environ.update(DUMMY_AWS)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def s3_endpoint_with_bucket() -> str:
    endpoint = moto_endpoint()
    if not _MOTO.get("bucket"):
        open_raw_backend(f"s3://{BUCKET}", endpoint_url=endpoint).fs.mkdir(BUCKET)
        _MOTO["bucket"] = True
    return endpoint


def make_spec(kind: str, tmp_path: Path, endpoint: str | None) -> RemoteSpec:
    tag = uuid.uuid4().hex[:10]
    if kind == "file":
        return RemoteSpec("file", (tmp_path / f"remote-{tag}").as_uri())
    if kind == "memory":
        return RemoteSpec("memory", f"memory://mvc-{tag}/remote")
    # A bucket per test: moto lists a prefix by scanning the whole bucket.
    bucket = f"{BUCKET}-{tag}"
    open_raw_backend(f"s3://{bucket}", endpoint_url=endpoint).fs.mkdir(bucket)
    return RemoteSpec("s3", f"s3://{bucket}/models", endpoint)


# -- wrappers ----------------------------------------------------------------------------------
class Counting(Wrapper):
    """Counts calls, bytes uploaded and the keys created or fetched."""

    def __init__(self, inner: Backend) -> None:
        super().__init__(inner)
        self.calls: Counter[str] = Counter()
        self.created: list[str] = []
        self.fetched: list[str] = []
        self.bytes_put = 0
        self.lock = threading.Lock()

    def _call(self, name: str, *args):
        with self.lock:
            self.calls[name] += 1
        result = super()._call(name, *args)
        with self.lock:
            if name == "put_new" and result:
                data = args[1]
                self.created.append(args[0])
                self.bytes_put += data.stat().st_size if isinstance(data, Path) else len(data)
            if name == "get_file":
                self.fetched.append(args[0])
        return result

    @property
    def requests(self) -> int:
        return sum(self.calls.values())


class Killed(BaseException):
    """Stands in for SIGKILL / a dropped connection: nothing catches it on the way out."""


class KillAfter(Wrapper):
    """Lets ``n`` calls of ``op`` through, then every further one dies."""

    def __init__(self, inner: Backend, op: str, n: int, *, prefix: str = "") -> None:
        super().__init__(inner)
        self.op, self.n, self.prefix = op, n, prefix
        self.count = 0
        self.lock = threading.Lock()

    def _call(self, name: str, *args):
        if name == self.op and str(args[0]).startswith(self.prefix):
            with self.lock:
                self.count += 1
                die = self.count > self.n
            if die:
                raise Killed(f"killed during {name} {args[0]}")
        return super()._call(name, *args)


class Flaky(Wrapper):
    """Fails every ``every``-th call with a transient error (before or after doing the work)."""

    def __init__(self, inner: Backend, every: int = 3) -> None:
        super().__init__(inner)
        self.every = every
        self.count = 0
        self.failures = 0
        self.lock = threading.Lock()

    def _call(self, name: str, *args):
        from store.errors import RemoteUnavailable

        with self.lock:
            self.count += 1
            fail = self.count % self.every == 0
            after = self.count % (2 * self.every) == 0
            if fail:
                self.failures += 1
        if fail and not after:
            raise RemoteUnavailable(f"injected: connection reset during {name}")
        result = super()._call(name, *args)
        if fail and after:  # the work was done but the answer was lost
            raise RemoteUnavailable(f"injected: connection reset after {name}")
        return result


class SigkillAfter(Wrapper):
    """Lets ``n`` calls of ``op`` through, then kills its own process with SIGKILL: no cleanup runs."""

    def __init__(self, inner: Backend, op: str, n: int) -> None:
        super().__init__(inner)
        self.op, self.n = op, n
        self.count = 0
        self.lock = threading.Lock()

    def _call(self, name: str, *args):
        if name == self.op:
            with self.lock:
                self.count += 1
                if self.count > self.n:
                    import signal

                    os.kill(os.getpid(), signal.SIGKILL)
        return super()._call(name, *args)


def run_killed(code: str, tests_dir: Path) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter that can import this module; it is expected to SIGKILL itself."""
    prelude = f"import sys; sys.path.insert(0, {str(tests_dir)!r})\n"
    return subprocess.run([sys.executable, "-c", prelude + code], capture_output=True, text=True, timeout=120)
