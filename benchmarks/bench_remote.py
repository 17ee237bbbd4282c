"""Remote benchmark: mvc push / clone against raw s3fs put / get of the same bytes, on a local S3 (moto).

    python benchmarks/bench_remote.py [--workdir ./bench-remote] [--size-mb 1024] [--tensors 100] [--jobs 8]
                                      [--append benchmarks/RESULTS.md --date 2026-11-21]

What it does, in one run:

1. Writes a model directory (``config.json`` + ``model.safetensors`` with ``--tensors`` fp16
   tensors, ``--size-mb`` MiB in all; numpy + safetensors) and commits it on ``main``; then a
   fine-tune in which 10 % of the tensors changed, committed on top of it on branch ``tune``.
2. Starts moto's S3 server (``python -m moto.server``) on 127.0.0.1 and a free port, in its own
   process, and makes a bucket. Dummy credentials.
3. Baseline, measured in the same run at the same concurrency: s3fs ``put`` of exactly the
   object files the first push sends (``batch_size=--jobs``) and s3fs ``get`` of them back, the
   latter also followed by ``sync`` (a clone fsyncs every object it stores, as every mvc write does).
4. mvc (the Python API, one process): first push of the base commit; clone of it into a new
   directory (download, verify, check out); push of the fine-tune; push with nothing new, as an
   API call and as a whole ``mvc push`` process (interpreter start-up, imports, a new S3 client).
   Each mvc step runs right beside its baseline (which goes first alternates), ``--repeat`` times,
   into fresh prefixes deleted afterwards so that moto's memory stays flat. Reported: the best
   time of each, every run, and the median of the paired ratios (robust on a shared machine).
5. Prints a table with throughputs and ratios and the three targets (first push >= 0.8x raw put
   throughput; fine-tune push moves <= 15 % of the model's bytes; no-change push < 1 s).
   With ``--append`` the table is appended to a results file under a "Remotes" heading.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
FRACTION_CHANGED = 0.10


def _random_fp16(rng, shape):
    import numpy as np

    bits = rng.integers(0, 1 << 16, size=shape, dtype=np.uint16)
    bits &= 0xBFFF  # finite values only
    return bits.view(np.float16)


def build_model(directory: Path, size_mb: int, n_tensors: int, changed: list[int] = (), seed: int = 0) -> None:
    import numpy as np
    from safetensors.numpy import save_file

    directory.mkdir(parents=True, exist_ok=True)
    per_tensor = size_mb * 1024 * 1024 // n_tensors // 2
    cols = 1024 if per_tensor >= 1024 else max(1, per_tensor)
    rows = max(1, per_tensor // cols)
    rng = np.random.default_rng(seed)
    names = [f"model.layers.{i:03d}.weight" for i in range(n_tensors)]
    tensors = {n: _random_fp16(rng, (rows, cols)) for n in names}
    tweak = np.random.default_rng(seed + 1)
    for i in changed:
        tensors[names[i]] = _random_fp16(tweak, (rows, cols))
    save_file(tensors, str(directory / "model.safetensors"), metadata={"format": "pt"})
    (directory / "config.json").write_text(json.dumps({"model_type": "bench", "tensors": n_tensors}))


def start_moto() -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return proc, f"http://127.0.0.1:{port}"
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("moto server did not start (pip install 'moto[server]')") from None
            time.sleep(0.1)


def timed(fn):
    t = time.perf_counter()
    result = fn()
    return time.perf_counter() - t, result


def mib(n: float) -> float:
    return n / 1024 / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", default="bench-remote", help="scratch directory (removed first)")
    ap.add_argument("--size-mb", type=int, default=1024, help="model size in MiB")
    ap.add_argument("--tensors", type=int, default=100, help="number of fp16 tensors")
    ap.add_argument("--jobs", type=int, default=8, help="parallel transfers, for mvc and s3fs alike")
    ap.add_argument("--repeat", type=int, default=2, help="alternate baseline and mvc this many times; report the best of each")
    ap.add_argument("--append", help="append the results table to this markdown file")
    ap.add_argument("--date", default=time.strftime("%Y-%m-%d"), help="date written with --append")
    args = ap.parse_args()

    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    os.environ["AWS_EC2_METADATA_DISABLED"] = "true"

    from mvc.remotes import add_remote, clone, push
    from mvc.repo import Repo
    from store.backends import open_raw_backend
    from store.walk import walk

    work = Path(args.workdir).resolve()
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    n_changed = max(1, round(args.tensors * FRACTION_CHANGED))
    print(f"building a {args.size_mb} MiB model ({args.tensors} tensors) and its fine-tune ({n_changed} tensors changed) ...", file=sys.stderr)
    repo_dir = work / "repo"
    build_model(repo_dir / "model", args.size_mb, args.tensors)
    repo = Repo.init(repo_dir)
    base = repo.commit(repo_dir / "model", "base").id
    model_bytes = (repo_dir / "model" / "model.safetensors").stat().st_size + (repo_dir / "model" / "config.json").stat().st_size

    proc, endpoint = start_moto()
    try:
        fs = open_raw_backend("s3://bench", endpoint_url=endpoint, jobs=args.jobs).fs
        fs.mkdir("bench")
        # The fine-tune is a branch on top of the base, so that every repetition can push both.
        build_model(repo_dir / "tuned", args.size_mb, args.tensors, changed=list(range(0, args.tensors, args.tensors // n_changed))[:n_changed])
        tuned = repo.commit(repo_dir / "tuned", "fine-tune", branch="tune", parents=[base]).id
        shutil.rmtree(repo_dir / "tuned")

        # Baseline and mvc alternate (which goes first alternates too), ``--repeat`` times, each into
        # fresh prefixes that are deleted afterwards so moto's memory stays flat; the best of each counts.
        objects = sorted(walk(repo.objects, [base]).objects | {base})
        lpaths = [str(repo.objects.path(o)) for o in objects]
        raw_bytes = sum(os.path.getsize(p) for p in lpaths)
        raw_put, raw_get, pushes, clones, tunes, noops, cli_noops = [], [], [], [], [], [], []
        put_ratios, get_ratios = [], []

        def raw_put_step(i: int) -> None:
            rpaths = [f"bench/raw{i}/{o[:2]}/{o[2:]}" for o in objects]
            os.sync()
            raw_put.append(timed(lambda: fs.put(lpaths, rpaths, batch_size=args.jobs))[0])

        def raw_get_step(i: int) -> None:
            rpaths = [f"bench/raw{i}/{o[:2]}/{o[2:]}" for o in objects]
            get_dir = work / f"raw-get{i}"
            get_dir.mkdir()
            os.sync()
            t_get, _ = timed(lambda: fs.get(rpaths, [str(get_dir / o) for o in objects], batch_size=args.jobs))
            t_sync, _ = timed(os.sync)  # mvc fsyncs what it stores; this is the same bytes reaching the disk
            raw_get.append((t_get, t_get + t_sync))
            shutil.rmtree(get_dir)

        def push_step(i: int) -> None:
            add_remote(repo, f"r{i}", f"s3://bench/mvc{i}", endpoint_url=endpoint, jobs=args.jobs)
            os.sync()
            pushes.append(timed(lambda: push(repo, f"r{i}", ["main"], jobs=args.jobs)))

        def clone_step(i: int) -> None:
            os.sync()
            clones.append(timed(lambda: clone(f"s3://bench/mvc{i}", work / f"clone{i}", endpoint_url=endpoint, jobs=args.jobs)))
            assert clones[-1][1][0].resolve("main") == base
            shutil.rmtree(work / f"clone{i}")

        # Each mvc step runs right next to its baseline (which of the two goes first alternates), so
        # that the load of a shared machine hits both alike; the paired ratios are reported too.
        for i in range(args.repeat):
            pair = (raw_put_step, push_step) if i % 2 == 0 else (push_step, raw_put_step)
            for step in pair:
                step(i)
            put_ratios.append(raw_put[-1] / pushes[-1][0])
            pair = (raw_get_step, clone_step) if i % 2 == 0 else (clone_step, raw_get_step)
            for step in pair:
                step(i)
            get_ratios.append(raw_get[-1][0] / clones[-1][0])
            name = f"r{i}"
            tunes.append(timed(lambda name=name: push(repo, name, ["tune"], jobs=args.jobs)))
            assert tunes[-1][1].updates[0].new == tuned
            noops.append(timed(lambda name=name: push(repo, name, ["main"], jobs=args.jobs)))
            assert noops[-1][1].updates[0].status == "up-to-date"
            # the same through the CLI: a whole process (interpreter, imports, a new S3 client)
            cli = [sys.executable, "-m", "mvc", "-q", "-C", str(repo_dir), "push", name, "main"]
            cli_noops.append(timed(lambda cli=cli: subprocess.run(cli, check=True, capture_output=True))[0])
            fs.rm(f"bench/raw{i}", recursive=True)
            fs.rm(f"bench/mvc{i}", recursive=True)
        t_raw_put = min(raw_put)
        t_raw_get, t_raw_get_sync = min(raw_get, key=lambda x: x[0])
        t_push, first = min(pushes, key=lambda x: x[0])
        t_clone, (_cloned, fetched, _b) = min(clones, key=lambda x: x[0])
        t_tune, tune = min(tunes, key=lambda x: x[0])
        t_noop, noop = min(noops, key=lambda x: x[0])
        t_cli_noop = min(cli_noops)
        put_ratio, get_ratio = statistics.median(put_ratios), statistics.median(get_ratios)
    finally:
        proc.kill()

    sent = first.stats.bytes_moved
    rows = [
        ("first push", f"{t_push:.2f} s, {mib(sent) / t_push:.0f} MiB/s", f"{t_raw_put:.2f} s, {mib(raw_bytes) / t_raw_put:.0f} MiB/s",
         f"{put_ratio:.2f}x (median of pairs; best of each {(sent / t_push) / (raw_bytes / t_raw_put):.2f}x)", ">= 0.8x", put_ratio >= 0.8),
        ("clone (download, verify, fsync, check out)", f"{t_clone:.2f} s, {mib(fetched.stats.bytes_moved) / t_clone:.0f} MiB/s",
         f"get {t_raw_get:.2f} s, {mib(raw_bytes) / t_raw_get:.0f} MiB/s; get + sync {t_raw_get_sync:.2f} s",
         f"{get_ratio:.2f}x of get (median of pairs); best of each {(fetched.stats.bytes_moved / t_clone) / (raw_bytes / t_raw_get):.2f}x of get, "
         f"{(fetched.stats.bytes_moved / t_clone) / (raw_bytes / t_raw_get_sync):.2f}x of get + sync", "-", None),
        ("fine-tune push", f"{t_tune:.2f} s, {mib(tune.stats.bytes_moved):.1f} MiB sent, {mib(tune.stats.bytes_skipped):.0f} MiB skipped", "-",
         f"{tune.stats.bytes_moved / model_bytes:.1%} of the model", "<= 15 %", tune.stats.bytes_moved / model_bytes <= 0.15),
        ("no-change push (API call)", f"{t_noop * 1000:.0f} ms, {noop.stats.bytes_moved} B sent", "-", "-", "< 1 s", t_noop < 1.0),
        ("no-change push (`mvc push` process)", f"{t_cli_noop:.2f} s", "-", "-", "< 1 s", t_cli_noop < 1.0),
    ]
    header = "| figure | mvc | raw s3fs (same bytes, same jobs) | ratio | target | met |\n|---|---|---|---|---|---|\n"
    table = header + "".join(f"| {a} | {b} | {c} | {d} | {e} | {'-' if ok is None else ('yes' if ok else 'NO')} |\n" for a, b, c, d, e, ok in rows)
    machine = f"{platform.machine()}, {os.cpu_count()} cores (`nproc`), Python {platform.python_version()}, moto server on 127.0.0.1 (same machine)"
    def runs(times) -> str:
        return ", ".join(f"{t:.2f}" for t in times)

    note = (f"Model: {args.size_mb} MiB in {args.tensors} fp16 tensors; fine-tune changes {n_changed} tensors; "
            f"--jobs {args.jobs}; best of {args.repeat}; first push sent {first.stats.objects_moved} objects ({mib(sent):.0f} MiB).\n"
            f"Every run, in seconds: raw put {runs(raw_put)}; mvc first push {runs(t for t, _ in pushes)}; "
            f"raw get {runs(g for g, _ in raw_get)} (+ sync {runs(gs for _, gs in raw_get)}); mvc clone {runs(t for t, _ in clones)}; "
            f"fine-tune push {runs(t for t, _ in tunes)}; no-change push {runs(t for t, _ in noops)}; "
            f"no-change `mvc push` process {runs(cli_noops)}.")
    print(table)
    print(note)
    print(machine)
    if args.append:
        with open(args.append, "a") as f:
            f.write(f"\n## Remotes\n\n{args.date}, {machine}.\n`python benchmarks/bench_remote.py --size-mb {args.size_mb} --jobs {args.jobs} --repeat {args.repeat}`\n\n"
                    f"{table}\n{note}\n")


if __name__ == "__main__":
    main()
