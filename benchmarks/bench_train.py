"""Benchmark: what mvc train costs over plain trl.

1. Throughput: tokens/s of ``mvc train --method sft`` (through ``trainers.run.train``: telemetry,
   progress line, hooks, run records) against a plain ``trl.SFTTrainer`` run of the same spec
   (same model, data, SFTConfig) in the same process, no checkpoints. Target: ≥ 0.97×.
2. Checkpoint commit overhead: the time ``MvcCallback`` adds to each checkpoint save (staging
   the model files, snapshot into the store, commit, index row, ref), against the time the
   Trainer takes to write the checkpoint itself (model, optimizer, scheduler, RNG state).
   Target: ≤ 10 %.

Runs alternate (baseline, mvc, baseline, mvc, ...) and the median is reported, so drift of a
shared machine hits both sides alike.

    python benchmarks/bench_train.py [--steps 40] [--repeats 3] [--preset small]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "examples"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def build_base(work: Path, preset: str) -> Path:
    """A pretrained-shaped base model (random weights) of the given preset, with a trained tokenizer."""
    import make_train_data

    from trainers import models

    data = make_train_data.write_all(work / "data", lines=400)
    texts = data["corpus.txt"].read_text().splitlines()
    tok = models.train_tokenizer(texts, vocab_size=512)
    cfg = models.model_config(preset, tok, max_length=128)
    model = models.new_model(cfg, seed=0)
    base = work / "base"
    model.save_pretrained(base)
    tok.save_pretrained(base)
    return base


def sft_rows(n: int) -> list[dict]:
    import make_train_data

    facts = make_train_data.facts()
    return [{"prompt": f"question: {q}\nanswer:", "completion": f" {a}"} for q, a, _ in (facts * (n // len(facts) + 1))[:n]]


def plain_trl(base: Path, rows: list[dict], steps: int, out: Path, batch: int) -> float:
    """Tokens/s of a plain SFTTrainer run: tokens trained (trl's own count) / train_runtime."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    tok = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base)
    args = SFTConfig(output_dir=str(out), max_steps=steps, per_device_train_batch_size=batch, learning_rate=5e-4, bf16=False,
                     gradient_checkpointing=False, report_to="none", disable_tqdm=True, logging_steps=1, save_strategy="no",
                     use_cpu=True, max_length=128, lr_scheduler_type="cosine", seed=0, data_seed=0, dataloader_num_workers=0)
    trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tok)
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)
    out_metrics = trainer.train().metrics
    return trainer._total_train_tokens / out_metrics["train_runtime"]


def with_mvc(repo, base_ref: str, data: Path, steps: int, name: str, batch: int, save_steps: int | None = None):
    from trainers.run import train
    from trainers.spec import load_spec

    ckpt = {"save_steps": save_steps} if save_steps else {}
    spec = load_spec(flags={"method": "sft", "name": name, "base": base_ref, "data": {"train": str(data)},
                            "train": {"max_steps": steps, "batch_size": batch, "learning_rate": 5e-4}, "checkpoint": ckpt})
    result = train(repo, spec, stream=open(os.devnull, "w"))
    return result


def _child(argv: list[str]) -> float:
    """Run one throughput measurement in a new Python process; return its tokens/s."""
    import subprocess

    proc = subprocess.run([sys.executable, __file__, "--child", *argv], capture_output=True, text=True, check=True)
    return float(proc.stdout.strip().splitlines()[-1])


def child(argv: list[str]) -> None:
    import json

    import torch

    from trainers.run import quiet_libraries

    quiet_libraries()
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    kind, *rest = argv
    if kind == "plain":
        base, rows, steps, out, batch = rest
        print(plain_trl(Path(base), json.loads(Path(rows).read_text()), int(steps), Path(out), int(batch)))
        return
    from mvc.repo import Repo

    root, data, steps, name, batch = rest
    repo = Repo(Path(root))
    r = with_mvc(repo, "main", Path(data), int(steps), name, int(batch))
    m = repo.read_commit(r.final).metrics
    print(m["tokens_seen"] / m["train_runtime"])


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2:])
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--preset", default="small")
    ap.add_argument("--save-every", type=int, default=10)
    args = ap.parse_args()

    import json

    import torch

    from mvc.repo import Repo
    from trainers.run import quiet_libraries

    quiet_libraries()
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        base = build_base(work, args.preset)
        rows = sft_rows(args.steps * args.batch)
        data = work / "sft.jsonl"
        data.write_text("".join(json.dumps(r) + "\n" for r in rows))
        repo = Repo.init(work / "repo")
        repo.commit(base, "base", branch="main")
        params = sum(p.numel() for p in __import__("transformers").AutoModelForCausalLM.from_pretrained(base).parameters())

        # 1. throughput (no checkpoints): alternate baseline and mvc, each in a fresh process so
        # that neither inherits the other's warmed-up allocator, thread pools or caches
        (work / "rows.json").write_text(json.dumps(rows))
        plain, ours = [], []
        for i in range(args.repeats):
            plain.append(_child(["plain", str(base), str(work / "rows.json"), str(args.steps), str(work / f"plain{i}"), str(args.batch)]))
            ours.append(_child(["mvc", str(repo.root), str(data), str(args.steps), f"tp{i}", str(args.batch)]))
        tp_plain, tp_mvc = statistics.median(plain), statistics.median(ours)
        print("tokens/s samples: plain", [round(x) for x in plain], "mvc", [round(x) for x in ours])

        # 2. checkpoint overhead: Trainer save time vs. the commit MvcCallback adds
        from trainers import callback as cbmod

        save_times, commit_times = [], []
        real_commit = None

        import transformers.trainer as trmod

        orig_save = trmod.Trainer._save_checkpoint

        def timed_save(self, model, trial):
            t0 = time.perf_counter()
            orig_save(self, model, trial)
            save_times.append(time.perf_counter() - t0)

        trmod.Trainer._save_checkpoint = timed_save
        try:
            real = cbmod.MvcCallback._resolve()
            real_commit = real.on_save

            def timed_on_save(self, a, state, control, **kw):
                t0 = time.perf_counter()
                real_commit(self, a, state, control, **kw)
                commit_times.append(time.perf_counter() - t0)

            real.on_save = timed_on_save
            for i in range(args.repeats):
                with_mvc(repo, "main", data, args.steps, f"ck{i}", args.batch, save_steps=args.save_every)
        finally:
            trmod.Trainer._save_checkpoint = orig_save
            if real_commit is not None:
                cbmod.MvcCallback._resolve().on_save = real_commit
        save_s, commit_s = statistics.median(save_times), statistics.median(commit_times)

    ratio = tp_mvc / tp_plain
    overhead = commit_s / save_s
    print(f"model: {args.preset} preset, {params / 1e6:.2f} M parameters; {args.steps} steps of batch {args.batch}, {args.repeats} repeats (median)")
    print(f"sft tokens/s   plain trl {tp_plain:9.0f}   mvc train {tp_mvc:9.0f}   ratio {ratio:.3f}  (target >= 0.97) {'OK' if ratio >= 0.97 else 'MISS'}")
    print(f"checkpoint     trainer save {save_s * 1000:7.1f} ms   + mvc commit {commit_s * 1000:7.1f} ms   overhead {overhead:.1%}  "
          f"(target <= 10%) {'OK' if overhead <= 0.10 else 'MISS'}")


if __name__ == "__main__":
    main()
