"""Remotes under attack: lost races, killed transfers resumed, tampered and truncated objects,
transient errors retried, permanent errors (no bucket, no credentials, dead network) explained.

Faults are injected by backend wrappers (``tests/_remote_support.py``), the same way retries
are added: around the backend, never inside it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _remote_support import (
    Counting,
    Flaky,
    KillAfter,
    Killed,
    assert_fsck_clean,
    dummy_aws_env,
    files_of,
    make_repo,
    make_spec,
    run_killed,
    s3_endpoint_with_bucket,
    write_model,
)

from mvc.remotes import add_remote, clone, fetch, push
from mvc.repo import Repo
from store.backends import RetryBackend, Wrapper
from store.errors import RemoteAccessDenied, RemoteCorrupt, RemoteMoved, RemoteNotFound, RemoteUnavailable
from store.ids import hash_bytes
from store.model import FileManifest, decode
from store.transfer import object_key

pytest.importorskip("safetensors")
pytest.importorskip("s3fs")

TESTS = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def s3_endpoint():
    with dummy_aws_env():
        yield s3_endpoint_with_bucket()


@pytest.fixture(params=["file", "memory", "s3"])
def spec(request, tmp_path):
    endpoint = request.getfixturevalue("s3_endpoint") if request.param == "s3" else None
    return make_spec(request.param, tmp_path, endpoint)


@pytest.fixture(params=["file", "s3"])
def spec_fs(request, tmp_path):
    endpoint = request.getfixturevalue("s3_endpoint") if request.param == "s3" else None
    return make_spec(request.param, tmp_path, endpoint)


def _empty_repo(path: Path, spec) -> Repo:
    Repo.init(path).set_config("core", "fsync", "false")
    repo = Repo(path)
    spec.add_to(repo)
    return repo


def _remote_objects_complete(backend) -> dict[str, int]:
    """Every object visible on the remote is complete (its bytes hash to its name)."""
    listing = backend.list("objects/")
    for key in listing:
        oid = key[len("objects/"):].replace("/", "")
        assert hash_bytes(backend.get(key)) == oid, f"{key} is visible but incomplete"
    return listing


def _tensor_blobs(repo: Repo) -> list[str]:
    tree = repo.read_tree(repo.read_commit(repo.resolve("main")).tree)
    manifest = decode(repo.objects.get(tree.entries["model.safetensors"].id))
    assert isinstance(manifest, FileManifest)
    return [t.parts[0].id for t in manifest.tensors]


def _blobs(repo: Repo) -> set[str]:
    tree = repo.read_tree(repo.read_commit(repo.resolve("main")).tree)
    out = {e.id for e in tree.entries.values() if e.kind == "blob"}
    manifest = decode(repo.objects.get(tree.entries["model.safetensors"].id))
    return out | {p.id for p in manifest.parts()}


def _no_quarantine(repo: Repo) -> None:
    assert not list((repo.dir / "tmp").glob("quarantine-*"))


# -- races ------------------------------------------------------------------------------------
class PushBeforeSwap(Wrapper):
    """Another pusher wins the race: just before our ref swap, ``rival`` pushes its branch."""

    def __init__(self, inner, rival) -> None:
        super().__init__(inner)
        self.rival = rival
        self.fired = False

    def _call(self, name, *args):
        if name == "swap_ref" and args[0] == "refs/heads/main" and not self.fired:
            self.fired = True
            self.rival()
        return super()._call(name, *args)


def test_lost_race_is_a_clear_error_and_the_remote_stays_consistent(tmp_path, spec):
    a = make_repo(tmp_path / "a")
    spec.add_to(a)
    base = push(a, "origin").updates[0].new
    b, _f, _br = clone(spec.url, tmp_path / "b", endpoint_url=spec.endpoint)
    write_model(a.root / "model", changed=(1,))
    mine = a.commit(a.root / "model", "a's tune").id
    write_model(b.root, changed=(2,), seed=9)
    theirs = b.commit(b.root, "b's tune").id

    with pytest.raises(RemoteMoved) as e:
        push(a, "origin", backend=PushBeforeSwap(spec.raw(), lambda: push(b, "origin")))
    assert "remote moved, fetch first" in e.value.message
    assert "fetch" in e.value.hint
    raw = spec.raw()
    assert raw.read_ref("refs/heads/main")[0].decode().strip() == theirs  # the winner's ref, untouched
    assert a.resolve("main") == mine and a.refs.read("refs/remotes/origin/main") == base
    _remote_objects_complete(raw)
    c, _f, _br = clone(spec.url, tmp_path / "c", endpoint_url=spec.endpoint)
    assert c.resolve("main") == theirs
    assert_fsck_clean(c)


# -- killed transfers -------------------------------------------------------------------------
def test_interrupted_push_resumes_without_resending(tmp_path, spec):
    a = make_repo(tmp_path / "a")
    spec.add_to(a)
    with pytest.raises(Killed):
        push(a, "origin", backend=KillAfter(spec.raw(), "put_new", 9, prefix="objects/"), jobs=3)
    raw = spec.raw()
    assert raw.read_ref("refs/heads/main") is None  # the ref never points at missing objects
    assert a.refs.read("refs/remotes/origin/main") is None
    before = _remote_objects_complete(raw)
    assert 9 <= len(before) < 20

    counting = Counting(spec.raw())
    result = push(a, "origin", backend=counting)
    sent = {k for k in counting.created if k.startswith("objects/")}
    assert not sent & set(before), "complete objects were sent again"
    after = raw.list("objects/")
    assert result.stats.bytes_moved == sum(after.values()) - sum(before.values())
    assert result.stats.bytes_skipped == sum(before.values())
    c, _f, _br = clone(spec.url, tmp_path / "c", endpoint_url=spec.endpoint)
    assert files_of(c.root) == files_of(a.root / "model")


def test_interrupted_fetch_resumes_and_keeps_local_state_consistent(tmp_path, spec):
    a = make_repo(tmp_path / "a")
    spec.add_to(a)
    push(a, "origin")
    b = _empty_repo(tmp_path / "b", spec)
    with pytest.raises(Killed):
        fetch(b, "origin", backend=KillAfter(spec.raw(), "get_file", 10), jobs=3)
    assert b.refs.list() == {}
    assert_fsck_clean(b)
    _no_quarantine(b)
    kept = set(b.objects.iter_ids())
    assert kept and all(b.objects.get(o) for o in kept)  # only verified objects entered the store
    assert kept <= _blobs(a)  # blobs as they were verified; manifests, trees and commits wait for them

    counting = Counting(spec.raw())
    fetch(b, "origin", backend=counting)
    refetched = {k[len("objects/"):].replace("/", "") for k in counting.fetched}
    assert not refetched & kept, "verified objects were downloaded again"
    assert b.resolve("origin/main") == a.resolve("main")
    assert_fsck_clean(b)


def test_sigkilled_push_and_fetch_resume(tmp_path):
    """A real kill -9 mid-transfer (file:// remote): no ref moves, nothing half-written is visible, the retry finishes."""
    remote = tmp_path / "remote"
    a = make_repo(tmp_path / "a")
    spec = make_spec("file", tmp_path, None)
    spec.url = remote.as_uri()
    spec.add_to(a)
    proc = run_killed(
        "from _remote_support import SigkillAfter\nfrom mvc.remotes import push\nfrom mvc.repo import Repo\n"
        "from store.backends import open_raw_backend\n"
        f"push(Repo({str(a.root)!r}), 'origin', backend=SigkillAfter(open_raw_backend({remote.as_uri()!r}), 'put_new', 7), jobs=2)\n",
        TESTS,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    raw = spec.raw()
    assert raw.read_ref("refs/heads/main") is None
    before = _remote_objects_complete(raw)
    counting = Counting(spec.raw())
    push(a, "origin", backend=counting)
    assert not set(counting.created) & set(before)

    b = _empty_repo(tmp_path / "b", spec)
    proc = run_killed(
        "from _remote_support import SigkillAfter\nfrom mvc.remotes import fetch\nfrom mvc.repo import Repo\n"
        "from store.backends import open_raw_backend\n"
        f"fetch(Repo({str(b.root)!r}), 'origin', backend=SigkillAfter(open_raw_backend({remote.as_uri()!r}), 'get_file', 12), jobs=2)\n",
        TESTS,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert b.refs.list() == {}
    assert_fsck_clean(b)
    assert list((b.dir / "tmp").glob("quarantine-*"))  # the killed process could not clean up...
    fetch(b, "origin")
    _no_quarantine(b)  # ...the next fetch did
    assert b.resolve("origin/main") == a.resolve("main")
    assert_fsck_clean(b)


# -- damaged remote objects -------------------------------------------------------------------
@pytest.mark.parametrize("damage", ["flipped", "truncated"])
def test_damaged_remote_blob_is_rejected(tmp_path, spec_fs, damage):
    spec = spec_fs
    a = make_repo(tmp_path / "a")
    spec.add_to(a)
    push(a, "origin")
    victim = _tensor_blobs(a)[7]
    raw = spec.raw()
    good = raw.get(object_key(victim))
    bad = good[: len(good) // 2] if damage == "truncated" else bytes([good[0] ^ 0xFF]) + good[1:]
    raw.delete(object_key(victim))
    raw.put_new(object_key(victim), bad)

    b = _empty_repo(tmp_path / "b", spec)
    with pytest.raises(RemoteCorrupt) as e:
        fetch(b, "origin")
    assert victim in e.value.message
    assert ("bytes" in e.value.message) == (damage == "truncated")
    assert not b.objects.has(victim)
    assert b.refs.list() == {}
    assert_fsck_clean(b)
    _no_quarantine(b)
    with pytest.raises(RemoteCorrupt):
        clone(spec.url, tmp_path / "c", endpoint_url=spec.endpoint)
    assert not (tmp_path / "c").exists()  # a failed clone leaves nothing behind

    # a repaired remote works again, reusing what was verified
    raw.delete(object_key(victim))
    raw.put_new(object_key(victim), good)
    fetch(b, "origin")
    assert b.resolve("origin/main") == a.resolve("main")
    assert_fsck_clean(b)


def test_tampered_commit_and_damaged_refs_are_rejected(tmp_path):
    spec = make_spec("file", tmp_path, None)
    a = make_repo(tmp_path / "a")
    spec.add_to(a)
    cid = push(a, "origin").updates[0].new
    raw = spec.raw()
    # a commit whose bytes were edited (another message): the id no longer matches
    original = raw.get(object_key(cid))
    raw.delete(object_key(cid))
    raw.put_new(object_key(cid), original.replace(b'"base"', b'"evil"'))
    b = _empty_repo(tmp_path / "b", spec)
    with pytest.raises(RemoteCorrupt, match=cid):
        fetch(b, "origin")
    assert b.refs.list() == {} and not b.objects.has(cid)
    raw.delete(object_key(cid))
    raw.put_new(object_key(cid), original)
    # a ref that names a blob, not a commit
    blob = _tensor_blobs(a)[0]
    version = raw.read_ref("refs/heads/main")[1]
    raw.swap_ref("refs/heads/main", version, f"{blob}\n".encode())
    with pytest.raises(RemoteCorrupt, match="should be a commit"):
        fetch(b, "origin")
    assert b.refs.list() == {}
    # a ref with garbage in it
    raw.swap_ref("refs/heads/main", raw.read_ref("refs/heads/main")[1], b"not a commit id\n")
    with pytest.raises(RemoteCorrupt, match="damaged"):
        fetch(b, "origin")
    # ref names that would be refused locally are ignored, not created
    raw.swap_ref("refs/heads/main", raw.read_ref("refs/heads/main")[1], f"{cid}\n".encode())
    raw.put_new("refs/heads/.hidden", f"{cid}\n".encode())
    raw.put_new("refs/remotes/x/y", f"{cid}\n".encode())
    fetched = fetch(b, "origin")
    assert [u.ref for u in fetched.updates] == ["refs/remotes/origin/main"]
    assert_fsck_clean(b)


# -- transient errors ---------------------------------------------------------------------------
def test_transient_errors_are_retried(tmp_path, spec):
    a = make_repo(tmp_path / "a")
    spec.add_to(a)
    a.notes.add(a.resolve("main"), {"eval": 1}, "ci")
    flaky = Flaky(spec.raw(), every=3)
    retrying = RetryBackend(flaky, attempts=4, sleep=lambda s: None)
    push(a, "origin", backend=retrying)
    assert flaky.failures >= 5 and retrying.retries == flaky.failures

    b = _empty_repo(tmp_path / "b", spec)
    flaky = Flaky(spec.raw(), every=4)
    fetch(b, "origin", backend=RetryBackend(flaky, attempts=4, sleep=lambda s: None))
    assert flaky.failures >= 3
    assert b.resolve("origin/main") == a.resolve("main")
    assert [n.data for _i, n in b.notes.list(a.resolve("main"))] == [{"eval": 1}]
    assert_fsck_clean(b)


class Down(Wrapper):
    def __init__(self, inner, error) -> None:
        super().__init__(inner)
        self.error = error
        self.calls = 0

    def _call(self, name, *args):
        self.calls += 1
        raise self.error(f"injected {self.error.__name__}")


def test_retries_are_bounded_and_permanent_errors_are_not_retried(tmp_path):
    spec = make_spec("file", tmp_path, None)
    a = make_repo(tmp_path / "a")
    spec.add_to(a)
    sleeps: list[float] = []
    down = Down(spec.raw(), RemoteUnavailable)
    with pytest.raises(RemoteUnavailable, match="gave up after 4 attempts"):
        push(a, "origin", backend=RetryBackend(down, attempts=4, base_delay=0.1, max_delay=1.0, sleep=sleeps.append))
    assert down.calls == 4 and len(sleeps) == 3
    assert 0.05 <= sleeps[0] <= 0.1 and 0.1 <= sleeps[1] <= 0.2 and 0.2 <= sleeps[2] <= 0.4  # exponential, jittered
    for error in (RemoteAccessDenied, RemoteNotFound):
        denied = Down(spec.raw(), error)
        with pytest.raises(error):
            push(a, "origin", backend=RetryBackend(denied, attempts=4, sleep=sleeps.append))
        assert denied.calls == 1


# -- permanent errors through the CLI (S3 over HTTP) --------------------------------------------
def _mvc(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mvc", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def test_permanent_errors_are_explained(tmp_path, s3_endpoint):
    a = make_repo(tmp_path / "a").root
    env = {k: v for k, v in os.environ.items() if k not in ("MVC_REPO", "MVC_DEBUG")}
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead_port = s.getsockname()[1]  # closed when the block ends: nothing listens there
    repo = Repo(a)
    add_remote(repo, "nobucket", "s3://no-such-bucket-mvc/models", endpoint_url=s3_endpoint)
    add_remote(repo, "origin", make_spec("s3", tmp_path, s3_endpoint).url, endpoint_url=s3_endpoint)
    add_remote(repo, "dead", "s3://whatever/models", endpoint_url=f"http://127.0.0.1:{dead_port}")

    proc = _mvc("push", "nobucket", cwd=a, env=env)
    assert proc.returncode == RemoteNotFound.exit_code, proc.stderr
    assert "bucket 'no-such-bucket-mvc' does not exist" in proc.stderr and "hint: " in proc.stderr

    no_creds = {k: v for k, v in env.items() if not k.startswith("AWS_")}
    no_creds.update(AWS_CONFIG_FILE="/nonexistent/c", AWS_SHARED_CREDENTIALS_FILE="/nonexistent/k", AWS_EC2_METADATA_DISABLED="true")
    proc = _mvc("push", "origin", cwd=a, env=no_creds)
    assert proc.returncode == RemoteAccessDenied.exit_code, proc.stderr
    assert "no usable AWS credentials" in proc.stderr and "AWS_PROFILE" in proc.stderr

    start = time.monotonic()
    proc = _mvc("fetch", "dead", cwd=a, env=env)
    elapsed = time.monotonic() - start
    assert proc.returncode == RemoteUnavailable.exit_code, proc.stderr
    assert "cannot reach" in proc.stderr and "gave up after 5 attempts" in proc.stderr
    assert elapsed < 20, f"a dead endpoint took {elapsed:.1f}s to report"
    assert Repo(a).refs.list("refs/remotes/") == {}


class _AwsError(Exception):
    """Shaped like botocore's ClientError (``.response``), without importing botocore."""

    def __init__(self, code: str, status: int) -> None:
        super().__init__(f"An error occurred ({code})")
        self.response = {"Error": {"Code": code, "Message": code}, "ResponseMetadata": {"HTTPStatusCode": status}}


def _wrapped(inner: Exception, outer: type[Exception] = OSError) -> Exception:
    """How s3fs hands errors over: a translated OSError whose cause is the botocore error."""
    e = outer(str(inner))
    e.__cause__ = inner
    return e


@pytest.mark.parametrize(
    ("raised", "expected"),
    [
        (_wrapped(_AwsError("AccessDenied", 403), PermissionError), RemoteAccessDenied),
        (_wrapped(_AwsError("InvalidAccessKeyId", 403)), RemoteAccessDenied),
        (_wrapped(_AwsError("SignatureDoesNotMatch", 403)), RemoteAccessDenied),
        (_wrapped(_AwsError("NoSuchBucket", 404), FileNotFoundError), RemoteNotFound),
        (_wrapped(_AwsError("SlowDown", 503)), RemoteUnavailable),
        (_wrapped(_AwsError("InternalError", 500)), RemoteUnavailable),
        (_wrapped(_AwsError("PreconditionFailed", 412)), RemoteMoved),
        (type("NoCredentialsError", (Exception,), {})("Unable to locate credentials"), RemoteAccessDenied),
        (type("EndpointConnectionError", (Exception,), {})("Could not connect"), RemoteUnavailable),
        (ConnectionResetError("reset by peer"), RemoteUnavailable),
        (TimeoutError("timed out"), RemoteUnavailable),
    ],
)
def test_s3_errors_are_classified(raised, expected):
    """Which failures are retried (transient) and which are explained at once (permanent)."""
    from store.backends.s3 import S3Backend

    backend = S3Backend.__new__(S3Backend)  # no client needed to classify an error
    backend.url, backend.bucket, backend.prefix, backend.endpoint_url = "s3://b/p", "b", "p/", None
    error = backend._translate(raised, "refs/heads/main")
    assert type(error) is expected, (raised, error)
    assert error.hint and "\n" not in error.message
