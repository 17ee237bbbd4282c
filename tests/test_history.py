"""diff, pin, rollback and reflog on real tiny models."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from mvc import pins
from mvc.diff import diff, tensor_stats
from mvc.errors import InvalidArgument, PinProtected, PinVerificationFailed, UnknownRevision
from mvc.rollback import reflog, rollback


def _edit_json(path, **changes):
    data = json.loads(path.read_text())
    for k, v in changes.items():
        if v is None:
            data.pop(k, None)
        else:
            data[k] = v
    path.write_text(json.dumps(data))


@pytest.fixture
def two_commits(repo, tiny_model, tiny_tweaked):
    base = repo.commit(tiny_model, "base", metrics={"loss": 2.0}, lineage={"datasets": ["d1"]}).id
    tweaked, changed = tiny_tweaked
    shutil.rmtree(tiny_model)
    shutil.copytree(tweaked, tiny_model)
    ft = repo.commit(tiny_model, "ft", metrics={"loss": 1.5}, lineage={"datasets": ["d1", "d2"]}).id
    return base, ft, changed


def test_diff_tensors_match_reference_statistics(repo, two_commits):
    import torch
    from safetensors.torch import load_file

    base, ft, changed = two_commits
    report = diff(repo, base, ft)
    assert sorted(t.name for t in report.tensors) == sorted(changed)
    assert all(t.change == "modified" for t in report.tensors)
    # reference: recompute from checked-out files
    from mvc.checkout import export

    export(repo, base, repo.root / "a")
    export(repo, ft, repo.root / "b")
    a = load_file(repo.root / "a" / "model.safetensors")
    b = load_file(repo.root / "b" / "model.safetensors")
    for t in report.tensors:
        x, y = a[t.name].double(), b[t.name].double()
        assert t.rel_change == pytest.approx(float((y - x).norm() / x.norm()), rel=1e-9)
        assert t.max_abs == pytest.approx(float((y - x).abs().max()), rel=1e-9)
        assert t.cosine == pytest.approx(float(torch.nn.functional.cosine_similarity(x.flatten(), y.flatten(), dim=0)), rel=1e-9)
        assert t.frac_changed == pytest.approx(float((a[t.name] != b[t.name]).float().mean()))
    assert report.tensors_total == len(a)
    assert [(m.key, m.old, m.new) for m in report.metrics] == [("loss", 2.0, 1.5)]
    assert [(m.key, m.new) for m in report.lineage] == [("datasets", ["d1", "d2"])]


def test_diff_unchanged_tensors_are_not_read(repo, two_commits, monkeypatch):
    import mvc.tensors

    base, ft, changed = two_commits
    reads = []
    real = mvc.tensors.tensor_data
    monkeypatch.setattr(mvc.tensors, "tensor_data", lambda store, t: reads.append(t.name) or real(store, t))
    diff(repo, base, ft)
    assert sorted(reads) == sorted(changed * 2)


def test_tensor_stats_edge_cases():
    import torch

    z = torch.zeros(4)
    assert tensor_stats(z, z) == {"rel_change": 0.0, "max_abs": 0.0, "cosine": 1.0, "frac_changed": 0.0}
    s = tensor_stats(torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0]))
    assert s["cosine"] == pytest.approx(0.0) and s["frac_changed"] == 1.0 and s["rel_change"] == pytest.approx(2 ** 0.5)


def test_diff_config_and_tokenizer_changes(repo, tiny_model, mvc):
    base = repo.commit(tiny_model, "base").id
    _edit_json(tiny_model / "config.json", rms_norm_eps=1e-5, brand_new={"x": 1}, tie_word_embeddings=None)
    _edit_json(tiny_model / "generation_config.json", max_new_tokens=77)
    tj = json.loads((tiny_model / "tokenizer.json").read_text())
    removed = next(t for t in tj["model"]["vocab"] if t not in ("<s>", "</s>", "<pad>"))
    del tj["model"]["vocab"][removed]
    tj["added_tokens"].append({"id": 999, "content": "<tool_call>", "single_word": False, "lstrip": False, "rstrip": False, "normalized": False, "special": True})
    tj["model"]["merges"] = tj["model"]["merges"] + [["Ġ", "t"]]
    (tiny_model / "tokenizer.json").write_text(json.dumps(tj))
    _edit_json(tiny_model / "tokenizer_config.json", chat_template="{% for m in messages %}{{m}}{% endfor %}", eos_token="<pad>")
    # against the directory, before committing
    report = diff(repo, base, str(tiny_model))
    cfg = {c.key: c for c in report.config["config.json"]}
    assert cfg["rms_norm_eps"].change == "changed" and cfg["rms_norm_eps"].new == 1e-5
    assert cfg["brand_new.x"].change == "added"
    assert cfg["tie_word_embeddings"].change == "removed"
    assert [c.key for c in report.config["generation_config.json"]] == ["max_new_tokens"]
    tok = report.tokenizer
    assert tok["added_tokens"] == ["<tool_call>"] and tok["removed_tokens"] == [removed]
    assert tok["merges_changed"] and tok["chat_template_changed"]
    assert [c["key"] for c in tok["special_tokens"]] == ["eos_token"]
    assert report.tensors == []
    # the same through the CLI, on commits
    repo.commit(tiny_model, "tok")
    proc = mvc("diff", base, "--json", cwd=repo.root, check=True)
    data = json.loads(proc.stdout)
    assert data["tokenizer"]["added_tokens"] == ["<tool_call>"]
    human = mvc("diff", base, cwd=repo.root, check=True).stdout
    assert "'<tool_call>'" in human and "chat template changed" in human and "rms_norm_eps" in human


def test_diff_dtype_and_shape_changes(repo, tmp_path):
    import numpy as np
    from safetensors.numpy import save_file

    d = tmp_path / "m"
    d.mkdir()
    save_file({"a": np.ones((2, 2), np.float32), "b": np.ones(3, np.float32), "c": np.ones(1, np.float32)}, d / "model.safetensors")
    base = repo.commit(d, "base").id
    save_file({"a": np.ones((2, 2), np.float16), "b": np.ones(4, np.float32), "d": np.ones(1, np.float32)}, d / "model.safetensors")
    report = diff(repo, base, str(d))
    got = {t.name: t.change for t in report.tensors}
    assert got == {"a": "dtype", "b": "shape", "c": "removed", "d": "added"}


def test_pin_protect_verify_and_tamper(repo, two_commits, mvc, tmp_path):
    base, ft, _ = two_commits
    p = pins.pin(repo, "known-good", base, reason="eval passed")
    assert p.commit == base and p.reason == "eval passed" and "model.safetensors" in p.sha256
    with pytest.raises(PinProtected):
        pins.pin(repo, "known-good", ft)
    pins.pin(repo, "known-good", ft, reason="better eval", force=True, who="ci@example")
    last = repo.refs.reflog("refs/pins/known-good")[-1]
    assert last.who == "ci@example" and "better eval" in last.message and last.new == ft
    # deployed copy verifies; a tampered file fails loudly
    deploy = tmp_path / "deploy"
    assert mvc("checkout", "pins/known-good", "-o", str(deploy), cwd=repo.root).returncode == 0
    assert mvc("pin", "verify", "known-good", str(deploy), cwd=repo.root).returncode == 0
    data = bytearray((deploy / "config.json").read_bytes())
    data[5] ^= 1
    (deploy / "config.json").write_bytes(bytes(data))
    proc = mvc("pin", "verify", "known-good", str(deploy), cwd=repo.root)
    assert proc.returncode == PinVerificationFailed.exit_code and "config.json" in proc.stderr
    (deploy / "extra.bin").write_bytes(b"x")
    with pytest.raises(PinVerificationFailed, match="extra.bin"):
        pins.verify(repo, "known-good", deploy)
    # a corrupted object in the store fails verification too
    tree = repo.read_tree(repo.read_commit(ft).tree)
    obj = repo.objects.path(tree.entries["tokenizer.json"].id)
    os.chmod(obj, 0o644)
    raw = bytearray(obj.read_bytes())
    raw[10] ^= 0xFF
    obj.write_bytes(bytes(raw))
    proc = mvc("pin", "verify", "known-good", cwd=repo.root)
    assert proc.returncode == PinVerificationFailed.exit_code and "corrupt" in proc.stderr
    # a missing pin is an error CI can see
    assert mvc("pin", "verify", "nope", cwd=repo.root).returncode == UnknownRevision.exit_code


def test_unpin_needs_force(repo, two_commits):
    base, _, _ = two_commits
    pins.pin(repo, "prod", base)
    with pytest.raises(PinProtected):
        pins.unpin(repo, "prod")
    assert pins.unpin(repo, "prod", force=True) == base
    assert repo.refs.read("refs/pins/prod") is None
    # gc keeps what the pin's reflog names
    from store.gc import roots

    assert base in roots(repo.refs)


def test_rollback_and_undo_branch(repo, two_commits, tiny_model):
    base, ft, _ = two_commits
    old, new = rollback(repo, "heads", "main")
    assert (old, new) == (ft, base)
    assert repo.resolve("main") == base
    # the worktree follows the checked-out branch
    from mvc.status import status

    assert status(repo, tiny_model).clean
    old, new = rollback(repo, "heads", "main")  # undo
    assert (old, new) == (base, ft)
    assert status(repo, tiny_model).clean
    full, entries = reflog(repo, "main")
    assert full == "refs/heads/main"
    assert [e.new for e in entries[:3]] == [ft, base, ft]
    assert entries[0].message.startswith("rollback:")


def test_rollback_pin_to_and_steps(repo, two_commits, mvc):
    base, ft, _ = two_commits
    pins.pin(repo, "prod", base)
    pins.pin(repo, "prod", ft, force=True)
    proc = mvc("rollback", "pin", "prod", "--reason", "regression", cwd=repo.root, check=True)
    assert "pin prod" in proc.stdout
    assert repo.refs.read("refs/pins/prod") == base
    assert "regression" in repo.refs.reflog("refs/pins/prod")[-1].message
    rollback(repo, "pins", "prod", to=ft)
    assert repo.refs.read("refs/pins/prod") == ft
    with pytest.raises(InvalidArgument, match="goes back only"):
        rollback(repo, "pins", "prod", steps=10)
    with pytest.raises(InvalidArgument, match="already at"):
        rollback(repo, "pins", "prod", to=ft)
    proc = mvc("reflog", "pins/prod", "--json", cwd=repo.root, check=True)
    assert [e["new"] for e in json.loads(proc.stdout)] == [ft, base, ft, base]


def test_rollback_refuses_dirty_worktree(repo, two_commits, tiny_model):
    from mvc.errors import DirtyWorktree

    (tiny_model / "notes.txt").write_text("local change")
    with pytest.raises(DirtyWorktree):
        rollback(repo, "heads", "main")
    assert repo.resolve("main") == two_commits[1]
