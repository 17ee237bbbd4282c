"""mvc train: every method on tiny models for a handful of steps, through the Python API and the CLI.

Models here have ~150k parameters and runs take 2-4 steps, so the whole file runs in a couple
of minutes on two CPU cores. A session-scoped repository holds a pretrained tiny model that
the other methods start from.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

pytest.importorskip("trl")
pytest.importorskip("peft")

from mvc.errors import InvalidSpec  # noqa: E402
from mvc.repo import Repo  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def _spec(**kw):
    from trainers.spec import load_spec

    data = kw.pop("data")
    flags = {"data": data if isinstance(data, dict) else {"train": str(data)}, "train": {"max_steps": kw.pop("max_steps", 2), "batch_size": 4},
             "checkpoint": {"save_steps": kw.pop("save_steps", 1)}, **kw}
    return load_spec(flags=flags, sets=["data.max_length=48", "train.logging_steps=1"])


@pytest.fixture(scope="session")
def train_data(tmp_path_factory) -> dict[str, Path]:
    import make_train_data

    return make_train_data.write_all(tmp_path_factory.mktemp("data"), lines=300)


@pytest.fixture(scope="session")
def trained(tmp_path_factory, train_data):
    """A repository with runs/pre: a tiny model pretrained (own tokenizer) for 3 steps, 3 checkpoints."""
    from trainers.run import train

    root = tmp_path_factory.mktemp("trainrepo")
    repo = Repo.init(root)
    repo.set_config("core", "fsync", "false")
    repo = Repo(root)
    result = train(repo, _spec(method="pretrain", name="pre", data=train_data["corpus.txt"], max_steps=3))
    return repo, result


@pytest.fixture
def trepo(trained, tmp_path):
    """A private copy of the trained repository (tests may add runs)."""
    repo, _ = trained
    dst = tmp_path / "r"
    shutil.copytree(repo.root, dst)
    return Repo(dst)


# -- pretrain: own tokenizer, checkpoints as commits, lineage ------------------------------------
def test_pretrain_commits_every_checkpoint_and_the_final_model(trained, train_data):
    repo, result = trained
    assert result.status == "completed"
    assert len(result.commits) == 4  # 3 checkpoints + final
    commits = [repo.read_commit(c) for c in result.commits]
    assert [c.kind for c in commits] == ["checkpoint"] * 3 + ["train"]
    assert [c.lineage["step"] for c in commits] == [1, 2, 3, 3]
    assert commits[0].parents == ()  # pretraining starts from nothing
    for child, parent in zip(result.commits[1:], result.commits, strict=False):
        assert repo.read_commit(child).parents == (parent,)
    assert repo.refs.read("refs/heads/runs/pre") == result.final
    final = commits[-1]
    tree = repo.read_tree(final.tree)
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= set(tree.entries)
    assert not any(p.startswith(("optimizer", "scheduler", "rng_state")) or p == "training_args.bin" for p in tree.entries)
    lin = final.lineage
    assert lin["method"] == "pretrain" and lin["seed"] == 0 and lin["base"] is None if "base" in lin else True
    assert lin["spec"]["method"] == "pretrain" and lin["spec"]["train"]["max_steps"] == 3
    env = lin["environment"]
    assert {"python", "torch", "transformers", "device", "precision"} <= set(env)
    assert env["device"] == "cpu" and env["precision"] == "fp32"
    (ds,) = lin["datasets"]
    from store.ids import hash_bytes

    assert ds["role"] == "train" and ds["id"] == hash_bytes(Path(train_data["corpus.txt"]).read_bytes())
    assert ds["size"] == Path(train_data["corpus.txt"]).stat().st_size
    m = final.metrics
    for key in ("loss", "tokens_per_s", "step_time_s", "peak_memory_mb", "train_runtime"):
        assert isinstance(m[key], (int, float)), key
    assert commits[0].metrics["step"] == 1 and "tokens_per_s" in commits[0].metrics


def test_dataset_is_stored_and_survives_gc(trepo, train_data):
    from mvc.datasets import export_dataset
    from store.gc import gc

    final = trepo.read_commit(trepo.refs.read("refs/heads/runs/pre"))
    (ds,) = final.lineage["datasets"]
    gc(trepo.objects, trepo.refs, grace_seconds=0)
    out = export_dataset(trepo, ds["commit"], trepo.root / "exported")
    assert out.read_bytes() == Path(train_data["corpus.txt"]).read_bytes()


def test_run_status_in_index_and_runs_table_rebuilt_by_reindex(trepo):
    rows = trepo.index().runs()
    (pre,) = [r for r in rows if r["name"] == "pre"]
    assert pre["status"] == "completed" and pre["method"] == "pretrain" and pre["step"] == 3 and pre["checkpoints"] == 3
    assert pre["head"] == trepo.refs.read("refs/heads/runs/pre")
    (trepo.dir / "index.duckdb").unlink()
    trepo.index().reindex()
    _cols, got = trepo.index().query("SELECT name, status, step FROM runs")
    assert ("pre", "completed", 3) in got


def test_runs_listed_from_branch_when_record_is_lost(trepo):
    from mvc import runs

    shutil.rmtree(trepo.dir / "runs")
    (rec,) = [r for r in runs.list_records(trepo) if r.name == "pre"]
    assert rec.status == "completed" and rec.method == "pretrain"


# -- each method ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "method,data,extra",
    [
        ("continue", "corpus.txt", {}),
        ("sft", "sft.jsonl", {}),
        ("sft", "chat.jsonl", {}),
        ("lora", "sft.jsonl", {}),
        ("dpo", "prefs.jsonl", {}),
        ("reward", "prefs.jsonl", {}),
        ("distill", "corpus.txt", {"teacher": "runs/pre"}),
    ],
    ids=["continue", "sft-prompt-completion", "sft-messages", "lora", "dpo", "reward", "distill"],
)
def test_method_trains_and_commits(trepo, train_data, method, data, extra):
    from trainers.run import train

    base = trepo.refs.read("refs/heads/runs/pre")
    result = train(trepo, _spec(method=method, name=f"t-{method}", base="runs/pre", data=train_data[data], max_steps=2, save_steps=2, **extra))
    assert result.status == "completed"
    ckpt, final = (trepo.read_commit(c) for c in result.commits)
    assert ckpt.kind == "checkpoint" and final.kind == "train"
    assert ckpt.parents == (base,)  # the run branch grows from the base commit
    assert final.lineage["base"] == base
    assert final.lineage["spec"]["base"] == base  # the resolved spec names the commit, not the ref
    files = set(trepo.read_tree(final.tree).entries)
    if method == "lora":
        assert {"adapter_config.json", "adapter_model.safetensors"} <= files
        assert final.metrics["trainable_parameters"] < final.metrics["parameters"]
    else:
        assert "model.safetensors" in files
    if method == "distill":
        assert final.lineage["teacher"] == base
        assert "distill_kl" in ckpt.metrics or "distill_kl" in final.metrics
    if method == "reward":
        assert json.loads(_read_file(trepo, final, "config.json"))["architectures"][0].endswith("ForSequenceClassification")


def _read_file(repo, commit, path: str) -> bytes:
    from store.materialize import entry_parts

    entry = repo.read_tree(commit.tree).entries[path]
    return b"".join(repo.objects.get(p.id) for p in entry_parts(repo.objects, entry))


def test_distill_loss_blends_kl_and_hard_labels():
    import torch

    from trainers.methods import distillation_loss

    torch.manual_seed(0)
    s, t = torch.randn(2, 5, 7), torch.randn(2, 5, 7)
    labels = torch.randint(0, 7, (2, 5))
    labels[1, 3:] = -100
    loss_same, kl_same, _ = distillation_loss(t, t, labels, temperature=2.0, alpha=1.0)
    assert float(kl_same) == pytest.approx(0.0, abs=1e-6) and float(loss_same) == pytest.approx(0.0, abs=1e-6)
    full, kl, ce = distillation_loss(s, t, labels, temperature=2.0, alpha=0.25)
    assert float(full) == pytest.approx(0.25 * float(kl) + 0.75 * float(ce), rel=1e-5)
    # T² scaling: the KL term is T² times the mean per-token KL of the softened distributions
    import torch.nn.functional as F

    mask = labels[:, 1:] != -100
    sl, tl = F.log_softmax(s[:, :-1] / 2, -1), F.log_softmax(t[:, :-1] / 2, -1)
    manual = ((tl.exp() * (tl - sl)).sum(-1) * mask).sum() / mask.sum() * 4
    assert float(kl) == pytest.approx(float(manual), rel=1e-5)


def test_into_advances_a_branch(trepo, train_data):
    from trainers.run import train

    trepo.create_ref("heads", "release", "runs/pre", message="test")
    result = train(trepo, _spec(method="sft", name="into", base="runs/pre", data=train_data["sft.jsonl"], max_steps=1, into="release"))
    assert trepo.refs.read("refs/heads/release") == result.final and result.into == "release"


def test_replay_from_commit_uses_recorded_spec_and_stored_data(trepo, tmp_path, mvc):
    data_copy = tmp_path / "gone.jsonl"
    proc = mvc("train", "--method", "sft", "--base", "runs/pre", "--data", str(_copy(trepo, data_copy)), "--max-steps", "1",
               "--set", "data.max_length=48", "--name", "orig", "--json", cwd=trepo.root, check=True)
    first = json.loads(proc.stdout)
    data_copy.unlink()  # the replay must take the data from the store
    proc = mvc("train", "--from", first["final"], "--json", cwd=trepo.root, check=True)
    again = json.loads(proc.stdout)
    a, b = (trepo.read_commit(x["final"]) for x in (first, again))
    assert again["name"].startswith("replay-")
    assert [d["id"] for d in a.lineage["datasets"]] == [d["id"] for d in b.lineage["datasets"]]
    assert {k: v for k, v in a.lineage["spec"].items() if k != "name"} == {k: v for k, v in b.lineage["spec"].items() if k != "name"}
    # same seed, same data, same spec: the same weights (CPU, fp32)
    assert trepo.read_tree(a.tree).entries["model.safetensors"].hash == trepo.read_tree(b.tree).entries["model.safetensors"].hash


def _copy(repo, dst: Path) -> Path:
    src = ROOT / "examples"
    import make_train_data

    make_train_data.write_all(dst.parent / "gen", lines=50)
    shutil.copy(dst.parent / "gen" / "sft.jsonl", dst)
    del src, repo
    return dst


# -- hooks file ------------------------------------------------------------------------------------
def test_hooks_file_events_and_custom_loss(trepo, train_data, tmp_path):
    from trainers.run import train

    log = tmp_path / "events.jsonl"
    hooks = tmp_path / "hooks.py"
    hooks.write_text(f"""
import json
LOG = {str(log)!r}
def _w(**kw):
    with open(LOG, "a") as f:
        f.write(json.dumps(kw) + "\\n")
def on_run_begin(run, **kw): _w(event="begin", name=run.name)
def on_step(run, step, logs, **kw): _w(event="step", step=step)
def on_checkpoint(run, step, commit, **kw): _w(event="checkpoint", step=step, commit=commit)
def on_run_end(run, status, commit, **kw): _w(event="end", status=status, commit=commit)
CALLS = []
def compute_loss(model, inputs, return_outputs=False, num_items_in_batch=None, **kw):
    out = model(**inputs)
    _w(event="loss")
    return (out.loss * 2, out) if return_outputs else out.loss * 2
""")
    result = train(trepo, _spec(method="continue", name="hooked", base="runs/pre", data=train_data["corpus.txt"], max_steps=2, save_steps=1,
                                hooks_file=str(hooks)))
    events = [json.loads(x) for x in log.read_text().splitlines()]
    kinds = [e["event"] for e in events]
    assert kinds[0] == "begin" and kinds[-1] == "end" and events[-1]["status"] == "completed"
    assert [e["step"] for e in events if e["event"] == "step"] == [1, 2]
    assert [e["commit"] for e in events if e["event"] == "checkpoint"] == result.commits[:2]
    assert kinds.count("loss") >= 2
    assert events[-1]["commit"] == result.final


def test_hooks_file_typo_is_refused(tmp_path):
    from hooks.python import load_hooks_file
    from store.errors import InvalidArgument

    bad = tmp_path / "h.py"
    bad.write_text("def on_stepp(run, **kw):\n    pass\n")
    with pytest.raises(InvalidArgument, match="on_stepp"):
        load_hooks_file(bad)


# -- rank 0 rule ---------------------------------------------------------------------------------
def test_only_rank_zero_commits(trepo, tmp_path):
    """Simulated ranks: the callback of a non-zero rank writes nothing, rank 0 commits."""
    from transformers import TrainerControl, TrainerState, TrainingArguments

    from trainers.callback import MvcCallback

    out = tmp_path / "out"
    ckpt = out / "checkpoint-5"
    ckpt.mkdir(parents=True)
    (ckpt / "config.json").write_text("{}")
    (ckpt / "optimizer.pt").write_bytes(b"not committed")
    args = TrainingArguments(output_dir=str(out), report_to="none", use_cpu=True)
    before = dict(trepo.refs.list())
    for rank, zero in ((1, False), (2, False)):
        cb = MvcCallback(trepo, "runs/ranked", add_environment=False)
        state = TrainerState(global_step=5, is_world_process_zero=zero, is_local_process_zero=(rank % 2 == 0))
        cb.on_save(args, state, TrainerControl())
        assert cb.commits == []
    assert dict(trepo.refs.list()) == before
    cb = MvcCallback(trepo, "runs/ranked", add_environment=False, lineage={"note": "rank0"})
    cb.on_save(args, TrainerState(global_step=5, is_world_process_zero=True), TrainerControl())
    cb.flush()  # checkpoints are committed in the background; flush waits for them
    (cid,) = cb.commits
    commit = trepo.read_commit(cid)
    assert commit.kind == "checkpoint" and commit.lineage["step"] == 5
    assert set(trepo.read_tree(commit.tree).entries) == {"config.json"}
    assert trepo.refs.read("refs/heads/runs/ranked") == cid


def test_retention_keeps_resume_state_for_newest_k(tmp_path):
    from trainers.callback import move_resume_state, prune_resume_state

    state = tmp_path / "state"
    for step in (2, 4, 6, 8):
        ck = tmp_path / "ck" / f"checkpoint-{step}"
        ck.mkdir(parents=True)
        for f in ("optimizer.pt", "scheduler.pt", "rng_state.pth", "training_args.bin", "model.safetensors"):
            (ck / f).write_bytes(b"x")
        moved = move_resume_state(ck, state / ck.name)
        assert sorted(moved) == ["optimizer.pt", "rng_state.pth", "scheduler.pt", "training_args.bin"]
        assert [p.name for p in ck.iterdir()] == ["model.safetensors"]
        prune_resume_state(state, 2)
    assert sorted(p.name for p in state.iterdir()) == ["checkpoint-6", "checkpoint-8"]


def test_retention_in_a_run(trepo, train_data):
    from trainers.run import train

    spec = _spec(method="continue", name="keep", base="runs/pre", data=train_data["corpus.txt"], max_steps=3, save_steps=1)
    spec.checkpoint.keep_optimizer = 1
    result = train(trepo, spec)
    assert len(result.commits) == 4  # every checkpoint stays in history
    state = trepo.dir / "runs" / "keep" / "state"
    assert [p.name for p in state.iterdir()] == ["checkpoint-3"]
    assert (state / "checkpoint-3" / "optimizer.pt").is_file()
    # model files live in the store only: the run directory keeps no weights
    assert not list((trepo.dir / "runs" / "keep").rglob("*.safetensors"))


# -- precision, qlora, runtime ------------------------------------------------------------------
def test_precision_falls_back_to_fp32_on_cpu():
    import torch

    from trainers.environment import detect_runtime

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    for asked in ("fp16", "bf16"):
        rt = detect_runtime(asked)
        assert rt.precision == "fp32" and rt.note and asked in rt.note
    assert detect_runtime("auto").precision == "fp32" and detect_runtime("auto").note is None


def test_qlora_without_gpu_is_a_clear_error(trepo, train_data, mvc):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    from mvc.errors import UnsupportedHardware

    proc = mvc("train", "--method", "qlora", "--base", "runs/pre", "--data", str(train_data["sft.jsonl"]), "--max-steps", "1", cwd=trepo.root)
    assert proc.returncode == UnsupportedHardware.exit_code, proc.stderr
    assert "qlora needs a CUDA GPU" in proc.stderr and "Traceback" not in proc.stderr
    assert "--method lora" in proc.stderr


@pytest.mark.skipif("not __import__('torch').cuda.is_available()", reason="needs a CUDA GPU with bitsandbytes")
def test_qlora_on_gpu(trepo, train_data):  # pragma: no cover - GPU only
    pytest.importorskip("bitsandbytes")
    from trainers.run import train

    result = train(trepo, _spec(method="qlora", name="q", base="runs/pre", data=train_data["sft.jsonl"], max_steps=2, save_steps=1))
    assert result.status == "completed"
    assert "adapter_model.safetensors" in trepo.read_tree(trepo.read_commit(result.final).tree).entries


def test_code_version_of_users_git_repository(tmp_path):
    import git

    from trainers.environment import code_version

    assert code_version(tmp_path) is None
    g = git.Repo.init(tmp_path)
    (tmp_path / "train.py").write_text("print(1)\n")
    g.index.add(["train.py"])
    g.index.commit("first", author=git.Actor("t", "t@t"), committer=git.Actor("t", "t@t"))
    cv = code_version(tmp_path)
    assert cv["commit"] == g.head.commit.hexsha and cv["dirty"] is False
    (tmp_path / "train.py").write_text("print(2)\n")
    assert code_version(tmp_path)["dirty"] is True


# -- spec validation ---------------------------------------------------------------------------
def test_spec_yaml_flags_and_set_merge(tmp_path):
    from trainers.spec import load_spec

    y = tmp_path / "run.yaml"
    y.write_text("method: sft\nbase: main\ndata:\n  train: d.jsonl\ntrain:\n  max_steps: 10\n  learning_rate: 1e-4\n")
    spec = load_spec(y, {"train": {"max_steps": 20}}, ["train.seed=7", "lora=null"]).resolved()
    assert spec.train.max_steps == 20 and spec.train.seed == 7 and spec.train.learning_rate == pytest.approx(1e-4)
    assert spec.resolved_dict()["model_config"] is None


@pytest.mark.parametrize(
    "sets,needle",
    [
        (["train.max_step=5"], "train.max_step"),
        (["trian.max_steps=5"], "trian"),
        (["train.learning_rate=-1"], "train.learning_rate"),
        (["train.precision=fp8"], "train.precision"),
        (["train.batch_size=lots"], "train.batch_size"),
        (["data.eval_split=1.5"], "data.eval_split"),
        (["lora.r=4"], "lora"),
    ],
)
def test_bad_spec_names_the_key(sets, needle):
    from trainers.spec import load_spec

    with pytest.raises(InvalidSpec) as e:
        load_spec(flags={"method": "sft", "base": "main", "data": {"train": "x.jsonl"}}, sets=sets)
    assert needle in e.value.message


def test_bad_spec_on_the_command_line_exits_with_invalid_spec(tmp_path, mvc, repo):
    y = tmp_path / "bad.yaml"
    y.write_text("method: sft\nbase: main\ndata: {train: x.jsonl}\ntrain: {max_steps: 3, warmup: 2}\n")
    proc = mvc("train", str(y), cwd=repo.root)
    assert proc.returncode == InvalidSpec.exit_code
    assert "train.warmup" in proc.stderr and "did you mean 'train.warmup_steps'" in proc.stderr
    proc = mvc("train", "--method", "sft", "--base", "main", "--data", "x.jsonl", "--set", "train.max_steps=many", cwd=repo.root)
    assert proc.returncode == InvalidSpec.exit_code and "train.max_steps" in proc.stderr
    proc = mvc("train", "--method", "dpo", "--data", "x.jsonl", cwd=repo.root)
    assert proc.returncode == InvalidSpec.exit_code and "needs a base" in proc.stderr


def test_dry_run_prints_resolved_spec_and_writes_nothing(mvc, repo):
    proc = mvc("train", "--method", "pretrain", "--data", "corpus.txt", "--max-steps", "5", "--name", "dry", "--dry-run", "--json", cwd=repo.root, check=True)
    spec = json.loads(proc.stdout)
    assert spec["method"] == "pretrain" and spec["model_config"] == "tiny" and spec["tokenizer"]["vocab_size"] == 512
    assert spec["train"]["learning_rate"] > 0 and spec["name"] == "dry"
    assert not (repo.dir / "runs").exists()


def test_wrong_data_format_for_method(trepo, train_data):
    from trainers.run import train

    with pytest.raises(InvalidSpec, match="preference"):
        train(trepo, _spec(method="dpo", name="wrongdata", base="runs/pre", data=train_data["sft.jsonl"]))
    from mvc import runs

    assert runs.read(trepo, "wrongdata").status == "failed"


def test_duplicate_run_name_is_refused(trepo, train_data):
    from mvc.errors import AlreadyExists
    from trainers.run import train

    with pytest.raises(AlreadyExists):
        train(trepo, _spec(method="pretrain", name="pre", data=train_data["corpus.txt"]))


# -- cancel and resume -----------------------------------------------------------------------------
def _wait_for(predicate, timeout: float, proc=None) -> None:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"training exited early ({proc.returncode}): {proc.stderr.read() if proc.stderr else ''}")
        time.sleep(0.2)
    raise AssertionError("timed out")


def test_sigint_cancels_keeps_last_checkpoint_and_resume_continues(trepo, train_data):
    import os
    import signal
    import subprocess
    import sys

    from mvc import runs
    from mvc.errors import TrainingCancelled

    cmd = [sys.executable, "-m", "mvc", "train", "--method", "continue", "--base", "runs/pre", "--data", str(train_data["corpus.txt"]),
           "--max-steps", "400", "--save-steps", "2", "--name", "slow", "--batch-size", "2", "--set", "data.max_length=32"]
    proc = subprocess.Popen(cmd, cwd=trepo.root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ))
    try:
        _wait_for(lambda: (r := runs.read(trepo, "slow")) is not None and r.checkpoints >= 1, 120, proc)
        proc.send_signal(signal.SIGINT)
        _out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == TrainingCancelled.exit_code, err
    assert "cancelled" in err and "--resume slow" in err
    record = runs.read(trepo, "slow")
    assert record.status == "cancelled" and record.step < 400
    tip = trepo.refs.read("refs/heads/runs/slow")
    last = trepo.read_commit(tip)
    assert last.kind == "checkpoint" and tip == record.head  # the last checkpoint is kept, no final commit
    assert [r["status"] for r in trepo.index().runs() if r["name"] == "slow"] == ["cancelled"]

    from trainers.run import resume

    stop_at = last.lineage["step"] + 2
    result = resume(trepo, "slow", sets=[f"train.max_steps={stop_at}"])
    assert result.status == "completed" and result.step == stop_at
    first_new = trepo.read_commit(result.commits[0])
    assert first_new.parents == (tip,) and first_new.lineage["step"] == stop_at
    final = trepo.read_commit(result.final)
    assert final.kind == "train" and runs.read(trepo, "slow").status == "completed"


def test_resume_of_completed_run_is_refused(trepo):
    from trainers.run import resume

    with pytest.raises(Exception, match="already completed"):
        resume(trepo, "pre")
    from mvc.errors import RunNotFound

    with pytest.raises(RunNotFound):
        resume(trepo, "nope")


def test_resume_restores_optimizer_state(trepo, train_data, tmp_path):
    """A run that fails after its step-2 checkpoint and is resumed ends with the weights of an uninterrupted run."""
    from mvc import runs
    from mvc.errors import TrainingFailed
    from trainers.run import resume, train

    hooks = tmp_path / "fail_once.py"
    marker = tmp_path / "failed-once"
    hooks.write_text(f"""
from pathlib import Path
def on_step(run, step, logs, **kw):
    if run.name == "half" and step == 3 and not Path({str(marker)!r}).exists():
        Path({str(marker)!r}).write_text("x")
        raise RuntimeError("boom at step 3")
""")
    common = dict(method="continue", base="runs/pre", data=train_data["corpus.txt"], max_steps=4, save_steps=2, hooks_file=str(hooks))
    whole = train(trepo, _spec(name="whole", **common))
    with pytest.raises(TrainingFailed, match="boom at step 3"):
        train(trepo, _spec(name="half", **common))
    rec = runs.read(trepo, "half")
    assert rec.status == "failed" and "boom" in rec.error and rec.checkpoints == 1
    assert (trepo.dir / "runs" / "half" / "state" / "checkpoint-2" / "optimizer.pt").is_file()
    done = resume(trepo, "half")
    assert done.status == "completed" and done.step == 4
    a = trepo.read_tree(trepo.read_commit(whole.final).tree).entries["model.safetensors"].hash
    b = trepo.read_tree(trepo.read_commit(done.final).tree).entries["model.safetensors"].hash
    assert a == b


def test_runs_cli_json(trepo, mvc):
    proc = mvc("runs", "--json", cwd=trepo.root, check=True)
    rows = json.loads(proc.stdout)
    assert any(r["name"] == "pre" and r["status"] == "completed" for r in rows)
    proc = mvc("runs", cwd=trepo.root, check=True)
    assert proc.stdout.splitlines()[0].split()[:3] == ["NAME", "STATUS", "METHOD"]
    assert mvc("runs", "ghost", cwd=trepo.root).returncode == 43


@pytest.mark.skipif(
    __import__("os").environ.get("MVC_TEST_MULTIPROCESS") != "1",
    reason="two gloo worker processes take ~35 s on 2 CPU cores, over the CI budget; set MVC_TEST_MULTIPROCESS=1 to run",
)
def test_two_processes_on_cpu_commit_once(trepo, train_data, mvc):
    proc = mvc("train", "--method", "sft", "--base", "runs/pre", "--data", str(train_data["sft.jsonl"]), "--max-steps", "2", "--save-steps", "1",
               "--name", "ddp", "--launcher", "accelerate", "--num-processes", "2", "--set", "data.max_length=48", cwd=trepo.root, timeout=300)
    assert proc.returncode == 0, proc.stderr
    from mvc import runs

    rec = runs.read(trepo, "ddp")
    assert rec.status == "completed" and rec.checkpoints == 2
    tip = trepo.refs.read("refs/heads/runs/ddp")
    final = trepo.read_commit(tip)
    assert final.kind == "train" and final.lineage["environment"]["world_size"] == 2
    # exactly one commit per checkpoint: rank 1 wrote nothing (a second writer would have lost a ref race)
    chain = [trepo.read_commit(final.parents[0])]
    chain.append(trepo.read_commit(chain[0].parents[0]))
    assert [c.lineage["step"] for c in chain] == [2, 1] and chain[1].parents == (trepo.refs.read("refs/heads/runs/pre"),)
    assert "moved while committing" not in proc.stderr


def test_missing_data_file_is_an_invalid_spec_before_anything_is_recorded(trepo, tmp_path):
    from mvc import runs
    from trainers.run import train

    with pytest.raises(InvalidSpec, match="data.train"):
        train(trepo, _spec(method="sft", name="nodata", base="runs/pre", data=tmp_path / "missing.jsonl"))
    assert runs.read(trepo, "nodata") is None


def test_background_commit_survives_checkpoint_deletion_and_reports_failures(trepo, tmp_path):
    """The Trainer may delete a checkpoint right after saving it: the staged hard links are committed
    anyway; a failing background commit is re-raised by flush()."""
    from transformers import TrainerControl, TrainerState, TrainingArguments

    from trainers.callback import MvcCallback

    out = tmp_path / "out"
    ckpt = out / "checkpoint-3"
    ckpt.mkdir(parents=True)
    (ckpt / "config.json").write_text('{"step": 3}')
    args = TrainingArguments(output_dir=str(out), report_to="none", use_cpu=True)
    cb = MvcCallback(trepo, "runs/bg", add_environment=False)
    cb.on_save(args, TrainerState(global_step=3, is_world_process_zero=True), TrainerControl())
    shutil.rmtree(ckpt)  # rotated away at once
    cb.flush()
    (cid,) = cb.commits
    tree = trepo.read_tree(trepo.read_commit(cid).tree)
    assert trepo.objects.get(tree.entries["config.json"].id) == b'{"step": 3}'
    # a failure in the background thread surfaces at the next flush
    ckpt.mkdir(parents=True)
    (ckpt / "config.json").write_text("{}")
    (trepo.dir / "hooks" / "pre-commit").write_text("#!/bin/sh\necho no >&2\nexit 1\n")
    (trepo.dir / "hooks" / "pre-commit").chmod(0o755)
    cb.on_save(args, TrainerState(global_step=3, is_world_process_zero=True), TrainerControl())
    from mvc.errors import HookRejected

    with pytest.raises(HookRejected):
        cb.flush()
