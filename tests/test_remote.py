"""Remotes: the backend contract every backend passes (file://, memory://, S3 over HTTP to moto),
push / fetch / pull / clone round trips on each, and the CLI against the local S3 endpoint.

The S3 tests talk to a real HTTP endpoint: moto's server on 127.0.0.1 (a free port), started
once per session with dummy credentials, as s3fs's own tests do.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from _remote_support import (
    N_TENSORS,
    TENSOR_BYTES,
    Counting,
    assert_fsck_clean,
    dummy_aws_env,
    files_of,
    make_repo,
    make_spec,
    s3_endpoint_with_bucket,
    tensor_name,
    write_model,
)

from mvc.errors import HistoriesDiverged, InvalidArgument, UnknownRemote
from mvc.remotes import Remote, add_remote, clone, fetch, get_remote, list_remotes, pull, pull_partial, push, remove_remote
from mvc.repo import Repo
from store.backends import RetryBackend, normalize_url
from store.errors import AlreadyExists, ObjectMissing, RemoteMoved, UnsafePath
from store.ids import hash_bytes
from store.transfer import object_key

pytest.importorskip("safetensors")
pytest.importorskip("s3fs")

KINDS = ["file", "memory", "s3"]


@pytest.fixture(scope="module")
def s3_endpoint():
    with dummy_aws_env():
        yield s3_endpoint_with_bucket()


def _spec(request, tmp_path):
    endpoint = request.getfixturevalue("s3_endpoint") if request.param == "s3" else None
    return make_spec(request.param, tmp_path, endpoint)


@pytest.fixture(params=KINDS)
def spec(request, tmp_path):
    """A fresh remote on every backend: the backend suite and the main flows run on each."""
    return _spec(request, tmp_path)


@pytest.fixture(params=["file", "s3"])
def spec_fs(request, tmp_path):
    """file:// and S3 (the two with real conditional writes) for the flows that need CAS on notes."""
    return _spec(request, tmp_path)


@pytest.fixture
def file_spec(tmp_path):
    """A file:// remote for the porcelain flows whose remote side is covered above (the CLI test runs them on S3)."""
    return make_spec("file", tmp_path, None)


# -- the backend contract -----------------------------------------------------------------------
class TestBackendContract:
    """What every backend promises (store/backends/base.py); restic's and dulwich's shared suites are the model."""

    def test_create_only_objects(self, spec):
        b = spec.raw()
        key = object_key(hash_bytes(b"one"))
        assert not b.exists(key)
        assert b.put_new(key, b"one") is True
        assert b.put_new(key, b"something else") is False  # never overwritten
        assert b.get(key) == b"one"
        assert b.exists(key)

    def test_put_from_file_and_get_file(self, spec, tmp_path):
        b = spec.raw()
        src = tmp_path / "src.bin"
        src.write_bytes(os.urandom(100_000))
        assert b.put_new("objects/ab/file", src) is True
        dest = tmp_path / "dest.bin"
        assert b.get_file("objects/ab/file", dest) == 100_000
        assert dest.read_bytes() == src.read_bytes()

    def test_missing_key(self, spec, tmp_path):
        b = spec.raw()
        with pytest.raises(ObjectMissing):
            b.get("objects/00/missing")
        with pytest.raises(ObjectMissing):
            b.get_file("objects/00/missing", tmp_path / "x")
        assert b.read_ref("refs/heads/nothing") is None
        assert b.list("refs/") == {}

    def test_list_is_recursive_with_sizes(self, spec):
        b = spec.raw()
        b.put_new("refs/heads/a", b"1" * 33)
        b.put_new("refs/heads/team/b", b"2" * 33)
        b.put_new("refs/tags/v1", b"3" * 33)
        b.put_new("objects/aa/bbbb", b"xyz")
        assert b.list("refs/heads/") == {"refs/heads/a": 33, "refs/heads/team/b": 33}
        assert set(b.list("refs/")) == {"refs/heads/a", "refs/heads/team/b", "refs/tags/v1"}
        assert b.list("objects/") == {"objects/aa/bbbb": 3}

    def test_compare_and_swap(self, spec):
        b = spec.raw()
        key = "refs/heads/main"
        b.swap_ref(key, None, b"one\n")
        data, v1 = b.read_ref(key)
        assert data == b"one\n"
        with pytest.raises(RemoteMoved, match="fetch first"):
            b.swap_ref(key, None, b"two\n")  # must not exist yet: it does
        b.swap_ref(key, v1, b"two\n")
        with pytest.raises(RemoteMoved):
            b.swap_ref(key, v1, b"three\n")  # stale version
        assert b.read_ref(key)[0] == b"two\n"
        v2 = b.read_ref(key)[1]
        b.swap_ref(key, v2, None)  # delete
        assert b.read_ref(key) is None
        with pytest.raises(RemoteMoved):
            b.swap_ref(key, v2, b"four\n")  # deleted meanwhile

    def test_racing_swaps_have_one_winner(self, spec):
        b = spec.raw()
        key = "refs/heads/race"
        b.swap_ref(key, None, b"start\n")
        _data, version = b.read_ref(key)
        wins, losses = [], []
        barrier = threading.Barrier(6)

        def contender(i: int) -> None:
            barrier.wait()
            try:
                b.swap_ref(key, version, f"writer {i}\n".encode())
                wins.append(i)
            except RemoteMoved:
                losses.append(i)

        threads = [threading.Thread(target=contender, args=(i,)) for i in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(wins) == 1 and len(losses) == 5
        assert b.read_ref(key)[0] == f"writer {wins[0]}\n".encode()

    def test_hostile_keys_refused(self, spec):
        b = spec.raw()
        for key in ("../escape", "objects/../../x", "/abs", "a//b", ""):
            with pytest.raises(UnsafePath):
                b.put_new(key, b"x")

    def test_retry_wrapper_passes_through(self, spec):
        b = RetryBackend(spec.raw(), attempts=2, sleep=lambda s: None)
        assert b.put_new("objects/cc/dd", b"v") is True
        assert b.get("objects/cc/dd") == b"v"
        with pytest.raises(ObjectMissing):
            b.get("objects/cc/ee")
        assert b.retries == 0  # permanent answers are not retried


def test_local_backend_publishes_only_complete_files(tmp_path):
    from store.backends.local import LocalBackend

    b = LocalBackend(tmp_path / "r")
    b.put_new("objects/ab/cd", b"x" * 1000)
    assert sorted(p.name for p in (tmp_path / "r" / "tmp").iterdir()) == []  # the temporary file is gone
    assert "tmp/" not in "".join(b.list(""))


def test_normalize_url(tmp_path):
    assert normalize_url(str(tmp_path / "r")) == (tmp_path / "r").as_uri()
    assert normalize_url("s3a://b/p/") == "s3://b/p"
    assert normalize_url("memory://x/y/") == "memory://x/y"


# -- configuration ------------------------------------------------------------------------------
def test_remote_config(repo, tmp_path):
    r = add_remote(repo, "origin", "s3://bucket/models", endpoint_url="http://127.0.0.1:9000", jobs=4)
    assert (r.url, r.endpoint_url, r.jobs) == ("s3://bucket/models", "http://127.0.0.1:9000", 4)
    add_remote(repo, "backup", str(tmp_path / "backup"))
    assert [x.name for x in list_remotes(Repo(repo.root))] == ["backup", "origin"]
    assert get_remote(Repo(repo.root), "backup").url == (tmp_path / "backup").as_uri()
    with pytest.raises(AlreadyExists):
        add_remote(repo, "origin", "s3://other/x")
    with pytest.raises(InvalidArgument, match="credentials"):
        add_remote(repo, "leaky", "s3://bucket/x?aws_secret_access_key=abc")
    with pytest.raises(InvalidArgument, match="credentials"):
        add_remote(repo, "leaky", "https://user:password@host/x")
    remove_remote(repo, "backup")
    with pytest.raises(UnknownRemote):
        get_remote(Repo(repo.root), "backup")
    text = (repo.dir / "config").read_text()
    assert "secret" not in text.lower() and "key_id" not in text.lower()


# -- push / fetch / pull / clone on every backend ------------------------------------------------
def _setup(tmp_path: Path, spec) -> tuple[Repo, Counting]:
    a = make_repo(tmp_path / "a")
    spec.add_to(a)
    return a, Counting(spec.raw())


def test_push_then_clone_round_trip(tmp_path, spec):
    a, backend = _setup(tmp_path, spec)
    base = a.resolve("main")
    a.create_ref("tags", "v1", "main", message="tag")
    from mvc.pins import pin

    pin(a, "prod", "main", reason="passed evals")
    a.notes.add(base, {"eval": {"mmlu": 0.61}}, "ci")
    result = push(a, "origin", ["main", "v1", "prod"], backend=backend)
    assert {u.ref: u.status for u in result.updates} == {"refs/heads/main": "created", "refs/tags/v1": "created", "refs/pins/prod": "created"}
    assert a.refs.read("refs/remotes/origin/main") == base
    # Same layout as .mvc: objects/ab/cdef…, refs/…, notes/<commit>
    keys = set(backend.list(""))
    assert {"refs/heads/main", "refs/tags/v1", "refs/pins/prod", f"notes/{base}", "HEAD", "config"} <= keys
    assert object_key(base) in keys

    repo_b, fetched, branch = clone(spec.url, tmp_path / "b", endpoint_url=spec.endpoint)
    assert branch == "main"
    assert repo_b.resolve("main") == base and repo_b.resolve("v1") == base and repo_b.resolve("pins/prod") == base
    assert files_of(repo_b.root) == files_of(a.root / "model")
    assert {n.data.get("kind") or "eval" for _i, n in repo_b.notes.list(base)} == {"pin", "eval"}
    from mvc.pins import verify

    assert verify(repo_b, "prod").reason == "passed evals"  # the pin's checksum record travelled with it
    assert_fsck_clean(repo_b)
    assert fetched.stats.objects_moved > 0 and fetched.commits == 1
    assert not list((repo_b.dir / "tmp").glob("quarantine-*"))


def test_only_missing_objects_move(tmp_path, spec):
    a, backend = _setup(tmp_path, spec)
    first = push(a, "origin", backend=backend)
    model_bytes = sum(len(v) for v in files_of(a.root / "model").values())
    assert first.stats.bytes_moved >= N_TENSORS * TENSOR_BYTES

    # Unchanged: one round of small requests (the ref), nothing written.
    backend.calls.clear()
    again = push(a, "origin", backend=backend)
    assert [u.status for u in again.updates] == ["up-to-date"]
    assert backend.calls == {"read_ref": 1}
    assert again.stats.bytes_moved == 0

    # A fine-tune that changed 2 of 20 tensors sends about 10% of the bytes.
    write_model(a.root / "model", changed=(3, 11))
    a.commit(a.root / "model", "fine-tune")
    backend.bytes_put = 0
    tuned = push(a, "origin", backend=backend)
    assert tuned.updates[0].status == "fast-forward"
    assert 2 * TENSOR_BYTES <= tuned.stats.bytes_moved <= 0.15 * model_bytes
    assert backend.bytes_put == tuned.stats.bytes_moved
    assert tuned.stats.bytes_skipped >= (N_TENSORS - 2) * TENSOR_BYTES


def test_pull_fast_forwards_and_fetches_only_the_change(tmp_path, spec):
    a, _ = _setup(tmp_path, spec)
    push(a, "origin")
    b, _f, _br = clone(spec.url, tmp_path / "b", endpoint_url=spec.endpoint)
    write_model(a.root / "model", changed=(5,), tokenizer="v2")
    tuned = a.commit(a.root / "model", "fine-tune", metrics={"loss": 1.25}).id
    push(a, "origin")

    counting = Counting(get_remote(b, "origin").open())
    result = pull(b, "origin", backend=counting)
    assert result.status == "fast-forward" and result.new == tuned
    assert b.resolve("main") == tuned and b.resolve("origin/main") == tuned
    assert files_of(b.root) == files_of(a.root / "model")  # the worktree was updated
    assert b.read_commit(tuned).metrics == {"loss": 1.25}
    assert result.fetch.stats.bytes_moved < 2 * TENSOR_BYTES + 10_000
    assert pull(b, "origin").status == "up-to-date"
    assert_fsck_clean(b)


def test_diverged_histories_say_how_to_merge(tmp_path, file_spec):
    spec = file_spec
    a, _ = _setup(tmp_path, spec)
    push(a, "origin")
    b, _f, _br = clone(spec.url, tmp_path / "b", endpoint_url=spec.endpoint)
    write_model(a.root / "model", changed=(1,))
    a.commit(a.root / "model", "a's tune")
    push(a, "origin")
    write_model(b.root, changed=(2,), seed=7)
    b.commit(b.root, "b's tune")
    mine = b.resolve("main")
    with pytest.raises(RemoteMoved, match="fetch first"):
        push(b, "origin")  # the remote has a commit b has never seen
    with pytest.raises(HistoriesDiverged) as e:
        pull(b, "origin")
    assert "mvc merge origin/main" in e.value.hint
    assert b.resolve("main") == mine  # nothing moved
    with pytest.raises(HistoriesDiverged):
        push(b, "origin")  # now b knows origin/main, and it is not an ancestor
    forced = push(b, "origin", force=True)
    assert forced.updates[0].status == "forced"


def test_tags_and_pins_are_not_moved_silently(tmp_path, file_spec):
    from mvc.errors import PinProtected

    spec = file_spec
    a, _ = _setup(tmp_path, spec)
    first = a.resolve("main")
    a.create_ref("tags", "v1", "main", message="t")
    push(a, "origin", tags=True, all_branches=True)
    write_model(a.root / "model", changed=(0,))
    second = a.commit(a.root / "model", "two").id
    a.create_ref("tags", "v1", "main", force=True, message="t")
    with pytest.raises(AlreadyExists):
        push(a, "origin", tags=True)
    from mvc.pins import pin

    pin(a, "prod", first)
    push(a, "origin", pins=True)
    pin(a, "prod", second, force=True)
    with pytest.raises(PinProtected):
        push(a, "origin", pins=True)
    push(a, "origin", pins=True, force=True)
    # fetch keeps a local tag that differs from the remote's, and says so
    b = make_repo(tmp_path / "b")
    spec.add_to(b)
    b.create_ref("tags", "v1", "main", message="own tag")
    result = fetch(b, "origin")
    statuses = {u.ref: u.status for u in result.updates}
    assert statuses["refs/tags/v1"] == "kept-local" and statuses["refs/pins/prod"] == "created"


def test_notes_added_later_travel(tmp_path, spec_fs):
    spec = spec_fs
    a, _ = _setup(tmp_path, spec)
    base = a.resolve("main")
    push(a, "origin")
    b, _f, _br = clone(spec.url, tmp_path / "b", endpoint_url=spec.endpoint)
    a.notes.add(base, {"eval": "from a"}, "a")
    b.notes.add(base, {"eval": "from b"}, "b")
    assert push(a, "origin").notes == 1  # the branch did not move, the note still goes
    assert push(b, "origin").notes == 1  # merged with a's on the remote, not overwritten
    assert fetch(a, "origin").notes == 1
    assert sorted(n.data["eval"] for _i, n in a.notes.list(base)) == ["from a", "from b"]
    assert push(a, "origin").notes == 0


def test_partial_pull_only_some_files(tmp_path, file_spec):
    spec = file_spec
    a, _ = _setup(tmp_path, spec)
    push(a, "origin")
    b = Repo.init(tmp_path / "b")
    spec.add_to(b)
    out = tmp_path / "partial"
    part = pull_partial(b, "origin", "main", ["tokenizer*", "config.json"], output=out)
    assert part.files == ["config.json", "tokenizer.json", "tokenizer_config.json"]
    assert sorted(files_of(out)) == part.files
    assert files_of(out)["tokenizer.json"] == (a.root / "model" / "tokenizer.json").read_bytes()
    assert part.stats.bytes_moved < TENSOR_BYTES  # no weights came
    assert b.refs.list() == {}  # no ref moved: the commit's closure is not here

    tens = pull_partial(b, "origin", "main", [f"model.safetensors:{tensor_name(1)}", "model.safetensors:*.07.*"], output=tmp_path / "t")
    assert tens.tensors == {"model.safetensors": [tensor_name(1), tensor_name(7)]}
    from safetensors.numpy import load_file

    got = load_file(str(tmp_path / "t" / "model.safetensors"))
    full = load_file(str(a.root / "model" / "model.safetensors"))
    assert sorted(got) == [tensor_name(1), tensor_name(7)]
    assert all((got[k] == full[k]).all() for k in got)
    assert 2 * TENSOR_BYTES <= tens.stats.bytes_moved < 3 * TENSOR_BYTES
    with pytest.raises(InvalidArgument):
        pull_partial(b, "origin", "main", ["nothing-matches*"], output=out)


def test_fetch_with_nothing_new_is_cheap(tmp_path, spec):
    a, _ = _setup(tmp_path, spec)
    push(a, "origin")
    counting = Counting(spec.raw())
    result = fetch(a, "origin", backend=counting)
    assert result.commits == 0 and result.stats.bytes_moved == 0
    assert counting.calls["get_file"] == 0 and counting.calls["put_new"] == 0


# -- CLI against the local S3 endpoint ------------------------------------------------------------
def _cli(*args: str, cwd: Path, env: dict | None = None, check: bool = True) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if k not in ("MVC_REPO", "MVC_DEBUG")}
    full.update(env or {})
    proc = subprocess.run([sys.executable, "-m", "mvc", *args], cwd=cwd, env=full, capture_output=True, text=True, timeout=120)
    if check and proc.returncode != 0:
        raise AssertionError(f"mvc {' '.join(args)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def test_cli_push_clone_pull_over_s3(tmp_path, s3_endpoint):
    url = make_spec("s3", tmp_path, s3_endpoint).url
    repo_a = make_repo(tmp_path / "a")  # init and commit are the API's here: the remote verbs are the CLI's
    a = repo_a.root
    _cli("remote", "add", "origin", url, "--endpoint-url", s3_endpoint, "--jobs", "4", cwd=a)
    assert get_remote(Repo(a), "origin") == Remote("origin", url, s3_endpoint, 4)
    assert "testing" not in (a / ".mvc" / "config").read_text()  # the (dummy) credentials never reach the config
    pushed = json.loads(_cli("push", "--json", cwd=a).stdout)
    assert pushed["updates"][0]["status"] == "created" and pushed["bytes_moved"] > 0

    # clone with the endpoint from AWS_ENDPOINT_URL (no flag): botocore reads it
    env = {"AWS_ENDPOINT_URL": s3_endpoint}
    proc = _cli("clone", url, "b", cwd=tmp_path, env=env)
    assert "Cloned" in proc.stdout and files_of(tmp_path / "b") == files_of(a / "model")

    write_model(a / "model", changed=(4,))
    Repo(a).commit(a / "model", "tune")
    _cli("push", "origin", "main", cwd=a)
    proc = _cli("pull", cwd=tmp_path / "b", env=env)
    assert "Fast-forward main" in proc.stdout
    assert files_of(tmp_path / "b") == files_of(a / "model")
    assert Repo(tmp_path / "b").read_commit(Repo(tmp_path / "b").resolve("main")).message == "tune"

    _cli("pull", "origin", "main", "--only", "tokenizer*,config.json", "-o", str(tmp_path / "p"), cwd=tmp_path / "b", env=env)
    assert sorted(files_of(tmp_path / "p")) == ["config.json", "tokenizer.json", "tokenizer_config.json"]


def test_cli_errors_have_exit_codes(tmp_path):
    a = make_repo(tmp_path / "a").root
    proc = _cli("push", "nowhere", cwd=a, check=False)
    assert proc.returncode == UnknownRemote.exit_code and "mvc remote add" in proc.stderr
    proc = _cli("remote", "add", "x", "s3://b/p?token=abc", cwd=a, check=False)
    assert proc.returncode == InvalidArgument.exit_code and "credentials" in proc.stderr
    remote = tmp_path / "remote"
    _cli("remote", "add", "origin", str(remote), cwd=a)
    _cli("push", cwd=a)
    b, _f, _br = clone(remote.as_uri(), tmp_path / "b")
    write_model(a / "model", changed=(1,))
    _cli("commit", "model", "-m", "a", cwd=a)
    _cli("push", cwd=a)
    write_model(b.root, changed=(2,), seed=5)
    b.commit(b.root, "b")
    proc = _cli("push", cwd=b.root, check=False)
    assert proc.returncode == RemoteMoved.exit_code and "fetch first" in proc.stderr
    proc = _cli("pull", cwd=b.root, check=False)
    assert proc.returncode == HistoriesDiverged.exit_code
    assert "diverged" in proc.stderr and "mvc merge origin/main" in proc.stderr


def test_help_does_not_import_s3fs(tmp_path):
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "mvc", "--help"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    imported = {line.split("|")[-1].strip().split(".")[0] for line in proc.stderr.splitlines() if line.startswith("import time:")}
    assert not imported & {"s3fs", "boto3", "botocore", "aiobotocore", "aiohttp", "fsspec"}
    for verb in ("remote", "push", "fetch", "pull", "clone"):
        assert verb in proc.stdout
