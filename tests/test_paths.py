"""Hostile paths and names: nothing read from disk or the store may write outside its target.

Trees are crafted by hand (canonical JSON written straight into the store) because mvc itself
never produces a bad one; a hostile remote or a damaged disk could.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from _files import files_under

from mvc.checkout import checkout, export
from mvc.repo import Repo
from store import FORMAT_VERSION
from store.errors import InvalidRefName, ObjectCorrupt, UnsafePath
from store.model import Commit, canonical_json
from store.paths import check_ref_name, check_tree_path
from store.refs import full_ref_name

# --- helpers ---------------------------------------------------------------------------------




def listing(d: Path, skip: tuple[str, ...] = ()) -> set[str]:
    """Every path under ``d`` (files, dirs, links), relative, excluding top-level names in ``skip``."""
    out = set()
    for dirpath, dirs, names in os.walk(d):
        rel_dir = Path(dirpath).relative_to(d)
        if rel_dir.parts and rel_dir.parts[0] in skip:
            continue
        for n in dirs + names:
            rel = (rel_dir / n).as_posix()
            if rel.split("/")[0] not in skip:
                out.add(rel)
    return out


def object_count(repo: Repo) -> int:
    return sum(1 for _ in repo.objects.iter_ids())


# --- check_tree_path / check_ref_name --------------------------------------------------------

GOOD_PATHS = ["config.json", "a/b/c.safetensors", "..hidden", "x..y", ".mvcignore", "sub/.mvc", "ünï/cødé.txt", "a b/c d", "...", "v1.0/x"]
BAD_PATHS = [
    "",
    ".",
    "..",
    "../x",
    "a/../b",
    "a/..",
    "sub/../../evil",
    "/etc/passwd",
    "/",
    "//x",
    "a\x00b",
    "a\\b",
    "..\\evil",
    "a\nb",
    "a\rb",
    "a\tb",
    "a\x1fb",
    "a\x7fb",
    "\x1b[31m",
    ".mvc",
    ".mvc/HEAD",
    ".mvc/objects/ab/cdef",
    ".mvc/refs/heads/main",
    "C:/Windows/x",
    "c:x",
    "D:",
    "a//b",
    "a/",
    "./a",
    "a/./b",
]


@pytest.mark.parametrize("path", GOOD_PATHS)
def test_safe_tree_paths_are_accepted(path):
    assert check_tree_path(path) == path


@pytest.mark.parametrize("path", BAD_PATHS, ids=repr)
def test_hostile_tree_paths_are_rejected(path):
    with pytest.raises(UnsafePath):
        check_tree_path(path)


@pytest.mark.parametrize("value", [None, b"config.json", 3, ["a"]], ids=repr)
def test_non_text_tree_paths_are_rejected(value):
    with pytest.raises(UnsafePath):
        check_tree_path(value)


def test_undecodable_tree_path_is_rejected():
    # what os.scandir returns for a file name that is not UTF-8: it cannot be stored in a tree
    with pytest.raises(UnsafePath):
        check_tree_path(os.fsdecode(b"\xffbad.bin"))


GOOD_REFS = ["main", "exp/lora-r8", "v1.0", "feature_x", "a-b", "a/b/c", "release-2024.01", "x@y", "a.b"]
BAD_REFS = [
    "",
    "../x",
    "a/../b",
    "a..b",
    "..",
    ".",
    "a b",
    "a\tb",
    "a\x00b",
    "a\nb",
    "a\x7fb",
    "x~1",
    "x^",
    "x^2",
    "a:b",
    "a?b",
    "a*b",
    "a[b",
    "a\\b",
    "-x",
    "--force",
    "/x",
    "x/",
    "x.",
    "a//b",
    "HEAD",
    "@",
    ".hidden",
    "a/.b",
    "x.lock",
    "a/b.lock/c",
    "a@{1}",
    "x" * 256,
]


@pytest.mark.parametrize("name", GOOD_REFS)
def test_good_ref_names_are_accepted(name):
    assert check_ref_name(name) == name
    assert full_ref_name("heads", name) == f"refs/heads/{name}"


@pytest.mark.parametrize("name", BAD_REFS, ids=repr)
def test_bad_ref_names_are_rejected(name):
    with pytest.raises(InvalidRefName):
        check_ref_name(name)
    with pytest.raises(InvalidRefName):
        full_ref_name("tags", name)


def test_refstore_rejects_bad_full_names(repo, tmp_path):
    cid = _commit_something(repo, tmp_path)
    for full in ["refs/heads/../../HEAD", "refs/heads/a..b", "refs/evil/x", "HEADS", "refs/heads", "/refs/heads/x", "refs/heads/x~1"]:
        with pytest.raises(InvalidRefName):
            repo.refs.compare_and_swap(full, None, cid, message="hostile")
    assert set(repo.refs.list()) == {"refs/heads/main"}


def _commit_something(repo: Repo, tmp_path: Path) -> str:
    model = tmp_path / "model"
    model.mkdir(exist_ok=True)
    (model / "config.json").write_text('{"a": 1}')
    (model / "sub").mkdir(exist_ok=True)
    (model / "sub" / "weights.bin").write_bytes(b"\x00\x01" * 100)
    return repo.commit(model, "init").id


# the CLI for a few (the API tests above cover every rule)
CLI_BAD_REFS = [("branch", "../x"), ("tag", "a..b"), ("branch", "x~1"), ("tag", "a:b"), ("branch", "-x")]


def test_cli_refuses_bad_branch_and_tag_names(repo, tmp_path, mvc):
    _commit_something(repo, tmp_path)
    refs_before = listing(repo.dir / "refs")
    logs_before = listing(repo.dir / "logs")
    top_before = listing(repo.root, skip=(".mvc",)) | {p.name for p in repo.dir.iterdir()}
    for verb, name in CLI_BAD_REFS:
        proc = mvc(verb, "--", name, cwd=repo.root)
        assert proc.returncode == InvalidRefName.exit_code, (verb, name, proc.returncode, proc.stderr)
        assert "error:" in proc.stderr and "Traceback" not in proc.stderr
    assert listing(repo.dir / "refs") == refs_before
    assert listing(repo.dir / "logs") == logs_before
    assert listing(repo.root, skip=(".mvc",)) | {p.name for p in repo.dir.iterdir()} <= top_before | {"index.duckdb", "index.duckdb.wal"}
    assert not (repo.root.parent / "x").exists() and not (repo.dir / "x").exists()


# --- hand-crafted hostile trees --------------------------------------------------------------


def plant_tree(repo: Repo, entries: dict[str, bytes], branch: str = "evil") -> str:
    """Write a tree with these raw paths (no validation) and a commit and branch naming it."""
    raw = {}
    for path, content in entries.items():
        oid = repo.objects.put(content)
        raw[path] = {"kind": "blob", "id": oid, "size": len(content), "hash": oid, "mode": "644"}
    tid = repo.objects.put(canonical_json({"type": "tree", "v": FORMAT_VERSION, "entries": raw}))
    cid = repo.objects.put(Commit(tree=tid, parents=(), author="mallory", time="2024-01-01T00:00:00.000000Z", message="evil").encode())
    repo.refs.compare_and_swap(f"refs/heads/{branch}", None, cid, message="planted")
    return cid


def hostile_paths(tmp_path: Path) -> list[str]:
    return [
        "../evil",
        "../../evil",
        "sub/../../evil",
        str(tmp_path / "abs_evil"),
        "/tmp/mvc-test-abs-evil",
        ".mvc/HEAD",
        "..\\evil",
        "C:/evil",
        "a/./b",
        "x\x00y",
        "a//b",
    ]


@pytest.mark.parametrize("index", range(11))
def test_checkout_of_crafted_tree_with_hostile_path_writes_nothing(repo, tmp_path, mvc, index):
    path = hostile_paths(tmp_path)[index]
    via_cli = index in (0, 3, 5)  # the CLI for a few; the API for all
    plant_tree(repo, {"good.txt": b"good", path: b"EVIL"})
    outer = tmp_path / "outer"
    target = outer / "target"
    outer.mkdir()
    before = listing(tmp_path, skip=("repo",))
    head_before = (repo.dir / "HEAD").read_bytes()

    if via_cli:
        proc = mvc("checkout", "evil", "-o", str(target), cwd=repo.root)
        assert proc.returncode in (UnsafePath.exit_code, ObjectCorrupt.exit_code), (proc.returncode, proc.stderr)
        assert "Traceback" not in proc.stderr
    with pytest.raises((UnsafePath, ObjectCorrupt)):
        export(repo, "evil", target)

    after = listing(tmp_path, skip=("repo",))
    assert after - before <= {"outer/target"}, f"written outside the target: {after - before}"
    assert not target.exists() or files_under(target) == {}
    assert not Path("/tmp/mvc-test-abs-evil").exists()
    assert (repo.dir / "HEAD").read_bytes() == head_before


def test_crafted_tree_with_mvc_path_cannot_touch_the_repository(repo, tmp_path):
    """A worktree at the repository root: a tree path ``.mvc/HEAD`` would overwrite the repo's own HEAD."""
    (repo.root / "config.json").write_text("{}")
    repo.commit(repo.root, "root as worktree")
    assert repo.worktree == repo.root
    plant_tree(repo, {"config.json": b"{}", ".mvc/HEAD": b"ref: refs/heads/pwned\n", ".mvc/config": b"[core]\n"})
    head_before = (repo.dir / "HEAD").read_bytes()
    config_before = (repo.dir / "config").read_bytes()
    with pytest.raises((UnsafePath, ObjectCorrupt)):
        checkout(repo, "evil", force=True)
    assert (repo.dir / "HEAD").read_bytes() == head_before
    assert (repo.dir / "config").read_bytes() == config_before


def test_crafted_tree_with_file_and_directory_of_same_name_is_refused(repo, tmp_path):
    plant_tree(repo, {"a": b"file", "a/b": b"file below a file"})
    with pytest.raises((UnsafePath, ObjectCorrupt)):
        export(repo, "evil", tmp_path / "t")
    assert not (tmp_path / "t").exists() or files_under(tmp_path / "t") == {}


# --- symlinks in the checkout target ---------------------------------------------------------


@pytest.fixture
def committed(repo, tmp_path):
    _commit_something(repo, tmp_path)
    return repo


def test_symlinked_subdirectory_in_target_is_refused(committed, tmp_path, mvc):
    repo = committed
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    target = tmp_path / "target"
    target.mkdir()
    os.symlink(elsewhere, target / "sub")
    with pytest.raises(UnsafePath):
        export(repo, "main", target, force=True)
    assert list(elsewhere.iterdir()) == []

    proc = mvc("checkout", "main", "-o", str(target), "--force", cwd=repo.root)
    assert proc.returncode == UnsafePath.exit_code, (proc.returncode, proc.stderr)
    assert list(elsewhere.iterdir()) == []
    assert (target / "sub").is_symlink()


def test_symlinked_deeper_directory_in_target_is_refused(repo, tmp_path):
    model = tmp_path / "model"
    (model / "a" / "b").mkdir(parents=True)
    (model / "a" / "b" / "w.bin").write_bytes(b"weights")
    repo.commit(model, "deep")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    target = tmp_path / "target"
    (target / "a").mkdir(parents=True)
    os.symlink(elsewhere, target / "a" / "b")
    with pytest.raises(UnsafePath):
        export(repo, "main", target, force=True)
    assert list(elsewhere.iterdir()) == []


def test_symlink_at_file_destination_is_replaced_not_followed(committed, tmp_path):
    repo = committed
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    victim = elsewhere / "victim.txt"
    victim.write_text("precious")
    victim_dir = elsewhere / "dir"
    victim_dir.mkdir()
    target = tmp_path / "target"
    (target / "sub").mkdir(parents=True)
    os.symlink(victim, target / "config.json")
    os.symlink(victim_dir, target / "sub" / "weights.bin")
    export(repo, "main", target, force=True)
    assert victim.read_text() == "precious"
    assert list(victim_dir.iterdir()) == []
    assert not (target / "config.json").is_symlink()
    assert (target / "config.json").read_text() == '{"a": 1}'
    assert not (target / "sub" / "weights.bin").is_symlink()
    assert (target / "sub" / "weights.bin").read_bytes() == b"\x00\x01" * 100


def test_worktree_checkout_refuses_symlinked_subdirectory(committed, tmp_path):
    repo = committed
    wt = repo.worktree
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.rmtree(wt / "sub")
    os.symlink(elsewhere, wt / "sub")
    with pytest.raises(UnsafePath):
        checkout(repo, "main", force=True)
    assert list(elsewhere.iterdir()) == []


# --- symlinks and special files in the model directory ---------------------------------------


def test_commit_refuses_symlink_with_hint(repo, tmp_path, mvc):
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    real = tmp_path / "real_weights.bin"
    real.write_bytes(b"real weights")
    os.symlink(real, model / "weights.bin")
    with pytest.raises(UnsafePath) as ei:
        repo.commit(model, "with link")
    assert "--follow-symlinks" in (ei.value.hint or "")
    assert object_count(repo) == 0 and repo.refs.list() == {}

    proc = mvc("commit", str(model), "-m", "x", cwd=repo.root)
    assert proc.returncode == UnsafePath.exit_code
    assert "--follow-symlinks" in proc.stderr
    assert object_count(repo) == 0

    cid = repo.commit(model, "followed", follow_symlinks=True).id
    entry = repo.read_tree(repo.read_commit(cid).tree).entries["weights.bin"]
    assert repo.objects.get(entry.id) == b"real weights"
    out = tmp_path / "out"
    export(repo, cid, out)
    assert not (out / "weights.bin").is_symlink()
    assert (out / "weights.bin").read_bytes() == b"real weights"


def test_follow_symlinks_stores_linked_directory_content(repo, tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    shared = tmp_path / "shared_tokenizer"
    shared.mkdir()
    (shared / "tokenizer.json").write_text('{"tok": true}')
    os.symlink(shared, model / "tok")
    cid = repo.commit(model, "dir link", follow_symlinks=True).id
    assert set(repo.read_tree(repo.read_commit(cid).tree).entries) == {"tok/tokenizer.json"}
    export(repo, cid, tmp_path / "out")
    assert (tmp_path / "out" / "tok" / "tokenizer.json").read_text() == '{"tok": true}'
    assert not (tmp_path / "out" / "tok").is_symlink()


def test_symlink_loop_with_follow_symlinks_is_a_clear_error(repo, tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    (model / "a.txt").write_text("a")
    os.symlink("..", model / "up")
    os.symlink(".", model / "self")
    with pytest.raises(UnsafePath):
        repo.commit(model, "loop", follow_symlinks=True)
    assert repo.refs.list() == {}
    os.unlink(model / "up")
    os.unlink(model / "self")
    os.symlink("me", model / "me")  # a link to itself: ELOOP when followed
    with pytest.raises(UnsafePath):
        repo.commit(model, "loop", follow_symlinks=True)
    assert repo.refs.list() == {} and object_count(repo) == 0


def test_dangling_symlink_is_refused(repo, tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    os.symlink(tmp_path / "nowhere", model / "gone.bin")
    with pytest.raises(UnsafePath):
        repo.commit(model, "dangling")
    with pytest.raises(UnsafePath):
        repo.commit(model, "dangling", follow_symlinks=True)
    assert object_count(repo) == 0


@pytest.mark.parametrize("follow", [False, True])
def test_fifo_is_refused(repo, tmp_path, follow):
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    os.mkfifo(model / "pipe")  # opening it would block forever
    if follow:
        os.symlink(model / "pipe", model / "link_to_pipe")
    with pytest.raises(UnsafePath):
        repo.commit(model, "fifo", follow_symlinks=follow)
    assert object_count(repo) == 0 and repo.refs.list() == {}


def test_undecodable_file_name_is_refused_before_storing(repo, tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    with open(os.path.join(os.fsencode(model), b"\xffweights.bin"), "wb") as f:
        f.write(b"data")
    with pytest.raises(UnsafePath):
        repo.commit(model, "bad name")
    assert object_count(repo) == 0 and repo.refs.list() == {}
