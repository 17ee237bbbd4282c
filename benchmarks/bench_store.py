"""Store benchmark: mvc against ``cp`` on a ~1 GB safetensors model and a 10 % fine-tune.

    python benchmarks/bench_store.py [--workdir ./bench-out] [--size-mb 1024] [--repeat 3]

What it does, in one run:

1. Writes a model directory (``config.json`` + ``model.safetensors`` with ``--tensors`` fp16
   tensors of random data, ``--size-mb`` MiB in all) and a fine-tune copy in which 10 % of the
   tensors are different and the rest byte-identical. numpy + safetensors.numpy, no torch.
   Every file's mtime is set 60 s into the past so that the stat cache's racy window
   (files modified just before they are read are never cached) does not apply.
2. Warms the page cache by copying each model once with ``cp -r`` (untimed): the page cache
   cannot be dropped without root, so every figure is a warm-cache figure, for cp and mvc alike.
3. Times the real CLI (``mvc`` as a subprocess) against ``cp -r`` of the same directory, and
   against ``cp -r && sync`` as a second baseline: mvc fsyncs every object it writes (a commit
   survives a power cut), cp does not. ``sync`` is run (untimed) before every timed step so
   that no step pays for an earlier one's dirty pages, and ``--memory`` says how large steps
   start (see ``Settle``: on a VM that hands freed memory back to its host, fresh page cache
   is expensive). Targets are judged against plain cp.
4. Prints a table: figure, mvc, cp, cp + sync, ratio (mvc / cp), target, met?; then every
   sample, and the CPU time (user + sys) of the timed processes, which other load on the
   machine disturbs less than wall time.

Steps repeated ``--repeat`` times report the median; commit of the base model uses a fresh
repository each time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

FRACTION_CHANGED = 0.10


# -- model files -----------------------------------------------------------------------------

def _random_fp16(rng, shape):
    import numpy as np

    bits = rng.integers(0, 1 << 16, size=shape, dtype=np.uint16)
    bits &= 0xBFFF  # clear the top exponent bit: every value is finite, |x| < 2
    return bits.view(np.float16)


def build_models(work: Path, size_mb: int, n_tensors: int, seed: int = 0) -> tuple[Path, Path, list[str]]:
    """``work/base`` and ``work/finetune``; returns them and the names of the changed tensors."""
    import numpy as np
    from safetensors.numpy import save_file

    rng = np.random.default_rng(seed)
    per_tensor = size_mb * 1024 * 1024 // n_tensors // 2  # fp16 elements per tensor
    cols = 1024 if per_tensor >= 1024 else max(1, per_tensor)
    rows = max(1, per_tensor // cols)
    names = [f"model.layers.{i // 7}.{['q', 'k', 'v', 'o', 'gate', 'up', 'down'][i % 7]}_proj.weight" for i in range(n_tensors)]
    tensors = {n: _random_fp16(rng, (rows, cols)) for n in names}
    config = {"architectures": ["BenchModel"], "num_tensors": n_tensors, "torch_dtype": "float16", "bench_size_mb": size_mb}

    base, ft = work / "base", work / "finetune"
    for d in (base, ft):
        d.mkdir(parents=True)
        (d / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    save_file(tensors, str(base / "model.safetensors"), metadata={"format": "pt"})

    k = max(1, round(n_tensors * FRACTION_CHANGED))
    changed = sorted(rng.choice(names, size=k, replace=False).tolist())
    for n in changed:
        tensors[n] = _random_fp16(rng, (rows, cols))
    save_file(tensors, str(ft / "model.safetensors"), metadata={"format": "pt"})
    del tensors

    past = time.time() - 60  # out of the stat cache's racy window
    for d in (base, ft):
        for p in d.iterdir():
            os.utime(p, (past, past))
    return base, ft, changed


def dir_bytes(d: Path) -> int:
    return sum(p.stat().st_size for p in d.rglob("*") if p.is_file())


def du_bytes(d: Path, apparent: bool = False) -> int:
    """Disk usage as ``du`` reports it (allocated blocks), or the apparent size."""
    args = ["du", "-s", "--block-size=1"] + (["--apparent-size"] if apparent else []) + [str(d)]
    return int(subprocess.run(args, check=True, capture_output=True, text=True).stdout.split()[0])


# -- timing ----------------------------------------------------------------------------------

def sync() -> None:
    subprocess.run(["sync"], check=True)


class Settle:
    """What runs (untimed) before each large timed step, so that every step starts alike.

    ``sync`` always: no step pays for an earlier step's dirty pages. Then, by ``mode``:

    - ``hot`` (default): write a scratch file of ``nbytes`` into the page cache and delete it,
      so the step gets memory the kernel has just freed. On a VM whose balloon driver hands
      free pages back to the host ("free page reporting", ~2 s after they are freed), the
      first touch of memory the host took back costs ~1 s per GiB of kernel time; the
      scratch file moves that cost out of the timed step, for cp and mvc alike, as on bare metal.
    - ``cold``: sleep 3 s, so that every step pays that cost in full, for cp and mvc alike.
    - ``none``: just ``sync``.
    """

    def __init__(self, mode: str, scratch: Path, nbytes: int) -> None:
        self.mode, self.scratch, self.nbytes = mode, scratch, nbytes

    def __call__(self) -> None:
        sync()
        if self.mode == "cold":
            time.sleep(3)
        elif self.mode == "hot":
            chunk = b"\0" * (64 << 20)
            with open(self.scratch, "wb") as f:
                for _ in range(max(1, self.nbytes // len(chunk))):
                    f.write(chunk)
            os.unlink(self.scratch)


CPU: dict[str, list[float]] = {}  # figure -> CPU seconds (user + sys) of the timed mvc / cp processes


def _children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def run(cmd: list[str], *, ok_codes=(0,)) -> subprocess.CompletedProcess:
    """Run ``cmd``; the result carries ``cpu``, the CPU seconds (user + sys) it used."""
    before = _children_cpu()
    p = subprocess.run(cmd, capture_output=True, text=True)
    p.cpu = _children_cpu() - before
    if p.returncode not in ok_codes:
        sys.exit(f"command failed ({p.returncode}): {' '.join(cmd)}\n{p.stdout}{p.stderr}")
    return p


def timed(cmd: list[str], settle=None, ok_codes=(0,)) -> tuple[float, subprocess.CompletedProcess]:
    """Wall time of one run of ``cmd`` (a real subprocess), after ``settle()`` if given."""
    if settle is not None:
        settle()
    t = time.perf_counter()
    p = run(cmd, ok_codes=ok_codes)
    return time.perf_counter() - t, p


def time_cp(src: Path, dst: Path, settle, *, then_sync: bool, cpu: list[float] | None = None) -> float:
    settle()
    t = time.perf_counter()
    p = run(["cp", "-r", str(src), str(dst)])
    if then_sync:
        sync()
    elapsed = time.perf_counter() - t
    if cpu is not None:
        cpu.append(p.cpu)
    shutil.rmtree(dst)
    return elapsed


def median(xs: list[float]) -> float:
    return statistics.median(xs)


# -- the benchmark ---------------------------------------------------------------------------

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", default="./bench-out", help="scratch directory (default ./bench-out, gitignored)")
    ap.add_argument("--size-mb", type=int, default=1024, help="model size in MiB (default 1024)")
    ap.add_argument("--tensors", type=int, default=100, help="number of fp16 tensors (default 100)")
    ap.add_argument("--repeat", type=int, default=3, help="repetitions of each timed step (median reported)")
    ap.add_argument("--quick-repeat", type=int, default=5, help="repetitions of the sub-second commands")
    ap.add_argument("--mvc", default=None, help="mvc executable (default: the one beside this Python, else on PATH)")
    ap.add_argument("--memory", choices=("hot", "cold", "none"), default="hot",
                    help="how each large step starts (see Settle): hot (default), cold or none")
    ap.add_argument("--keep", action="store_true", help="keep the scratch directory afterwards")
    args = ap.parse_args()

    mvc = args.mvc or str(Path(sys.executable).with_name("mvc"))
    if not Path(mvc).exists():
        mvc = shutil.which("mvc") or sys.exit("mvc not found; install the package (pip install -e .)")
    work = Path(args.workdir).resolve() / "store-bench"
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    env_note = {"MVC_AUTHOR": "bench <bench@example.com>"}
    os.environ.update(env_note)
    R, Q = args.repeat, args.quick_repeat

    def log(msg: str) -> None:
        print(f"[bench] {msg}", file=sys.stderr, flush=True)

    log(f"building a {args.size_mb} MiB model with {args.tensors} fp16 tensors and a fine-tune in {work}")
    t0 = time.perf_counter()
    base, ft, changed = build_models(work, args.size_mb, args.tensors)
    model_bytes = dir_bytes(base)
    log(f"built in {time.perf_counter() - t0:.1f} s: {model_bytes:,} bytes per model, {len(changed)} tensors changed in the fine-tune")

    # warm-up: read both models once through cp (untimed)
    for src in (base, ft):
        run(["cp", "-r", str(src), str(work / "warm")])
        shutil.rmtree(work / "warm")
    sync()

    settle = Settle(args.memory, work / "settle.tmp", 2 * model_bytes)
    rows: list[dict] = []
    start_t = []
    for _ in range(Q):
        t, p = timed([mvc, "--version"])
        start_t.append(t)
        CPU.setdefault("mvc --version (start-up)", []).append(p.cpu)
    start = median(start_t)

    # 1. commit of the base model, a fresh repository each time
    log("commit of the base model")
    cp_t, cps_t, mvc_t = [], [], []
    cpu_mvc, cpu_cp = CPU.setdefault("commit base model", []), CPU.setdefault("cp of the model (commit step)", [])
    repos = []
    for i in range(R):
        cp_t.append(time_cp(base, work / f"cp{i}", settle, then_sync=False, cpu=cpu_cp))
        cps_t.append(time_cp(base, work / f"cp{i}", settle, then_sync=True))
        repo = work / f"repo{i}"
        run([mvc, "init", str(repo)])
        t, p = timed([mvc, "-C", str(repo), "commit", str(base), "-m", "base", "--json"], settle)
        mvc_t.append(t)
        cpu_mvc.append(p.cpu)
        repos.append(repo)
        if i == 0:
            base_commit = json.loads(p.stdout)["commit"]
    repo = repos[0]
    for r in repos[1:]:
        shutil.rmtree(r)
    rows.append(dict(name="commit base model (1st time)", mvc=median(mvc_t), cp=median(cp_t), cps=median(cps_t),
                     target="<= 2x cp", ok=median(mvc_t) <= 2 * median(cp_t), base="cp", samples=(mvc_t, cp_t, cps_t)))

    # 2. status and re-commit of the unchanged model: the stat cache means nothing is read
    log("status / re-commit of the unchanged model")
    st_t = []
    for _ in range(R):
        t, p = timed([mvc, "-C", str(repo), "status", str(base)], sync)
        if "nothing to commit" not in p.stdout:
            sys.exit(f"status of the unchanged model is not clean:\n{p.stdout}")
        st_t.append(t)
        CPU.setdefault("status, unchanged", []).append(p.cpu)
    nc_t = []  # plain `mvc commit`: refuses with "nothing to commit" (exit 16) after hashing the tree
    for _ in range(R):
        t, p = timed([mvc, "-C", str(repo), "commit", str(base), "-m", "unchanged"], sync, ok_codes=(16,))
        if "nothing to commit" not in p.stderr:
            sys.exit(f"expected 'nothing to commit':\n{p.stderr}")
        nc_t.append(t)
    rc_t, files_read = [], []
    for i in range(R):
        t, p = timed([mvc, "-C", str(repo), "commit", str(base), "--allow-empty", "-m", f"unchanged {i}", "--json"], sync)
        rc_t.append(t)
        CPU.setdefault("re-commit, unchanged, --allow-empty", []).append(p.cpu)
        files_read.append(json.loads(p.stdout)["files_read"])
    rows.append(dict(name="status, unchanged model", mvc=median(st_t), cp=None, cps=None, start=start,
                     target="<= 0.2 s + start-up", ok=median(st_t) <= 0.2 + start, base="start", samples=(st_t, start_t)))
    rows.append(dict(name="re-commit, unchanged: 'nothing to commit'", mvc=median(nc_t), cp=None, cps=None, start=start,
                     target="<= 0.2 s + start-up", ok=median(nc_t) <= 0.2 + start, base="start", samples=(nc_t, start_t)))
    rows.append(dict(name=f"re-commit, unchanged, --allow-empty (files read: {max(files_read)})", mvc=median(rc_t), cp=None, cps=None, start=start,
                     target="<= 0.2 s + start-up", ok=median(rc_t) <= 0.2 + start and max(files_read) == 0, base="start",
                     samples=(rc_t, start_t)))

    # 3. commit of the fine-tune (10 % of tensors changed): everything is read, 10 % is written
    log("commit of the fine-tune")
    cp_ft = [time_cp(ft, work / "cpft", settle, then_sync=False, cpu=CPU.setdefault("cp of the fine-tune", [])) for _ in range(R)]
    cps_ft = [time_cp(ft, work / "cpft", settle, then_sync=True) for _ in range(R)]
    t_ft, p = timed([mvc, "-C", str(repo), "commit", str(ft), "-m", "fine-tune", "--json"], settle)
    ft_info = json.loads(p.stdout)
    CPU["commit fine-tune"] = [p.cpu]
    rows.append(dict(name="commit fine-tune (10% changed, once)", mvc=t_ft, cp=median(cp_ft), cps=median(cps_ft), target="(no target)",
                     ok=None, base="cp", samples=([t_ft], cp_ft, cps_ft)))

    # 4. checkout into a new directory, byte-exact
    log("checkout")
    cp_t, cps_t, mvc_t = [], [], []
    cpu_mvc, cpu_cp = CPU.setdefault("checkout -o DIR", []), CPU.setdefault("cp of the model (checkout step)", [])
    for i in range(R):
        cp_t.append(time_cp(base, work / f"cp{i}", settle, then_sync=False, cpu=cpu_cp))
        cps_t.append(time_cp(base, work / f"cp{i}", settle, then_sync=True))
        out = work / f"co{i}"
        t, p = timed([mvc, "-C", str(repo), "checkout", base_commit, "-o", str(out)], settle)
        mvc_t.append(t)
        cpu_mvc.append(p.cpu)
        for f in ("model.safetensors", "config.json"):
            run(["cmp", str(base / f), str(out / f)])
        shutil.rmtree(out)
    rows.append(dict(name="checkout -o DIR (base model)", mvc=median(mvc_t), cp=median(cp_t), cps=median(cps_t),
                     target="<= 1.5x cp", ok=median(mvc_t) <= 1.5 * median(cp_t), base="cp", samples=(mvc_t, cp_t, cps_t)))

    # 5. store size after base + fine-tune
    objects = repo / ".mvc" / "objects"
    used, apparent = du_bytes(objects), du_bytes(objects, apparent=True)
    rows.append(dict(name="store bytes after base + fine-tune", mvc=used, cp=model_bytes, cps=None, bytes=True,
                     target="<= 1.15x one model", ok=used <= 1.15 * model_bytes, base="cp"))

    # 6. read-only commands
    log("--help and log")
    help_s = [timed([mvc, "--help"])[0] for _ in range(Q)]
    log_s = [timed([mvc, "-C", str(repo), "log"])[0] for _ in range(Q)]
    n_commits = len(run([mvc, "-C", str(repo), "log", "--oneline"]).stdout.splitlines())
    help_t, log_t = median(help_s), median(log_s)
    rows.append(dict(name="mvc --help", mvc=help_t, cp=None, cps=None, start=start, target="<= 0.5 s", ok=help_t <= 0.5, base="start",
                     samples=(help_s, start_t)))
    rows.append(dict(name=f"mvc log ({n_commits} commits)", mvc=log_t, cp=None, cps=None, start=start, target="<= 0.5 s", ok=log_t <= 0.5,
                     base="start", samples=(log_s, start_t)))

    # -- report --------------------------------------------------------------------------
    print(f"mvc store benchmark: {model_bytes:,} bytes per model ({args.tensors} fp16 tensors, "
          f"{len(changed)} changed in the fine-tune), warm page cache, median of {R} (sub-second commands: {Q}), memory: {args.memory}")
    print(f"python {platform.python_version()}, {os.cpu_count()} CPUs, mvc start-up (`mvc --version`): {start:.3f} s")
    print(f"fine-tune commit: {ft_info['bytes_written']:,} bytes new, {ft_info['bytes_existing']:,} already stored, "
          f"{ft_info['files_read']} file(s) read")
    print(f"store: {used:,} bytes on disk (du), {apparent:,} bytes apparent; two models as plain files: {2 * model_bytes:,}")
    print()
    head = ["figure", "mvc", "baseline: cp", "cp + sync", "ratio (mvc/cp)", "target", "met"]
    table = []
    for r in rows:
        if r.get("bytes"):
            mib = lambda b: f"{b / 2**20:,.1f} MiB"  # noqa: E731
            table.append([r["name"], mib(r["mvc"]), mib(r["cp"]) + " (1 model)", "-",
                          f"{r['mvc'] / r['cp']:.3f}x", r["target"], _met(r["ok"])])
        elif r["base"] == "start":
            table.append([r["name"], f"{r['mvc']:.3f} s", f"start-up {r['start']:.3f} s", "-",
                          f"{r['mvc'] - r['start']:+.3f} s over start-up", r["target"], _met(r["ok"])])
        else:
            table.append([r["name"], f"{r['mvc']:.2f} s", f"{r['cp']:.2f} s", f"{r['cps']:.2f} s",
                          f"{r['mvc'] / r['cp']:.2f}x", r["target"], _met(r["ok"])])
    widths = [max(len(str(x)) for x in col) for col in zip(head, *table, strict=True)]
    print("| " + " | ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in table:
        print("| " + " | ".join(str(x).ljust(w) for x, w in zip(row, widths, strict=True)) + " |")

    print("\nevery sample, in seconds (mvc | cp | cp + sync, or mvc | start-up):")
    for r in rows:
        if "samples" in r:
            print(f"  {r['name']}: " + " | ".join(" ".join(f"{x:.3f}" for x in xs) for xs in r["samples"]))

    print("\nCPU time (user + sys) of the timed processes, median in seconds (less sensitive than wall time"
          " to other load on the machine):")
    for name, xs in CPU.items():
        print(f"  {name}: {median(xs):.3f}  (samples: {' '.join(f'{x:.3f}' for x in xs)})")

    if not args.keep:
        shutil.rmtree(work)
    missed = [r["name"] for r in rows if r["ok"] is False]
    if missed:
        print(f"\ntargets missed: {', '.join(missed)}")


def _met(ok: bool | None) -> str:
    return "-" if ok is None else ("yes" if ok else "NO")


if __name__ == "__main__":
    main()
