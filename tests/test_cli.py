"""End-to-end tests of the ``mvc`` command line on real (tiny) transformers models.

Every command runs in a subprocess through ``python -m mvc``; exit codes are compared with
the error classes' ``exit_code``; ``--json`` output is parsed and checked against values
computed independently (safetensors headers read here, file bytes compared here).
"""

from __future__ import annotations

import json
import shutil
import stat
import struct
import subprocess
from pathlib import Path
from typing import Annotated

import pytest
import typer
import typer.main
from _cli import run_cli
from typer.testing import CliRunner

from mvc.cli import app
from mvc.errors import (
    AlreadyExists,
    DirtyWorktree,
    HookRejected,
    InvalidArgument,
    NotARepository,
    NothingToCommit,
    UnknownRevision,
)
from mvc.repo import Repo
from store.ids import hash_bytes
from store.model import Commit, Tree

ENV = {"HF_HUB_OFFLINE": "1", "MVC_AUTHOR": "Test Author <t@example.com>"}


def run(*args: str, cwd: Path, env: dict | None = None, check: bool = False, process: bool = False) -> subprocess.CompletedProcess:
    return run_cli(*args, cwd=cwd, env={**ENV, **(env or {})}, check=check, process=process)


def run_json(*args: str, cwd: Path, env: dict | None = None, process: bool = False):
    proc = run(*args, "--json", cwd=cwd, env=env, check=True, process=process)
    return json.loads(proc.stdout)


def files_of(directory: Path) -> dict[str, bytes]:
    """Every regular file under ``directory`` (relative path -> bytes)."""
    out = {}
    for p in sorted(Path(directory).rglob("*")):
        if p.is_file() and ".mvc" not in p.relative_to(directory).parts:
            out[p.relative_to(directory).as_posix()] = p.read_bytes()
    return out


def safetensors_names(path: Path) -> list[str]:
    """Tensor names read straight from a safetensors header (independent of mvc's parser)."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    return sorted(k for k in header if k != "__metadata__")


def assert_clean_error(proc: subprocess.CompletedProcess, exc: type, *, contains: str | None = None) -> None:
    """One ``error:`` line, one ``hint:`` line (when the error has one), the class's code, no traceback."""
    assert proc.returncode == exc.exit_code, f"expected {exc.__name__} ({exc.exit_code}), got {proc.returncode}\n{proc.stderr}"
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert "Traceback" not in proc.stderr, proc.stderr
    errors = [ln for ln in lines if ln.startswith("error: ")]
    assert len(errors) == 1, proc.stderr
    assert lines[0].startswith("error: "), proc.stderr
    hints = [ln for ln in lines if ln.startswith("hint: ")]
    assert len(hints) <= 1, proc.stderr
    if contains:
        assert contains.lower() in errors[0].lower(), proc.stderr


# -- a shared history: base and tweaked model committed into the same directory ---------------
class History:
    root: Path
    model: Path
    base_src: Path
    tweaked_src: Path
    changed: list[str]
    base: str
    tweaked: str
    status_before: dict
    status_before_text: str
    status_again: dict


@pytest.fixture(scope="module")
def history(tmp_path_factory, _tiny_base, _tiny_tweaked) -> History:
    h = History()
    h.root = tmp_path_factory.mktemp("cli-history")
    h.base_src = _tiny_base
    h.tweaked_src, h.changed = _tiny_tweaked
    h.model = h.root / "model"
    shutil.copytree(h.base_src, h.model)
    out = run("init", cwd=h.root, check=True, process=True)
    assert (h.root / ".mvc" / "HEAD").is_file(), out
    res = run_json("commit", "model", "-m", "base model", cwd=h.root, process=True)
    h.base = res["commit"]
    assert res["branch"] == "main"
    # the tweak overwrites the files in place, like save_pretrained into the same directory
    shutil.copytree(h.tweaked_src, h.model, dirs_exist_ok=True)
    h.status_before = run_json("status", cwd=h.root, process=True)
    h.status_before_text = run("status", cwd=h.root, check=True).stdout
    # a second status: files read by the first are now in the stat cache but not in the store
    h.status_again = run_json("status", cwd=h.root)
    res = run_json("commit", "-m", "tweak\n\nnudged a few tensors", cwd=h.root)
    h.tweaked = res["commit"]
    return h


def test_init_twice_fails(history):
    assert_clean_error(run("init", cwd=history.root, process=True), AlreadyExists)


def test_log_json(history):
    log = run_json("log", cwd=history.root)
    assert [c["id"] for c in log] == [history.tweaked, history.base]
    assert log[0]["parents"] == [history.base]
    assert log[1]["parents"] == []
    assert log[0]["message"] == "tweak\n\nnudged a few tensors"
    assert log[1]["message"] == "base model"
    assert {c["author"] for c in log} == {ENV["MVC_AUTHOR"]}
    assert run_json("log", "-n", "1", cwd=history.root)[0]["id"] == history.tweaked


def test_log_text(history):
    text = run("log", cwd=history.root, check=True).stdout
    assert f"commit {history.tweaked} (HEAD -> main)" in text
    assert f"commit {history.base}" in text
    assert text.index(history.tweaked) < text.index(history.base)
    one = run("log", "--oneline", cwd=history.root, check=True).stdout.splitlines()
    assert [ln.split()[0] for ln in one] == [history.tweaked[:12], history.base[:12]]


def test_show_json(history):
    for cid, src in ((history.base, history.base_src), (history.tweaked, history.tweaked_src)):
        d = run_json("show", cid, cwd=history.root)
        assert d["id"] == cid
        src_files = files_of(src)
        assert [f["path"] for f in d["files"]] == sorted(src_files)
        assert {f["path"]: f["size"] for f in d["files"]} == {p: len(b) for p, b in src_files.items()}
        assert d["total_bytes"] == sum(len(b) for b in src_files.values())
        n = len(safetensors_names(src / "model.safetensors"))
        assert n > 10
        assert d["tensors"]["count"] == n
        st = [f for f in d["files"] if f["path"] == "model.safetensors"][0]
        assert st["tensors"] == n
        assert "float32" in {k.lower() for k in d["tensors"]["parameters_by_dtype"]} or "F32" in d["tensors"]["parameters_by_dtype"]
    assert run_json("show", cwd=history.root)["parents"] == [history.base]
    text = run("show", "HEAD", cwd=history.root, check=True).stdout
    assert text.startswith(f"commit {history.tweaked}")
    assert f"parent {history.base}" in text


def test_status_lists_exactly_the_changed_tensors(history):
    st = history.status_before
    assert st["clean"] is False
    assert st["head"] == history.base
    assert st["branch"] == "main"
    modified = sorted(t["name"] for t in st["tensors"] if t["change"] == "modified")
    assert modified == sorted(history.changed)
    assert all(t["change"] == "modified" for t in st["tensors"]), st["tensors"]
    changed_files = {f["path"] for f in st["files"]}
    expected_files = {p for p, b in files_of(history.tweaked_src).items() if files_of(history.base_src)[p] != b}
    assert changed_files == expected_files
    for name in history.changed:
        assert name in history.status_before_text


def test_status_twice_still_lists_changed_tensors(history):
    # the first status cached the new file's stat; the second must not report every tensor removed
    assert history.status_again["tensors"] == history.status_before["tensors"]
    assert history.status_again["files"] == history.status_before["files"]


def test_status_clean_after_commit(history):
    st = run_json("status", cwd=history.root)
    assert st["clean"] is True
    assert st["files"] == [] and st["tensors"] == []
    assert st["head"] == history.tweaked
    assert "nothing to commit" in run("status", cwd=history.root, check=True).stdout


def test_checkout_output_is_byte_exact_and_loads(history, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM

    for cid, src in ((history.base, history.base_src), (history.tweaked, history.tweaked_src)):
        out = tmp_path / cid[:8]
        run("checkout", cid, "-o", str(out), cwd=history.root, check=True)
        assert files_of(out) == files_of(src)
        got = AutoModelForCausalLM.from_pretrained(out).state_dict()
        want = AutoModelForCausalLM.from_pretrained(src).state_dict()
        assert got.keys() == want.keys()
        for k in want:
            assert torch.equal(got[k], want[k]), k
    # HEAD did not move, the worktree was not touched
    assert run_json("status", cwd=history.root)["clean"] is True
    # refusing a non-empty directory
    proc = run("checkout", history.base, "-o", str(tmp_path / history.base[:8]), cwd=history.root)
    assert_clean_error(proc, AlreadyExists)


def test_revisions(history):
    def resolve(rev: str) -> str:
        return run_json("show", rev, cwd=history.root)["id"]

    assert resolve("HEAD") == history.tweaked
    assert resolve("HEAD~1") == history.base
    assert resolve("HEAD~") == history.base
    assert resolve("main^") == history.base
    assert resolve("main~0") == history.tweaked
    assert resolve(history.tweaked[:10]) == history.tweaked
    assert resolve(history.base[:6] + "~0") == history.base
    proc = run("show", "HEAD~2", cwd=history.root)
    assert_clean_error(proc, UnknownRevision)
    proc = run("show", "no-such-branch", cwd=history.root, process=True)
    assert_clean_error(proc, UnknownRevision, contains="no-such-branch")


def test_tag_and_branch_revisions(history):
    run("tag", "v1", history.base, cwd=history.root, check=True)
    run("branch", "old", "HEAD~1", cwd=history.root, check=True)
    try:
        assert run_json("show", "v1", cwd=history.root)["id"] == history.base
        assert run_json("show", "old", cwd=history.root)["id"] == history.base
        assert run_json("show", "tags/v1", cwd=history.root)["id"] == history.base
        tags = run_json("tag", cwd=history.root)
        assert tags == [{"name": "v1", "commit": history.base}]
        branches = {b["name"]: b for b in run_json("branch", cwd=history.root)}
        assert branches["old"]["commit"] == history.base and not branches["old"]["current"]
        assert branches["main"]["commit"] == history.tweaked and branches["main"]["current"]
        assert_clean_error(run("tag", "v1", cwd=history.root), AlreadyExists)
        assert_clean_error(run("branch", "old", cwd=history.root), AlreadyExists)
        decorated = run("log", "--oneline", cwd=history.root, check=True).stdout
        assert "tag: v1" in decorated
    finally:
        run("tag", "-d", "v1", cwd=history.root, check=True)
        run("branch", "-d", "old", cwd=history.root, check=True)
    assert_clean_error(run("show", "v1", cwd=history.root), UnknownRevision)


def test_ambiguous_prefix(repo):
    tree = repo.objects.put(Tree({}).encode())
    seen: dict[str, bytes] = {}
    i = 0
    while True:
        data = Commit(
            tree=tree, parents=(), author="a", time="2024-01-01T00:00:00.000000Z", message=f"m{i}", kind="commit", lineage={}, metrics={}
        ).encode()
        oid = hash_bytes(data)
        if oid[:4] in seen:
            break
        seen[oid[:4]] = data
        i += 1
    first = repo.objects.put(seen[oid[:4]])
    second = repo.objects.put(data)
    assert first[:4] == second[:4] and first != second
    proc = run("show", first[:4], cwd=repo.root)
    assert_clean_error(proc, UnknownRevision, contains="ambiguous")
    # a longer prefix that tells them apart works
    k = next(k for k in range(5, 33) if first[:k] != second[:k])
    assert run_json("show", first[:k], cwd=repo.root)["id"] == first
    # fewer than 4 characters is never taken as a prefix
    assert_clean_error(run("show", first[:3], cwd=repo.root), UnknownRevision)


def test_invalid_ref_name(history):
    from store.errors import InvalidRefName

    for bad in ("bad..name", "has space", "x~1", "-leading"):
        assert_clean_error(run("branch", "--", bad, cwd=history.root), InvalidRefName)
    assert_clean_error(run("tag", "--", "a:b", cwd=history.root), InvalidRefName)


# -- worktree-moving commands: a fresh repository per test ------------------------------------
@pytest.fixture
def two_branches(tiny_model, tiny_tweaked, tmp_path):
    """main at the base model; exp one commit ahead with the tweaked model; HEAD on exp.

    Built through the Python API (the CLI's commit is covered by ``history``) to keep this fast.
    """
    from mvc.checkout import switch

    root = tmp_path / "r"
    model = root / "model"
    repo = Repo.init(root)
    shutil.move(str(tiny_model), model)
    tweaked, changed = tiny_tweaked
    base = repo.commit(model, "base").id
    switch(repo, "exp", create=True)
    shutil.copytree(tweaked, model, dirs_exist_ok=True)
    tw = repo.commit(message="tweak").id
    assert repo.head() == ("exp", tw)
    return root, model, base, tw, tweaked, changed


def head_branch(root: Path) -> str | None:
    """HEAD's branch, read from .mvc/HEAD directly (None when detached)."""
    text = (root / ".mvc" / "HEAD").read_text().strip()
    return text[len("ref: refs/heads/") :] if text.startswith("ref: ") else None


def test_switch_and_checkout_update_worktree(two_branches, _tiny_base):
    root, model, base, tw, tweaked, _changed = two_branches
    assert head_branch(root) == "exp"
    assert files_of(model) == files_of(tweaked)

    out = run("switch", "main", cwd=root, check=True)
    assert "main" in out.stdout
    assert head_branch(root) == "main"
    assert files_of(model) == files_of(_tiny_base)
    assert run_json("status", cwd=root)["clean"]

    run("checkout", "exp", cwd=root, check=True)
    assert head_branch(root) == "exp"
    assert files_of(model) == files_of(tweaked)

    # detached checkout of a commit id
    run("checkout", base, cwd=root, check=True)
    st = run_json("status", cwd=root)
    assert st["branch"] is None and st["head"] == base and st["clean"]
    assert files_of(model) == files_of(_tiny_base)
    run("switch", "exp", cwd=root, check=True)
    assert files_of(model) == files_of(tweaked)


def test_checkout_refuses_dirty_worktree(two_branches, _tiny_base):
    root, model, base, tw, tweaked, _changed = two_branches
    (model / "config.json").write_text('{"dirty": true}\n')
    before = files_of(model)
    for args in (("checkout", "main"), ("switch", "main"), ("checkout", base)):
        proc = run(*args, cwd=root)
        assert_clean_error(proc, DirtyWorktree, contains="config.json")
        assert "--force" in proc.stderr
        assert files_of(model) == before
        assert head_branch(root) == "exp"
    # an untracked file alone also counts as a change
    run("checkout", "main", "--force", cwd=root, check=True)
    assert head_branch(root) == "main"
    assert files_of(model) == files_of(_tiny_base)
    (model / "notes.txt").write_text("mine")
    assert_clean_error(run("switch", "exp", cwd=root), DirtyWorktree, contains="notes.txt")
    assert (model / "notes.txt").read_text() == "mine"


def test_switch_create_and_branch_delete(two_branches):
    root, model, base, tw, _tweaked, _changed = two_branches
    out = run("switch", "-c", "feature", cwd=root, check=True)
    assert "feature" in out.stdout
    assert head_branch(root) == "feature"
    branches = {b["name"]: b for b in run_json("branch", cwd=root)}
    assert set(branches) == {"main", "exp", "feature"}
    assert branches["feature"]["commit"] == tw and branches["feature"]["current"]
    assert_clean_error(run("switch", "-c", "feature", cwd=root), AlreadyExists)
    assert_clean_error(run("switch", "nope", cwd=root), UnknownRevision)
    # the current branch cannot be deleted
    assert_clean_error(run("branch", "-d", "feature", cwd=root), InvalidArgument)
    run("switch", "main", cwd=root, check=True)
    out = run("branch", "-d", "feature", cwd=root, check=True)
    assert tw[:12] in out.stdout
    assert {b["name"] for b in run_json("branch", cwd=root)} == {"main", "exp"}
    assert_clean_error(run("show", "feature", cwd=root), UnknownRevision)
    assert_clean_error(run("branch", "-d", "feature", cwd=root), UnknownRevision)
    # the commit is still there (exp holds it) and fsck is clean
    run("fsck", cwd=root, check=True)


def test_log_graph_of_a_merge(tiny_model, tmp_path):
    root = tmp_path / "g"
    repo = Repo.init(root)
    a = repo.commit(tiny_model, "A").id
    (tiny_model / "extra.txt").write_text("b\n")
    b = repo.commit(tiny_model, "B").id
    repo.create_ref("heads", "side", a, message="branch side")
    (tiny_model / "extra.txt").write_text("c\n")
    c = repo.commit(tiny_model, "C", branch="side").id
    (tiny_model / "extra.txt").write_text("m\n")
    m = repo.commit(tiny_model, "M", parents=[b, c]).id
    lines = run("log", "--graph", "--oneline", cwd=root, check=True).stdout.splitlines()
    expected = [
        f"* {m[:12]} (HEAD -> main) M",
        "|\\",
        f"| * {c[:12]} (side) C",
        f"* | {b[:12]} B",
        "|/",
        f"* {a[:12]} A",
    ]
    assert [ln.rstrip() for ln in lines] == expected, "\n".join(lines)
    log = run_json("log", cwd=root)
    assert [x["id"] for x in log] == [m, c, b, a]
    assert log[0]["parents"] == [b, c]
    text = run("log", cwd=root, check=True).stdout
    assert f"Merge:  {b[:12]} {c[:12]}" in text


# -- help -------------------------------------------------------------------------------------
def _commands():
    group = typer.main.get_command(app)
    return group, dict(group.commands)


def test_expected_commands_registered():
    _group, commands = _commands()
    assert {"init", "commit", "log", "show", "status", "checkout", "branch", "switch", "tag", "fsck", "gc", "query", "reindex"} <= set(commands)


def test_help_exits_zero(tmp_path):
    for args in (["--help"], ["-h"], []):
        proc = run(*args, cwd=tmp_path, process=True)
        assert proc.returncode == 0 or (not args and proc.returncode in (0, 2)), proc.stderr
        assert "Usage" in proc.stdout + proc.stderr
    _group, commands = _commands()
    runner = CliRunner()
    for name in commands:
        res = runner.invoke(app, [name, "--help"], prog_name="mvc")
        assert res.exit_code == 0, f"mvc {name} --help: {res.output}"
        assert "Usage" in res.output
    proc = run("commit", "--help", cwd=tmp_path, check=True, process=True)
    assert "--message" in proc.stdout


def test_version(tmp_path):
    proc = run("--version", cwd=tmp_path, check=True, process=True)
    assert proc.stdout.startswith("mvc ")


def test_every_parameter_has_help():
    group, commands = _commands()
    missing = []
    assert group.help and group.help.strip()
    for p in group.params:
        if not (getattr(p, "help", None) or "").strip():
            missing.append(f"mvc {p.name}")
    for name, cmd in commands.items():
        if not (cmd.help or "").strip():
            missing.append(f"mvc {name} (command docstring)")
        for p in cmd.params:
            if not (getattr(p, "help", None) or "").strip():
                missing.append(f"mvc {name} {p.name}")
    assert not missing, "parameters without help text: " + ", ".join(missing)


def test_help_checker_detects_missing_help():
    t = typer.Typer()

    @t.command()
    def a(x: Annotated[str, typer.Argument()] = "x", y: Annotated[int, typer.Option(help="fine")] = 1) -> None:
        """Doc."""

    @t.command()
    def b() -> None:
        """Doc."""

    cmd = typer.main.get_command(t)
    params = {p.name: p for c in cmd.commands.values() for p in c.params}
    assert not (getattr(params["x"], "help", None) or "").strip()
    assert params["y"].help == "fine"


# -- errors -----------------------------------------------------------------------------------
def test_not_a_repository(tmp_path):
    d = tmp_path / "nowhere"
    d.mkdir()
    for args in (("log",), ("status",), ("commit", ".")):
        assert_clean_error(run(*args, cwd=d, process=True), NotARepository)
    proc = run("log", cwd=d, process=True)
    assert "hint: " in proc.stderr and "mvc init" in proc.stderr


def test_traceback_only_with_debug(tmp_path):
    d = tmp_path / "nowhere"
    d.mkdir()
    plain = run("log", cwd=d, process=True)
    assert "Traceback" not in plain.stderr
    assert len([ln for ln in plain.stderr.splitlines() if ln.strip()]) == 2  # error + hint
    debug = run("log", cwd=d, env={"MVC_DEBUG": "1"}, process=True)
    assert debug.returncode == NotARepository.exit_code
    assert "Traceback" in debug.stderr
    assert "error: " in debug.stderr


def test_nothing_to_commit(two_branches):
    root, *_ = two_branches
    head = run_json("status", cwd=root)["head"]
    proc = run("commit", "-m", "again", cwd=root)
    assert_clean_error(proc, NothingToCommit)
    assert "--allow-empty" in proc.stderr
    assert run_json("status", cwd=root)["head"] == head
    new = run_json("commit", "-m", "empty", "--allow-empty", cwd=root)["commit"]
    assert run_json("log", "-n", "1", cwd=root)[0]["id"] == new != head


def test_bad_json_option(two_branches):
    root, *_ = two_branches
    assert_clean_error(run("commit", "--allow-empty", "--metrics", "{nope", cwd=root), InvalidArgument)


def test_no_worktree(repo):
    from mvc.errors import NoWorktree

    assert_clean_error(run("status", cwd=repo.root), NoWorktree)


# -- hooks ------------------------------------------------------------------------------------
def write_hook(root: Path, name: str, body: str) -> Path:
    path = root / ".mvc" / "hooks" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


def _change(model: Path, text: str) -> None:
    (model / "notes.txt").write_text(text)


def test_pre_commit_hook_rejects(two_branches):
    root, model, base, tw, *_ = two_branches
    write_hook(root, "pre-commit", 'echo "weights look wrong: NaN in layer 3" >&2\nexit 1\n')
    _change(model, "x")
    proc = run("commit", "-m", "should fail", cwd=root, process=True)
    assert_clean_error(proc, HookRejected)
    assert "weights look wrong: NaN in layer 3" in proc.stderr
    assert run_json("log", cwd=root)[0]["id"] == tw
    assert (root / ".mvc" / "refs" / "heads" / "exp").read_text().strip() == tw
    # --no-verify skips it
    res = run_json("commit", "-m", "skip hooks", "--no-verify", cwd=root)
    assert run_json("log", "-n", "1", cwd=root)[0]["id"] == res["commit"]
    run("fsck", cwd=root, check=True)


def test_hooks_see_commit_details(two_branches):
    root, model, base, tw, *_ = two_branches
    write_hook(root, "pre-commit", 'env | grep "^MVC_" | sort > "$PWD/pre.env"\n')
    write_hook(root, "post-commit", 'env | grep "^MVC_" | sort > post.env\ncat .mvc/refs/heads/"$MVC_BRANCH" > post.ref\n')
    _change(model, "y")
    res = run_json("commit", "-m", "with hooks", cwd=root)
    cid = res["commit"]

    def parse(p: Path) -> dict[str, str]:
        return dict(ln.split("=", 1) for ln in p.read_text().splitlines() if "=" in ln)

    pre = parse(root / "pre.env")
    assert pre["MVC_COMMIT"] == cid
    assert pre["MVC_BRANCH"] == "exp"
    assert pre["MVC_MESSAGE"] == "with hooks"
    assert pre["MVC_TREE"] == res["tree"]
    assert pre["MVC_PARENTS"] == tw
    assert Path(pre["MVC_DIR"]) == model.resolve()
    post = parse(root / "post.env")
    assert post["MVC_COMMIT"] == cid
    # post-commit ran after the ref moved
    assert (root / "post.ref").read_text().strip() == cid


def test_no_verify_skips_post_commit(two_branches):
    root, model, *_ = two_branches
    write_hook(root, "post-commit", "touch post-ran\n")
    _change(model, "z")
    run("commit", "-m", "quiet", "--no-verify", cwd=root, check=True)
    assert not (root / "post-ran").exists()
    _change(model, "zz")
    run("commit", "-m", "loud", cwd=root, check=True)
    assert (root / "post-ran").exists()


def test_failing_post_commit_keeps_commit(two_branches):
    root, model, *_ = two_branches
    write_hook(root, "post-commit", "echo post failed >&2\nexit 3\n")
    _change(model, "p")
    proc = run("commit", "-m", "post fails", "--json", cwd=root)
    assert proc.returncode == 0, proc.stderr
    cid = json.loads(proc.stdout)["commit"]
    assert run_json("log", "-n", "1", cwd=root)[0]["id"] == cid


def test_non_executable_hook_is_ignored(two_branches):
    root, model, *_ = two_branches
    p = root / ".mvc" / "hooks" / "pre-commit"
    p.write_text("#!/bin/sh\nexit 1\n")
    p.chmod(0o644)
    _change(model, "q")
    run("commit", "-m", "hook not executable", cwd=root, check=True)
