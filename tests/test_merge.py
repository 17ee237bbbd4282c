"""mvc merge: strategies against references written out here, three-way merges of real models,
fast-forward, refusals, LoRA adapters against peft's merge_and_unload, and memory bounded by a
few tensors (checked under an address-space limit smaller than the model)."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import typer
import xxhash
from safetensors.torch import load_file, save_file

from mvc.checkout import export
from mvc.cli import app, main
from mvc.dag import CommitGraph, is_ancestor, merge_base, merge_bases
from mvc.errors import DirtyWorktree, InvalidArgument, MergeConflict
from mvc.merge import _tensor_conflicts, merge, merge_adapter
from mvc.merge_strategies import (
    Recipe,
    dare_drop,
    dare_linear,
    dare_ties,
    elect_and_mean,
    linear,
    slerp,
    task_arithmetic,
    tensor_generator,
    ties,
    trim_top_k,
)
from mvc.repo import Repo
from store.materialize import load_manifest
from store.model import TensorEntry

# -- references: the published formulas, written out plainly in float64 ---------------------


def ref_generator(seed: int, name: str) -> torch.Generator:
    """The documented per-tensor seed: the first 16 hex digits of xxh3-128("<seed>\\0<name>"), 63 bits."""
    return torch.Generator().manual_seed(int(xxhash.xxh3_128_hexdigest(f"{seed}\0{name}".encode())[:16], 16) & (2**63 - 1))


def ref_trim(tau: np.ndarray, density: float) -> np.ndarray:
    k = max(1, round(density * tau.size))
    flat = tau.reshape(-1)
    keep = np.argsort(-np.abs(flat), kind="stable")[:k]
    out = np.zeros_like(flat)
    out[keep] = flat[keep]
    return out.reshape(tau.shape)


def ref_disjoint_mean(taus: list[np.ndarray], weights: list[float]) -> np.ndarray:
    taus = [t.astype(np.float64) for t in taus]
    elected = np.sign(sum(w * t for t, w in zip(taus, weights, strict=True)))
    num = np.zeros_like(taus[0])
    den = np.zeros_like(taus[0])
    for t, w in zip(taus, weights, strict=True):
        agree = (np.sign(t) == elected) & (t != 0)
        num += np.where(agree, w * t, 0)
        den += np.where(agree, w, 0)
    return np.divide(num, den, out=np.zeros_like(num), where=den > 0)


def ref_dare(tau: np.ndarray, density: float, gen: torch.Generator) -> np.ndarray:
    keep = (torch.rand(tau.shape, generator=gen) < density).numpy()
    return np.where(keep, tau.astype(np.float64) / density, 0.0)


def ref_slerp(a: np.ndarray, b: np.ndarray, t: float) -> np.ndarray:
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    cos = float((a64 * b64).sum() / (np.linalg.norm(a64) * np.linalg.norm(b64)))
    if abs(cos) > 0.9995:
        return (1 - t) * a64 + t * b64
    th = math.acos(min(1.0, max(-1.0, cos)))
    return (math.sin((1 - t) * th) * a64 + math.sin(t * th) * b64) / math.sin(th)


def reference(strategy: str, name: str, ours: np.ndarray, theirs: np.ndarray, base: np.ndarray, p: dict) -> np.ndarray:
    """What ``strategy`` must give for one tensor, task vectors taken in float32 like the stored data."""
    w = p.get("w", (1.0, 1.0))
    lam = p.get("lam", 1.0)
    b64 = base.astype(np.float64)
    taus = [ours - base, theirs - base]  # float32 subtraction, as the merge does it
    if strategy == "linear":
        return (w[0] * ours.astype(np.float64) + w[1] * theirs.astype(np.float64)) / (w[0] + w[1])
    if strategy == "slerp":
        return ref_slerp(ours, theirs, p["t"])
    if strategy == "task-arithmetic":
        return b64 + lam * sum(wi * t.astype(np.float64) for wi, t in zip(w, taus, strict=True))
    if strategy == "ties":
        return b64 + lam * ref_disjoint_mean([ref_trim(t, p["density"]) for t in taus], w)
    gen = ref_generator(p["seed"], name)
    dropped = [ref_dare(t, p["density"], gen) for t in taus]
    if strategy == "dare-linear":
        return b64 + lam * sum(wi * d for wi, d in zip(w, dropped, strict=True))
    return b64 + lam * ref_disjoint_mean(dropped, w)


# -- strategies on small random tensors --------------------------------------------------------


@pytest.fixture
def rand():
    g = torch.Generator().manual_seed(0)
    base = torch.randn(37, 23, generator=g)
    return SimpleNamespace(base=base, a=base + 0.1 * torch.randn(37, 23, generator=g), b=base + 0.1 * torch.randn(37, 23, generator=g))


def _close(x: torch.Tensor, ref: np.ndarray, atol: float = 1e-6) -> None:
    np.testing.assert_allclose(x.numpy().astype(np.float64), ref, rtol=1e-5, atol=atol)


def test_linear_slerp_task_arithmetic_match_references(rand):
    a, b, base = rand.a, rand.b, rand.base
    _close(linear([a, b], [0.3, 0.7]), (0.3 * a.double() + 0.7 * b.double()).numpy())
    _close(linear([a, b], [2.0, 2.0]), ((a.double() + b.double()) / 2).numpy())
    for t in (0.0, 0.25, 0.5, 1.0):
        _close(slerp(a, b, t), ref_slerp(a.numpy(), b.numpy(), t), atol=1e-5)
    _close(slerp(a, b, 0.0), a.numpy())
    _close(slerp(a, b, 1.0), b.numpy(), atol=1e-5)
    # orthogonal unit vectors stay on the unit circle; parallel ones fall back to lerp
    e1, e2 = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    _close(slerp(e1, e2, 0.5), np.array([math.sqrt(0.5), math.sqrt(0.5)]))
    _close(slerp(a, 2 * a, 0.5), (1.5 * a).numpy())
    _close(slerp(a, -a, 0.25), (0.5 * a).numpy())
    ref = base.double() + 0.8 * (0.5 * (a - base).double() + 1.5 * (b - base).double())
    _close(task_arithmetic(base, [a, b], [0.5, 1.5], 0.8), ref.numpy())
    # pure: inputs untouched
    before = [t.clone() for t in (a, b, base)]
    ties(base, [a, b], [1, 1], 0.3, 1.0)
    dare_ties(base, [a, b], [1, 1], 0.5, 1.0, tensor_generator(1, "x"))
    assert all(torch.equal(x, y) for x, y in zip(before, (a, b, base), strict=True))


def test_trim_and_ties_match_references(rand):
    tau = (rand.a - rand.base).numpy()
    for density in (0.05, 0.2, 0.5, 1.0):
        got = trim_top_k(torch.from_numpy(tau), density).numpy()
        np.testing.assert_array_equal(got, ref_trim(tau, density))
        assert np.count_nonzero(got) == max(1, round(density * tau.size))
    assert np.count_nonzero(trim_top_k(torch.tensor([0.1, -0.2, 0.3]), 0.01).numpy()) == 1
    # a worked example: signs elected by the sum, mean over the agreeing non-zero entries
    t1, t2, t3 = torch.tensor([1.0, -2.0, 0.5, 3.0, 0.0, 1.0]), torch.tensor([2.0, 1.0, -0.5, -1.0, 0.0, 0.0]), torch.tensor([0.0, -1.0, 0.0, 2.0, 0.0, 3.0])
    _close(elect_and_mean([t1, t2, t3], [1, 1, 1]), np.array([1.5, -1.5, 0.0, 2.5, 0.0, 2.0]))
    # weighted: 3 - 3 = 0 at index 3 elects no sign, so nothing is kept there
    _close(elect_and_mean([t1, t2], [1.0, 3.0]), np.array([(1 + 6) / 4, 1.0, -0.5, 0.0, 0.0, 1.0]))
    for density, lam, w in ((0.2, 1.0, (1.0, 1.0)), (0.5, 0.7, (0.4, 1.3))):
        got = ties(rand.base, [rand.a, rand.b], w, density, lam)
        ref = reference("ties", "x", rand.a.numpy(), rand.b.numpy(), rand.base.numpy(), {"w": w, "lam": lam, "density": density})
        _close(got, ref)


def test_dare_reproducible_and_matches_reference(rand):
    tau = rand.a - rand.base
    d1 = dare_drop(tau, 0.3, tensor_generator(5, "layer.weight"))
    d2 = dare_drop(tau, 0.3, tensor_generator(5, "layer.weight"))
    assert torch.equal(d1, d2)
    assert not torch.equal(d1, dare_drop(tau, 0.3, tensor_generator(6, "layer.weight")))
    assert not torch.equal(d1, dare_drop(tau, 0.3, tensor_generator(5, "other.weight")))
    kept = d1 != 0
    assert 0.2 < kept.float().mean().item() < 0.4
    torch.testing.assert_close(d1[kept], tau[kept] / 0.3)
    assert torch.equal(dare_drop(tau, 1.0, tensor_generator(5, "x")), tau)
    for strategy, fn in (("dare-linear", dare_linear), ("dare-ties", dare_ties)):
        p = {"w": (0.6, 1.2), "lam": 0.9, "density": 0.4, "seed": 17}
        got = fn(rand.base, [rand.a, rand.b], p["w"], p["density"], p["lam"], tensor_generator(17, "t"))
        _close(got, reference(strategy, "t", rand.a.numpy(), rand.b.numpy(), rand.base.numpy(), p))


def test_recipe_validation():
    assert Recipe().checked().strategy == "task-arithmetic"
    assert Recipe("TIES").checked().strategy == "ties"
    assert Recipe("dare_linear").checked().seed is not None  # drawn, so the lineage can reproduce it
    assert Recipe("linear", (0.7,)).checked().resolved_weights() == pytest.approx((0.3, 0.7))
    assert Recipe("linear").checked().to_lineage()["weights"] == [0.5, 0.5]
    assert Recipe("slerp", (0.25,)).checked().to_lineage()["t"] == pytest.approx(0.25)
    for bad in (Recipe("average"), Recipe("linear", density=0.5), Recipe("slerp", lam=2.0), Recipe("ties", seed=1),
                Recipe("ties", density=0.0), Recipe("ties", density=1.5), Recipe("linear", (1.0, -1.0)), Recipe("slerp", (1.5,)),
                Recipe("ties", (0.0, 1.0)), Recipe("linear", (1.0, 2.0, 3.0)), Recipe("task-arithmetic", lam=math.inf)):
        with pytest.raises(InvalidArgument):
            bad.checked()


# -- the commit DAG ----------------------------------------------------------------------------


def test_dag_merge_bases_and_ancestry(repo, tmp_path):
    d = tmp_path / "tiny"
    d.mkdir()
    (d / "a.txt").write_text("x")

    def mk(branch: str, parents: list[str]) -> str:
        return repo.commit(d, branch, branch=branch, parents=parents, allow_empty=True, run_hooks=False).id

    a = mk("main", [])
    b, c = mk("b", [a]), mk("c", [a])
    x, y = mk("x", [b, c]), mk("y", [c, b])  # criss-cross: two lowest common ancestors
    lone = mk("lone", [])
    assert merge_bases(repo.objects, b, c) == [a]
    assert set(merge_bases(repo.objects, x, y)) == {b, c}
    assert merge_base(repo.objects, x, y) in (b, c)
    assert merge_bases(repo.objects, b, x) == [b]
    assert merge_bases(repo.objects, x, lone) == []
    assert merge_base(repo.objects, x, lone) is None
    assert is_ancestor(repo.objects, a, x) and is_ancestor(repo.objects, x, x)
    assert not is_ancestor(repo.objects, x, y) and not is_ancestor(repo.objects, lone, x)
    g = CommitGraph.from_store(repo.objects, [x, y])
    assert g.ancestors(x) == {a, b, c}


# -- three-way merges of a real tiny model -----------------------------------------------------


def _perturb(directory: Path, names: list[str], seed: int, scale: float = 0.01) -> None:
    path = directory / "model.safetensors"
    tensors = load_file(path)
    g = torch.Generator().manual_seed(seed)
    for n in names:
        tensors[n] = tensors[n] + scale * torch.randn(tensors[n].shape, generator=g)
    save_file(tensors, path, metadata={"format": "pt"})


@pytest.fixture(scope="module")
def _branches_template(tmp_path_factory, _tiny_base) -> Path:
    """Built once: a repository whose main goes base -> ours (the worktree ``repo/model``) and feat base -> theirs.

    Some tensors are changed on one side only, some on both, some on neither.
    """
    t = tmp_path_factory.mktemp("merge-template")
    repo = Repo.init(t / "repo")
    repo.set_config("core", "fsync", "false")
    repo = Repo(t / "repo")
    wt = t / "repo" / "model"
    shutil.copytree(_tiny_base, wt)
    shutil.copytree(_tiny_base, t / "base")
    names = sorted(load_file(wt / "model.safetensors"))
    repo.commit(wt, "base")
    repo.create_ref("heads", "feat", "HEAD", message="branch: feat")
    shutil.copytree(_tiny_base, t / "theirs")
    _perturb(wt, names[1:12], seed=1)
    _perturb(t / "theirs", names[6:18], seed=2)
    repo.commit(wt, "ours")
    repo.commit(t / "theirs", "theirs", branch="feat")
    shutil.copytree(wt, t / "ours")  # the worktree changes when merging; this copy does not
    return t


@pytest.fixture
def branches(_branches_template, tmp_path, monkeypatch):
    """A fresh copy of the template; the working directory is the repository."""
    t = tmp_path / "t"
    shutil.copytree(_branches_template, t)
    repo = Repo(t / "repo")
    monkeypatch.chdir(repo.root)
    return SimpleNamespace(repo=repo, base=repo.resolve("main~1"), ours=repo.resolve("main"), theirs=repo.resolve("feat"),
                           names=sorted(load_file(t / "base" / "model.safetensors")), worktree=repo.worktree,
                           base_dir=t / "base", ours_dir=t / "ours", theirs_dir=t / "theirs")


CASES = {
    "linear": ({"weights": (0.7,)}, {"w": (0.3, 0.7)}),
    "slerp": ({"weights": (0.3,)}, {"t": 0.3}),
    "task-arithmetic": ({"weights": (0.6, 0.9), "lam": 0.8}, {"w": (0.6, 0.9), "lam": 0.8}),
    "ties": ({"density": 0.3, "lam": 1.2}, {"density": 0.3, "lam": 1.2}),
    "dare-ties": ({"density": 0.5, "seed": 7}, {"density": 0.5, "seed": 7}),
    "dare-linear": ({"weights": (0.5, 0.8), "density": 0.5, "lam": 0.9, "seed": 11}, {"w": (0.5, 0.8), "density": 0.5, "lam": 0.9, "seed": 11}),
}


@pytest.mark.parametrize("strategy", list(CASES))
def test_full_model_merge_matches_reference_tensor_by_tensor(branches, strategy, tmp_path):
    args, p = CASES[strategy]
    repo = branches.repo
    result = merge(repo, "feat", Recipe(strategy, **args))
    assert result.outcome == "merge"
    out = tmp_path / "merged"
    export(repo, "main", out)
    merged = load_file(out / "model.safetensors")
    ours, theirs, base = (load_file(d / "model.safetensors") for d in (branches.ours_dir, branches.theirs_dir, branches.base_dir))
    assert list(merged) == list(ours)  # ours' tensor order
    for name in branches.names:
        ref = reference(strategy, name, ours[name].numpy(), theirs[name].numpy(), base[name].numpy(), p)
        np.testing.assert_allclose(merged[name].numpy().astype(np.float64), ref, rtol=1e-5, atol=1e-6, err_msg=f"{strategy}: {name}")
    untouched = [n for n in branches.names if torch.equal(ours[n], base[n]) and torch.equal(theirs[n], base[n])]
    assert untouched and all(torch.equal(merged[n], ours[n]) for n in untouched)
    # layout and header metadata are ours'
    for f in ("config.json", "tokenizer.json", "generation_config.json"):
        assert (out / f).read_bytes() == (branches.ours_dir / f).read_bytes()
    with open(out / "model.safetensors", "rb") as fh:
        n = int.from_bytes(fh.read(8), "little")
        assert json.loads(fh.read(n))["__metadata__"] == {"format": "pt"}


def test_merge_commit_parents_lineage_index_and_worktree(branches, tmp_path):
    repo = branches.repo
    result = merge(repo, "feat", Recipe("ties", density=0.4), message="combine")
    commit = repo.read_commit(result.commit)
    assert commit.parents == (branches.ours, branches.theirs)
    assert commit.kind == "merge" and commit.message == "combine"
    assert commit.lineage == {"merge": {"strategy": "ties", "weights": [1.0, 1.0], "density": 0.4, "lambda": 1.0, "seed": None,
                                        "merge_base": branches.base, "theirs": branches.theirs, "ref": "feat"}}
    assert repo.head() == ("main", result.commit)
    assert repo.refs.reflog("refs/heads/main")[-1].message.startswith("merge: combine")
    _cols, rows = repo.index().query("SELECT parent_id FROM parents WHERE commit_id = ? ORDER BY pos", [result.commit])
    assert [r[0] for r in rows] == [branches.ours, branches.theirs]
    _cols, rows = repo.index().query("SELECT kind, json_extract_string(lineage, '$.merge.strategy') FROM commits WHERE id = ?", [result.commit])
    assert rows == [("merge", "ties")]
    # the worktree now holds the merge result, and is clean
    export(repo, "main", tmp_path / "m")
    assert (branches.worktree / "model.safetensors").read_bytes() == (tmp_path / "m" / "model.safetensors").read_bytes()
    from mvc.status import status

    assert status(repo).clean
    assert result.tensors_changed + result.tensors_kept == len(branches.names)


def test_task_arithmetic_default_takes_one_sided_changes_exactly(branches):
    repo = branches.repo
    result = merge(repo, "feat")
    tensors = {t.name: t for e in repo.read_tree(repo.read_commit(result.commit).tree).entries.values() if e.kind == "file"
               for t in load_manifest(repo.objects, e).tensors}
    side = {}
    for cid in (branches.ours, branches.theirs):
        entry = repo.read_tree(repo.read_commit(cid).tree).entries["model.safetensors"]
        side[cid] = {t.name: t.id for t in load_manifest(repo.objects, entry).tensors}
    only_ours, only_theirs = branches.names[1:6], branches.names[12:18]
    assert all(tensors[n].id == side[branches.ours][n] for n in only_ours)
    assert all(tensors[n].id == side[branches.theirs][n] for n in only_theirs)
    assert result.lineage["merge"]["weights"] == [1.0, 1.0] and result.lineage["merge"]["lambda"] == 1.0


def test_dare_seed_reproducible(branches):
    repo = branches.repo
    trees = []
    for seed in (3, 3, 4):
        r = merge(repo, "feat", Recipe("dare-ties", seed=seed), force=True)
        trees.append(repo.read_commit(r.commit).tree)
        assert r.lineage["merge"]["seed"] == seed
        repo.refs.compare_and_swap("refs/heads/main", r.commit, branches.ours, message="test: reset")
    assert trees[0] == trees[1] != trees[2]
    drawn = merge(repo, "feat", Recipe("dare-linear"), force=True)
    seed = drawn.lineage["merge"]["seed"]
    repo.refs.compare_and_swap("refs/heads/main", drawn.commit, branches.ours, message="test: reset")
    again = merge(repo, "feat", Recipe("dare-linear", seed=seed), force=True)
    assert repo.read_commit(again.commit).tree == repo.read_commit(drawn.commit).tree


def test_fast_forward_and_already_up_to_date(branches, tmp_path):
    repo = branches.repo
    assert merge(repo, "main~1").outcome == "up-to-date"
    assert merge(repo, "main").outcome == "up-to-date"
    repo.create_ref("heads", "ahead", "feat", message="test")
    # put main behind: switch to a branch at the base and fast-forward it to feat
    from mvc.checkout import switch

    switch(repo, "old", create=True, start=branches.base)
    assert load_file(branches.worktree / "model.safetensors").keys()
    result = merge(repo, "feat")
    assert result.outcome == "fast-forward" and result.commit == branches.theirs and result.previous == branches.base
    assert repo.head() == ("old", branches.theirs)
    assert len(repo.read_commit(branches.theirs).parents) == 1  # no merge commit was made
    assert (branches.worktree / "model.safetensors").read_bytes() == (branches.theirs_dir / "model.safetensors").read_bytes()
    assert repo.refs.reflog("refs/heads/old")[-1].message == "merge feat: fast-forward"


def test_dirty_worktree_refused_unless_force(branches):
    repo = branches.repo
    (branches.worktree / "README.md").write_text("local edit\n")
    with pytest.raises(DirtyWorktree):
        merge(repo, "feat")
    assert repo.head()[1] == branches.ours
    result = merge(repo, "feat", force=True)
    assert result.outcome == "merge"


def test_other_files_kept_ours_and_reported(branches):
    repo = branches.repo
    gen = json.loads((branches.theirs_dir / "generation_config.json").read_text())
    gen["temperature"] = 0.3
    (branches.theirs_dir / "generation_config.json").write_text(json.dumps(gen))
    (branches.theirs_dir / "NOTES.md").write_text("theirs only\n")
    cfg = json.loads((branches.theirs_dir / "config.json").read_text())
    cfg["rope_theta"] = 1234.0
    (branches.theirs_dir / "config.json").write_text(json.dumps(cfg))
    tok_cfg = json.loads((branches.theirs_dir / "tokenizer_config.json").read_text())
    tok_cfg.update(is_local=True, model_max_length=77)  # settings, not tokens
    (branches.theirs_dir / "tokenizer_config.json").write_text(json.dumps(tok_cfg))
    repo.commit(branches.theirs_dir, "theirs 2", branch="feat")
    result = merge(repo, "feat", Recipe("linear"))
    kept = {k["path"]: k["reason"] for k in result.kept_ours}
    assert kept["generation_config.json"] == "differs"
    assert kept["NOTES.md"] == "only in theirs, not taken"
    assert "rope_theta" in kept["config.json"]
    assert kept["tokenizer_config.json"] == "differs in is_local, model_max_length (settings, not tokens)"
    tree = repo.read_tree(repo.read_commit(result.commit).tree)
    ours_tree = repo.read_tree(repo.read_commit(branches.ours).tree)
    assert tree.entries["generation_config.json"] == ours_tree.entries["generation_config.json"]
    assert "NOTES.md" not in tree.entries


def _commit_theirs_variant(branches, edit) -> None:
    edit(branches.theirs_dir)
    branches.repo.commit(branches.theirs_dir, "variant", branch="feat")


def test_refuses_different_architecture(branches):
    def edit(d: Path) -> None:
        cfg = json.loads((d / "config.json").read_text())
        cfg.update(architectures=["MistralForCausalLM"], model_type="mistral")
        (d / "config.json").write_text(json.dumps(cfg))

    _commit_theirs_variant(branches, edit)
    with pytest.raises(MergeConflict) as e:
        merge(branches.repo, "feat")
    assert "architectures" in e.value.message and "MistralForCausalLM" in e.value.message and "model_type" in e.value.message
    assert branches.repo.head()[1] == branches.ours  # nothing moved


def test_refuses_different_hidden_size(branches, tmp_path):
    import tiny_models

    small = tiny_models.build_base(tmp_path / "small", seed=0, hidden=32)
    for f in small.iterdir():
        shutil.copy(f, branches.theirs_dir / f.name)
    branches.repo.commit(branches.theirs_dir, "smaller", branch="feat")
    with pytest.raises(MergeConflict) as e:
        merge(branches.repo, "feat", Recipe("linear"))
    msg = e.value.message
    assert "hidden_size 64 vs 32" in msg
    assert any("model.embed_tokens.weight is F32[259, 64] in ours but F32[259, 32] in theirs" in c for c in e.value.conflicts)


def test_refuses_different_tokenizers_naming_tokens(branches):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(branches.theirs_dir)
    tok.add_tokens(["<tool_call>", "<tool_result>"])
    tok.save_pretrained(branches.theirs_dir)
    branches.repo.commit(branches.theirs_dir, "new tokens", branch="feat")
    with pytest.raises(MergeConflict) as e:
        merge(branches.repo, "feat")
    assert "tokenizers differ" in e.value.message
    assert "'<tool_call>' only in theirs" in e.value.message


def test_refuses_tensor_mismatches_and_missing_base(branches, tmp_path):
    repo = branches.repo
    tensors = load_file(branches.theirs_dir / "model.safetensors")
    tensors["extra.weight"] = torch.zeros(3)
    del tensors["model.norm.weight"]
    tensors["lm_head.weight"] = tensors["lm_head.weight"].to(torch.float16)
    save_file(tensors, branches.theirs_dir / "model.safetensors", metadata={"format": "pt"})
    repo.commit(branches.theirs_dir, "odd", branch="feat")
    with pytest.raises(MergeConflict) as e:
        merge(repo, "feat", Recipe("linear"))
    text = " | ".join(e.value.conflicts)
    assert "only in ours: model.norm.weight" in text and "only in theirs: extra.weight" in text
    assert "lm_head.weight is F32" in text and "F16" in text
    # unrelated histories: no merge-base for task vectors, but linear works
    lone = tmp_path / "lone"
    shutil.copytree(branches.base_dir, lone)
    repo.commit(lone, "unrelated", branch="lone", parents=[])
    with pytest.raises(MergeConflict, match="no merge-base"):
        merge(repo, "lone", Recipe("ties"))
    assert merge(repo, "lone", Recipe("slerp")).lineage["merge"]["merge_base"] is None


def _entry(name: str, dtype: str, shape: tuple, oid: str) -> TensorEntry:
    return TensorEntry(name, dtype, shape, oid * 32, 4, ())


def test_tensor_conflict_rules():
    ours = {"w": _entry("w", "F32", (2,), "a"), "ids": _entry("ids", "I64", (2,), "b"), "same": _entry("same", "F32", (2,), "c"),
            "f8": _entry("f8", "F8_E4M3", (2,), "d"), "new": _entry("new", "F32", (2,), "e")}
    theirs = {"w": _entry("w", "F32", (2,), "f"), "ids": _entry("ids", "I64", (2,), "0"), "same": ours["same"],
              "f8": _entry("f8", "F8_E4M3", (2,), "1"), "new": _entry("new", "F32", (2,), "2")}
    base = {"w": _entry("w", "F32", (3,), "3"), "ids": ours["ids"], "f8": ours["f8"]}
    text = " | ".join(_tensor_conflicts(ours, theirs, base))
    assert "tensor ids (I64) differs and only floating-point tensors can be merged" in text
    assert "tensor f8 (F8_E4M3) differs" in text
    assert "tensor new is missing in the merge-base" in text
    assert "tensor w is F32[3] in the merge-base but F32[2] in ours" in text
    assert "same" not in text  # both sides agree: no base needed
    assert "missing" not in " ".join(_tensor_conflicts(ours, theirs, None))  # linear and slerp need no base


def test_merge_keeps_ours_sharded_layout(repo, tiny_model, tiny_sharded, tmp_path):
    """Tensors are matched by name across files: ours is sharded, theirs is one file; the result keeps ours' shards."""
    repo.commit(tiny_model, "base")
    repo.create_ref("heads", "feat", "HEAD", message="branch")
    theirs = tmp_path / "theirs"
    shutil.copytree(tiny_model, theirs)
    _perturb(theirs, ["lm_head.weight", "model.norm.weight"], seed=5)
    repo.commit(theirs, "theirs", branch="feat")
    shutil.rmtree(tiny_model)
    shutil.copytree(tiny_sharded, tiny_model)  # the same tensors, saved in shards
    repo.commit(tiny_model, "ours: resharded")
    ours_tree = repo.read_tree(repo.read_commit(repo.resolve("HEAD")).tree)
    result = merge(repo, "feat", Recipe("linear", (0.5,)))
    tree = repo.read_tree(repo.read_commit(result.commit).tree)
    assert sorted(tree.entries) == sorted(ours_tree.entries)
    out = tmp_path / "out"
    export(repo, "main", out)
    theirs_t = load_file(theirs / "model.safetensors")
    for shard in sorted(tiny_sharded.glob("*.safetensors")):
        merged, ours = load_file(out / shard.name), load_file(shard)
        assert list(merged) == list(ours)
        for name, t in merged.items():
            torch.testing.assert_close(t, (ours[name] + theirs_t[name]) / 2, rtol=1e-6, atol=1e-7)
    assert result.tensors_changed == 2
    assert (out / "model.safetensors.index.json").read_bytes() == (tiny_sharded / "model.safetensors.index.json").read_bytes()


# -- LoRA adapters ---------------------------------------------------------------------------


def _adapter_case(repo, tmp_path, model, lora_kwargs) -> tuple[dict, dict]:
    """Commit ``model`` on main and its peft adapter on branch ``lora``; return merge_and_unload's state and the base's."""
    pytest.importorskip("peft")
    from peft import LoraConfig, get_peft_model

    base_dir, ad_dir = tmp_path / "base_model", tmp_path / "adapter"
    model.save_pretrained(base_dir)
    repo.commit(base_dir, "base model")
    torch.manual_seed(3)
    pm = get_peft_model(model, LoraConfig(init_lora_weights=False, **lora_kwargs))
    pm.save_pretrained(ad_dir)
    repo.commit(ad_dir, "adapter", branch="lora")
    base = load_file(base_dir / "model.safetensors")
    return {k: v.detach().clone() for k, v in pm.merge_and_unload().state_dict().items()}, base


def _check_against_peft(repo, expected: dict, base: dict, tmp_path) -> None:
    out = tmp_path / "merged"
    export(repo, "main", out)
    merged = load_file(out / "model.safetensors")
    assert list(merged) == list(base)
    for name, t in merged.items():
        torch.testing.assert_close(t, expected[name], rtol=0, atol=1e-5, msg=lambda m, name=name: f"{name}: {m}")
    assert sum(not torch.equal(merged[n], base[n]) for n in merged) >= 4


def test_adapter_merge_matches_peft_llama(repo, tmp_path):
    import tiny_models
    from transformers import AutoModelForCausalLM

    base = tiny_models.build_base(tmp_path / "llama", seed=0)
    model = AutoModelForCausalLM.from_pretrained(base)
    expected, base = _adapter_case(repo, tmp_path, model, dict(
        r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj", "embed_tokens"], use_rslora=False,
        rank_pattern={"v_proj": 2}, alpha_pattern={"down_proj": 3},
    ))
    result = merge_adapter(repo, "lora")
    commit = repo.read_commit(result.commit)
    assert commit.kind == "merge" and len(commit.parents) == 2 and commit.lineage["merge"]["strategy"] == "lora"
    _check_against_peft(repo, expected, base, tmp_path)


def test_adapter_merge_matches_peft_rslora_and_fan_in_fan_out(repo, tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(n_embd=32, n_layer=2, n_head=2, vocab_size=97, n_positions=32))
    expected, base = _adapter_case(repo, tmp_path, model, dict(
        r=4, lora_alpha=6, target_modules=["c_attn", "c_fc"], fan_in_fan_out=True, use_rslora=True, lora_bias=True,
    ))
    merge_adapter(repo, "lora")
    _check_against_peft(repo, expected, base, tmp_path)


def test_adapter_refusals(repo, tmp_path):
    import tiny_models

    llama = tiny_models.build_base(tmp_path / "llama", seed=0)
    repo.commit(llama, "llama")
    ad = tmp_path / "ad"
    ad.mkdir()
    (ad / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 2, "lora_alpha": 4}))
    save_file({"base_model.model.transformer.h.0.attn.c_attn.lora_A.weight": torch.zeros(2, 32),
               "base_model.model.transformer.h.0.attn.c_attn.lora_B.weight": torch.zeros(96, 2),
               "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight": torch.zeros(2, 48),
               "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight": torch.zeros(64, 2)}, ad / "adapter_model.safetensors")
    repo.commit(ad, "foreign adapter", branch="lora")
    with pytest.raises(MergeConflict) as e:
        merge_adapter(repo, "lora")
    text = " | ".join(e.value.conflicts)
    assert "transformer.h.0.attn.c_attn.weight, which HEAD does not have" in text
    assert "update for model.layers.0.self_attn.q_proj.weight is [64, 48] but the tensor is F32[64, 64]" in text
    with pytest.raises(MergeConflict, match="not a LoRA adapter"):
        merge_adapter(repo, "HEAD")


# -- CLI -----------------------------------------------------------------------------------------


def test_cli_merge_checkout_loads_and_fsck(branches, mvc, tmp_path):
    root = branches.repo.root
    proc = mvc("merge", "feat", "--strategy", "ties", "--density", "0.3", "--lambda", "1.1", "--json", cwd=root, check=True)
    data = json.loads(proc.stdout)
    assert data["outcome"] == "merge" and data["lineage"]["merge"]["lambda"] == 1.1
    out = tmp_path / "export"
    mvc("checkout", "main", "-o", str(out), cwd=root, check=True)
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(out)
    assert model(torch.tensor([[1, 2, 3]])).logits.shape == (1, 3, model.config.vocab_size)
    mvc("fsck", cwd=root, check=True)
    text = mvc("log", "-n", "1", cwd=root, check=True).stdout
    assert "Merge:" in text


def test_cli_exit_codes(branches, mvc, capsys):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(branches.theirs_dir)
    tok.add_tokens(["<new_tok>"])
    tok.save_pretrained(branches.theirs_dir)
    branches.repo.commit(branches.theirs_dir, "tok", branch="feat")
    proc = mvc("merge", "feat", cwd=branches.repo.root)
    assert proc.returncode == 23, proc.stderr
    assert "error: cannot merge feat into main" in proc.stderr and "'<new_tok>' only in theirs" in proc.stderr
    assert "hint:" in proc.stderr
    for args, code in ((["merge", "feat", "--strategy", "average"], 19), (["merge", "feat", "--strategy", "linear", "--density", "0.5"], 19),
                       (["merge", "nope"], 4), (["merge", "--adapter", "feat", "--seed", "1"], 19)):
        with pytest.raises(SystemExit) as e:
            main(args)
        assert e.value.code == code, args
    with pytest.raises(SystemExit) as e:
        main(["merge", "main~1"])
    assert e.value.code in (0, None)
    assert "Already up to date." in capsys.readouterr().out


def test_merge_help_covers_every_option():
    cmd = typer.main.get_command(app).commands["merge"]
    opts = {p.name: p for p in cmd.params}
    assert {"ref", "strategy", "weight", "density", "lam", "seed", "message", "adapter", "force", "no_verify", "as_json"} <= set(opts)
    for name, p in opts.items():
        assert (getattr(p, "help", None) or "").strip(), f"--{name} has no help"
    from typer.testing import CliRunner

    text = CliRunner().invoke(app, ["merge", "--help"], prog_name="mvc", env={"COLUMNS": "200"}).output
    for flag in ("--strategy", "--weight", "--density", "--lambda", "--seed", "--message", "--adapter", "--force", "--no-verify", "--json"):
        assert flag in text
    for s in ("linear", "slerp", "task-arithmetic", "ties", "dare-ties", "dare-linear"):
        assert s in text


# -- memory --------------------------------------------------------------------------------------

CHILD = textwrap.dedent(
    """
    import json, resource, sys
    import duckdb, torch
    from mvc.merge import merge
    from mvc.merge_strategies import Recipe
    from mvc.repo import Repo

    # Only the merge is measured: one torch thread, and DuckDB's worker pool (one thread stack
    # per core, so it grows with the machine) kept to one thread.
    torch.set_num_threads(1)
    _connect = duckdb.connect
    duckdb.connect = lambda *a, **k: _connect(*a, config={"threads": 1}, **k)

    def status(key):
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith(key + ":"))

    repo = Repo(sys.argv[1])
    torch.topk(torch.randn(1000).abs(), 10)  # load the kernels the merge uses
    repo.index().reindex()  # and let DuckDB's allocator reserve what an index write needs
    try:  # reset the peak-RSS mark, so it measures the merge alone
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass
    before, rss_before = status("VmSize"), status("VmRSS")
    limit = before + int(sys.argv[2])
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    result = merge(repo, "feat", Recipe("ties", density=0.3))
    growth = status("VmHWM") - rss_before
    try:  # the limit bites: the model's bytes at once do not fit
        bytearray(int(sys.argv[3]))
        held = True
    except MemoryError:
        held = False
    print(json.dumps({"changed": result.tensors_changed, "vm_before": before, "rss_growth": growth, "model_fits": held}))
    """
)


def _store_model(repo: Repo, tensors, shape: tuple[int, int], message: str, branch: str, parents: list[str]) -> str:
    """Commit a model of fp32 ``tensors`` (name, array) streamed straight into the store: no file is written."""
    from mvc.tensors import write_safetensors
    from store.model import Tree, TreeEntry

    names = list(tensors)
    with repo.objects.batch() as batch:
        specs = [(name, "F32", shape, shape[0] * shape[1] * 4) for name in names]
        entry, _ = write_safetensors(batch, specs, (tensors[n]().tobytes() for n in names), {"format": "np"})
        cfg = b'{"model_type": "toy"}'
        cfg_id = batch.add(cfg)
    tree = Tree({"model.safetensors": entry, "config.json": TreeEntry("blob", cfg_id, len(cfg), cfg_id)})
    ref = f"refs/heads/{branch}"
    return repo.write_commit(repo.objects.put(tree.encode()), parents, message, ref=ref, expected=repo.refs.read(ref), run_hooks=False)


def test_merge_memory_is_bounded_by_a_few_tensors(tmp_path):
    """A ties merge of a 160 MiB model (80 fp32 tensors of 2 MiB) runs under an address-space limit of
    64 MiB above the process's size: the merge streams tensor by tensor; holding the model would fail."""
    n, shape = 80, (512, 1024)
    model_bytes = n * shape[0] * shape[1] * 4
    budget = 64 * 2**20
    assert budget < model_bytes / 2
    repo = Repo.init(tmp_path / "repo")
    repo.set_config("core", "fsync", "false")
    repo = Repo(tmp_path / "repo")

    def tensor(i: int, side: int):
        def make() -> np.ndarray:
            base = np.random.default_rng(i).standard_normal(shape, dtype=np.float32)
            return base if side == 0 else base + 0.01 * np.random.default_rng(1000 * side + i).standard_normal(shape, dtype=np.float32)

        return make

    names = [f"layers.{i}.weight" for i in range(n)]
    base = _store_model(repo, {k: tensor(i, 0) for i, k in enumerate(names)}, shape, "base", "main", [])
    repo.refs.compare_and_swap("refs/heads/feat", None, base, message="branch")
    _store_model(repo, {k: tensor(i, 1) for i, k in enumerate(names)}, shape, "ours", "main", [base])
    _store_model(repo, {k: tensor(i, 2) for i, k in enumerate(names)}, shape, "theirs", "feat", [base])
    assert repo.worktree is None  # nothing to write back: only the merge itself is measured
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    env = {**os.environ, "MALLOC_ARENA_MAX": "2"}
    proc = subprocess.run([sys.executable, str(script), str(repo.root), str(budget), str(model_bytes)], capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["changed"] == n and not report["model_fits"]
    assert report["rss_growth"] < model_bytes / 2
    print(f"\nmodel {model_bytes / 2**20:.0f} MiB, address-space budget {budget / 2**20:.0f} MiB, peak RSS growth {report['rss_growth'] / 2**20:.0f} MiB")
