"""Merging models in weight space: strategies on tensors, and the three-way merge of two commits.

The strategies are pure functions on fp32 torch tensors (they never modify their inputs):
``linear``, ``slerp``, ``task_arithmetic``, ``ties``, ``dare_linear`` and ``dare_ties``, built
from ``trim_top_k`` (TIES trimming), ``dare_drop`` (DARE) and ``elect_and_mean`` (TIES sign
election and disjoint mean). docs/merge.md gives the formulas and conventions.

``merge`` merges a commit into the current branch: "already up to date" and fast-forward come
from the commit DAG (``mvc.dag``), otherwise every tensor is merged one at a time, streamed from
the store into a new tree in the store, and a merge commit is written like ``Repo.commit`` does
(tree, commit, index row, ref by compare-and-swap). ``merge_adapter`` folds a LoRA adapter
commit into the current commit's weights. torch is imported inside the functions only.
"""

from __future__ import annotations

import json
import math
import re
import secrets
import struct
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mvc.errors import DirtyWorktree, InvalidArgument, MergeConflict, UnknownRevision
from mvc.status import status
from mvc.tensors import FLOAT_DTYPES, read_tensor, tensor_data, to_bytes, torch_dtype, write_safetensors
from store.ids import hash_bytes
from store.materialize import entry_parts, load_manifest, materialize
from store.model import FileManifest, TensorEntry, Tree, TreeEntry

if TYPE_CHECKING:
    import torch

    from mvc.repo import Repo

STRATEGIES = ("linear", "slerp", "task-arithmetic", "ties", "dare-ties", "dare-linear")
TASK_VECTOR_STRATEGIES = ("task-arithmetic", "ties", "dare-ties", "dare-linear")
DEFAULT_STRATEGY = "task-arithmetic"
DEFAULT_DENSITY = 0.2
DOT_THRESHOLD = 0.9995  # slerp falls back to lerp for vectors closer to parallel than this
Progress = Callable[[int], None]

# -- strategies: pure functions on fp32 tensors ----------------------------------------------


def linear(models: Sequence[torch.Tensor], weights: Sequence[float]) -> torch.Tensor:
    """Weighted mean ``Σ wᵢ θᵢ / Σ wᵢ``."""
    import torch

    out = torch.zeros_like(models[0])
    for m, w in zip(models, weights, strict=True):
        out.add_(m, alpha=w)
    return out.div_(sum(weights))


def slerp(a: torch.Tensor, b: torch.Tensor, t: float, *, threshold: float = DOT_THRESHOLD) -> torch.Tensor:
    """Spherical interpolation from ``a`` (t = 0) to ``b`` (t = 1), each tensor seen as one flat vector.

    Falls back to linear interpolation when the vectors are nearly parallel or antiparallel
    (``|cos| > threshold``) or one of them is zero, where the spherical formula is unstable.
    """
    import torch

    na, nb = float(torch.linalg.vector_norm(a)), float(torch.linalg.vector_norm(b))
    cos = float(torch.dot(a.reshape(-1), b.reshape(-1))) / (na * nb) if na > 0 and nb > 0 else 1.0
    cos = max(-1.0, min(1.0, cos))
    if abs(cos) > threshold:
        return torch.lerp(a, b, t)
    theta = math.acos(cos)
    s = math.sin(theta)
    return a * (math.sin((1 - t) * theta) / s) + b * (math.sin(t * theta) / s)


def task_arithmetic(base: torch.Tensor, models: Sequence[torch.Tensor], weights: Sequence[float], lam: float = 1.0) -> torch.Tensor:
    """``base + λ Σ wᵢ (θᵢ − base)`` (Ilharco et al., "Editing models with task arithmetic")."""
    import torch

    delta = torch.zeros_like(base)
    for m, w in zip(models, weights, strict=True):
        delta.add_(m - base, alpha=w)
    return base + lam * delta


def trim_top_k(tau: torch.Tensor, density: float) -> torch.Tensor:
    """``tau`` with all but its ``k = max(1, round(density · n))`` largest-magnitude elements zeroed."""
    import torch

    n = tau.numel()
    k = max(1, round(density * n))
    if k >= n:
        return tau
    flat = tau.reshape(-1)
    idx = torch.topk(flat.abs(), k, sorted=False).indices
    out = torch.zeros_like(flat)
    out[idx] = flat[idx]
    return out.reshape(tau.shape)


def dare_drop(tau: torch.Tensor, density: float, generator: torch.Generator) -> torch.Tensor:
    """DARE (Yu et al.): drop each element with probability ``1 − density``, rescale the rest by ``1/density``."""
    import torch

    if density >= 1:
        return tau
    keep = torch.rand(tau.shape, generator=generator) < density
    return torch.where(keep, tau / density, torch.zeros((), dtype=tau.dtype))


def elect_and_mean(taus: Sequence[torch.Tensor], weights: Sequence[float]) -> torch.Tensor:
    """TIES (Yadav et al.) sign election and disjoint mean of (sparsified) task vectors.

    The elected sign is ``sign(Σ wᵢ τᵢ)`` per element; the result is the weighted mean of the
    ``τᵢ`` whose sign equals it (zeros never count), and 0 where none does. Weights must be positive.
    """
    import torch

    elected = torch.zeros_like(taus[0])
    for t, w in zip(taus, weights, strict=True):
        elected.add_(t, alpha=w)
    elected.sign_()
    num = torch.zeros_like(elected)
    den = torch.zeros_like(elected)
    for t, w in zip(taus, weights, strict=True):
        agree = (t * elected) > 0  # same sign as elected, and neither is zero
        num.add_(torch.where(agree, t, 0.0), alpha=w)
        den.add_(torch.where(agree, w, 0.0))
    return num.div_(den.masked_fill_(den == 0, 1.0))


def ties(base: torch.Tensor, models: Sequence[torch.Tensor], weights: Sequence[float], density: float = DEFAULT_DENSITY, lam: float = 1.0) -> torch.Tensor:
    """TIES-Merging: trim each task vector to its top-k, elect signs, disjoint mean; ``base + λ·merged``."""
    taus = [trim_top_k(m - base, density) for m in models]
    return base + lam * elect_and_mean(taus, weights)


def dare_linear(base: torch.Tensor, models: Sequence[torch.Tensor], weights: Sequence[float], density: float, lam: float, generator: torch.Generator) -> torch.Tensor:
    """``base + λ Σ wᵢ dare(τᵢ)``; masks are drawn from ``generator`` in model order."""
    import torch

    delta = torch.zeros_like(base)
    for m, w in zip(models, weights, strict=True):
        delta.add_(dare_drop(m - base, density, generator), alpha=w)
    return base + lam * delta


def dare_ties(base: torch.Tensor, models: Sequence[torch.Tensor], weights: Sequence[float], density: float, lam: float, generator: torch.Generator) -> torch.Tensor:
    """DARE on each task vector, then TIES sign election and disjoint mean; ``base + λ·merged``."""
    taus = [dare_drop(m - base, density, generator) for m in models]
    return base + lam * elect_and_mean(taus, weights)


def tensor_generator(seed: int, name: str) -> torch.Generator:
    """A generator seeded from ``(seed, tensor name)``: the same on every machine and in any tensor order."""
    import torch

    return torch.Generator().manual_seed(int(hash_bytes(f"{seed}\0{name}".encode())[:16], 16) & (2**63 - 1))


# -- recipes ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Recipe:
    """How to merge: a strategy and its parameters, as given (None = the default)."""

    strategy: str = DEFAULT_STRATEGY
    weights: tuple[float, ...] = ()
    density: float | None = None
    lam: float | None = None
    seed: int | None = None

    @property
    def needs_base(self) -> bool:
        return self.strategy in TASK_VECTOR_STRATEGIES

    def checked(self) -> Recipe:
        """This recipe validated, strategy name normalised and DARE's seed drawn when not given."""
        s = self.strategy.strip().lower().replace("_", "-")
        if s not in STRATEGIES:
            raise InvalidArgument(f"unknown merge strategy {self.strategy!r}; choose one of {', '.join(STRATEGIES)}")
        w = tuple(float(x) for x in self.weights)
        if len(w) > 2 or not all(math.isfinite(x) for x in w):
            raise InvalidArgument("--weight takes one value (the share of REF) or two (HEAD's and REF's), all finite")
        dare = s.startswith("dare")
        if self.density is not None and s not in ("ties", "dare-ties", "dare-linear"):
            raise InvalidArgument(f"--density has no effect with the {s} strategy")
        if self.density is not None and not 0 < self.density <= 1:
            raise InvalidArgument(f"--density must be in (0, 1], not {self.density}")
        if self.lam is not None and (s not in TASK_VECTOR_STRATEGIES or not math.isfinite(self.lam)):
            raise InvalidArgument(f"--lambda applies to {', '.join(TASK_VECTOR_STRATEGIES)} and must be finite")
        if self.seed is not None and not dare:
            raise InvalidArgument(f"--seed has no effect with the {s} strategy (only dare-ties and dare-linear are random)")
        out = replace(self, strategy=s, weights=w, seed=(self.seed if self.seed is not None else secrets.randbits(63)) if dare else None)
        ws = out.resolved_weights()
        if s == "linear" and sum(ws) == 0:
            raise InvalidArgument("linear weights must not sum to zero")
        if s == "slerp" and not 0 <= ws[1] / sum(ws) <= 1:
            raise InvalidArgument("slerp's factor t (--weight) must be in [0, 1]")
        if s in ("ties", "dare-ties") and min(ws) <= 0:
            raise InvalidArgument(f"{s} weights must be positive")
        return out

    def resolved_weights(self) -> tuple[float, float]:
        """(HEAD's weight, REF's weight): one value w means (1 − w, w)."""
        if len(self.weights) == 2:
            return self.weights[0], self.weights[1]
        if len(self.weights) == 1:
            return 1.0 - self.weights[0], self.weights[0]
        return (0.5, 0.5) if self.strategy in ("linear", "slerp") else (1.0, 1.0)

    def to_lineage(self) -> dict[str, Any]:
        s = self.strategy
        d: dict[str, Any] = {"strategy": s, "weights": list(self.resolved_weights())}
        d["density"] = (self.density if self.density is not None else DEFAULT_DENSITY) if s in ("ties", "dare-ties", "dare-linear") else None
        d["lambda"] = (self.lam if self.lam is not None else 1.0) if s in TASK_VECTOR_STRATEGIES else None
        d["seed"] = self.seed
        if s == "slerp":
            w = self.resolved_weights()
            d["t"] = w[1] / sum(w)
        return d


def merge_tensors(recipe: Recipe, name: str, ours: torch.Tensor, theirs: torch.Tensor, base: torch.Tensor | None = None) -> torch.Tensor:
    """Merge one fp32 tensor pair by a ``checked()`` recipe (``base`` is the merge-base's tensor)."""
    r = recipe.to_lineage()
    s, w, lam, density = r["strategy"], r["weights"], r["lambda"], r["density"]
    if s == "linear":
        return linear([ours, theirs], w)
    if s == "slerp":
        return slerp(ours, theirs, r["t"])
    assert base is not None, f"{s} needs the merge-base's tensor"
    if s == "task-arithmetic":
        return task_arithmetic(base, [ours, theirs], w, lam)
    if s == "ties":
        return ties(base, [ours, theirs], w, density, lam)
    gen = tensor_generator(recipe.seed, name)
    if s == "dare-linear":
        return dare_linear(base, [ours, theirs], w, density, lam, gen)
    return dare_ties(base, [ours, theirs], w, density, lam, gen)


# -- results ---------------------------------------------------------------------------------


@dataclass
class MergeResult:
    """What ``merge`` / ``merge_adapter`` did; ``outcome`` is merge, fast-forward or up-to-date."""

    outcome: str
    commit: str
    previous: str | None
    theirs: str
    branch: str | None
    merge_base: str | None = None
    lineage: dict[str, Any] = field(default_factory=dict)
    tensors_changed: int = 0  # tensors of the result that differ from HEAD's
    tensors_kept: int = 0  # HEAD's tensors kept as they were (identical on all sides, or only HEAD changed them)
    kept_ours: list[dict[str, str]] = field(default_factory=list)  # {"path", "reason"}: differing files kept from HEAD
    worktree: str | None = None

    def to_json(self) -> dict[str, Any]:
        return dict(vars(self))


# -- reading trees ---------------------------------------------------------------------------

TOKENIZER_FILES = {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json", "vocab.json",
                   "vocab.txt", "merges.txt", "tokenizer.model", "spiece.model", "sentencepiece.bpe.model"}
WEIGHT_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".gguf", ".h5", ".msgpack", ".onnx", ".npz")
# config keys that decide tensor shapes or how they are read: a difference is a conflict
STRUCTURAL_KEYS = {"architectures", "model_type", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                   "num_key_value_heads", "head_dim", "vocab_size", "tie_word_embeddings", "n_embd", "n_layer", "n_head", "n_inner",
                   "d_model", "num_layers", "num_heads", "d_ff", "ffn_dim", "num_experts", "num_local_experts", "quantization_config"}
MAX_PARSED = 256 * 1024 * 1024


def _is_safetensors(path: str) -> bool:
    return path.endswith(".safetensors")


def _file_bytes(repo: Repo, entry: TreeEntry) -> bytes:
    if entry.size > MAX_PARSED:
        raise MergeConflict(f"a {entry.size}-byte file is too large to compare")
    return b"".join(repo.objects.get(p.id) for p in entry_parts(repo.objects, entry))


def _json(repo: Repo, entry: TreeEntry, path: str) -> Any:
    try:
        return json.loads(_file_bytes(repo, entry))
    except (UnicodeDecodeError, ValueError):
        raise MergeConflict(f"{path} is not valid JSON, so it cannot be compared") from None


def _tensors(repo: Repo, tree: Tree, side: str) -> tuple[dict[str, TensorEntry], dict[str, FileManifest]]:
    """Tensors by name across all safetensors files, and each file's manifest."""
    tensors: dict[str, TensorEntry] = {}
    where: dict[str, str] = {}
    manifests: dict[str, FileManifest] = {}
    for path in sorted(p for p in tree.entries if _is_safetensors(p)):
        m = load_manifest(repo.objects, tree.entries[path])
        if m is None or m.format != "safetensors":
            raise MergeConflict(f"{path} in {side} was not stored as safetensors tensors")
        manifests[path] = m
        for t in m.tensors:
            if t.name in tensors:
                raise MergeConflict(f"tensor {t.name} appears in both {where[t.name]} and {path} in {side}")
            tensors[t.name], where[t.name] = t, path
    return tensors, manifests


def _header_metadata(repo: Repo, manifest: FileManifest) -> dict[str, str] | None:
    """The ``__metadata__`` of a stored safetensors header (8-byte little-endian length, then JSON)."""
    raw = repo.objects.get(manifest.header.id)
    (n,) = struct.unpack("<Q", raw[:8])
    meta = json.loads(raw[8 : 8 + n]).get("__metadata__")
    if isinstance(meta, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items()):
        return meta
    return None


# -- conflicts in files ----------------------------------------------------------------------


def _some(items: list[str], limit: int = 5) -> str:
    return ", ".join(items[:limit]) + (f" and {len(items) - limit} more" if len(items) > limit else "")


def _token_ids(path: str, obj: Any, raw: bytes) -> dict[str, int] | None:
    """token -> id of a tokenizer file, or None when the file kind carries no vocabulary."""
    name = path.rsplit("/", 1)[-1]
    out: dict[str, int] = {}
    if name == "tokenizer.json" and isinstance(obj, dict):
        vocab = (obj.get("model") or {}).get("vocab")
        if isinstance(vocab, dict):
            out.update({str(k): v for k, v in vocab.items()})
        elif isinstance(vocab, list):  # Unigram: [[token, score], ...]
            out.update({str(e[0]): i for i, e in enumerate(vocab) if isinstance(e, list) and e})
        out.update({str(t["content"]): t.get("id") for t in obj.get("added_tokens") or [] if isinstance(t, dict) and "content" in t})
    elif name in ("vocab.json", "added_tokens.json") and isinstance(obj, dict):
        out.update({str(k): v for k, v in obj.items()})
    elif name == "tokenizer_config.json" and isinstance(obj, dict):
        decoder = obj.get("added_tokens_decoder") or {}
        out.update({str(v.get("content")): int(k) for k, v in decoder.items() if isinstance(v, dict) and str(k).isdigit()})
    elif name == "vocab.txt":
        out.update({tok: i for i, tok in enumerate(raw.decode("utf-8", "replace").splitlines())})
    else:
        return None
    return out


def _tokenizer_conflict(repo: Repo, path: str, a: TreeEntry | None, b: TreeEntry | None) -> str | None:
    if a is None or b is None:
        return f"{path} exists only in {'theirs' if a is None else 'ours'}"
    raw_a, raw_b = _file_bytes(repo, a), _file_bytes(repo, b)
    obj_a = obj_b = None
    if path.endswith(".json"):
        try:
            obj_a, obj_b = json.loads(raw_a), json.loads(raw_b)
        except (UnicodeDecodeError, ValueError):
            return f"{path} differs"
        if obj_a == obj_b:
            return None  # same content, different formatting
    ids_a, ids_b = _token_ids(path, obj_a, raw_a), _token_ids(path, obj_b, raw_b)
    if ids_a is not None and ids_b is not None and ids_a != ids_b:
        diffs = []
        for tok in sorted(set(ids_a) | set(ids_b), key=lambda x: (min(i for i in (ids_a.get(x), ids_b.get(x)) if isinstance(i, int)) if any(isinstance(i, int) for i in (ids_a.get(x), ids_b.get(x))) else -1, x)):
            ia, ib = ids_a.get(tok), ids_b.get(tok)
            if ia == ib:
                continue
            diffs.append(f"{tok!r} only in theirs (id {ib})" if tok not in ids_a else f"{tok!r} only in ours (id {ia})" if tok not in ids_b else f"{tok!r} is id {ia} in ours but {ib} in theirs")
        return f"{path}: {len(diffs)} token(s) differ: {_some(diffs, 4)}"
    if isinstance(obj_a, dict) and isinstance(obj_b, dict):
        keys = sorted(k for k in set(obj_a) | set(obj_b) if obj_a.get(k) != obj_b.get(k))
        if keys == ["model"] and isinstance(obj_a.get("model"), dict) and isinstance(obj_b.get("model"), dict):
            keys = [f"model.{k}" for k in sorted(set(obj_a["model"]) | set(obj_b["model"])) if obj_a["model"].get(k) != obj_b["model"].get(k)]
        return f"{path} differs in {_some(keys)}"
    return f"{path} differs"


def _config_diff(a: dict, b: dict, prefix: str = "") -> tuple[list[str], list[str]]:
    """(structural differences, other differing keys) between two model configs."""
    structural: list[str] = []
    other: list[str] = []
    missing = object()
    for key in sorted(set(a) | set(b)):
        va, vb = a.get(key, missing), b.get(key, missing)
        if va == vb:
            continue
        name = prefix + key
        if isinstance(va, dict) and isinstance(vb, dict) and key.endswith("_config") and key != "quantization_config":
            s, o = _config_diff(va, vb, name + ".")
            structural += s
            other += o
        elif key in STRUCTURAL_KEYS:
            show = lambda v: "missing" if v is missing else json.dumps(v)  # noqa: E731
            structural.append(f"{name} {show(va)} vs {show(vb)}")
        else:
            other.append(name)
    return structural, other


def _check_files(repo: Repo, ours: Tree, theirs: Tree) -> tuple[list[str], list[dict[str, str]]]:
    """(conflicts, files kept from ours) for every file that is not a safetensors file."""
    conflicts: list[str] = []
    kept: list[dict[str, str]] = []
    for path in sorted(set(ours.entries) | set(theirs.entries)):
        if _is_safetensors(path) or path.endswith(".safetensors.index.json"):
            continue  # tensors are matched by name; the result keeps ours' file layout
        a, b = ours.entries.get(path), theirs.entries.get(path)
        if a is not None and b is not None and a.hash == b.hash:
            continue
        name = path.rsplit("/", 1)[-1]
        if name in TOKENIZER_FILES:
            problem = _tokenizer_conflict(repo, path, a, b)
            if problem:
                conflicts.append(f"tokenizers differ: {problem}")
        elif name == "config.json":
            if a is None or b is None:
                conflicts.append(f"{path} exists only in {'theirs' if a is None else 'ours'}")
                continue
            ca, cb = _json(repo, a, path), _json(repo, b, path)
            structural, other = _config_diff(ca, cb) if isinstance(ca, dict) and isinstance(cb, dict) else (["not a JSON object"], [])
            if structural:
                conflicts.append(f"{path}: {_some(structural)}")
            elif other:
                kept.append({"path": path, "reason": f"differs in {_some(other)}; kept ours"})
        elif path.endswith(WEIGHT_SUFFIXES) and a is not None and b is not None:
            conflicts.append(f"{path} differs and only safetensors weights can be merged")
        else:
            reason = "differs; kept ours" if a is not None and b is not None else "only in ours" if b is None else "only in theirs; not taken"
            kept.append({"path": path, "reason": reason})
    return conflicts, kept


def _raise_conflicts(conflicts: list[str], what: str) -> None:
    if conflicts:
        more = f"; and {len(conflicts) - 6} more" if len(conflicts) > 6 else ""
        raise MergeConflict(f"cannot merge {what}: {'; '.join(conflicts[:6])}{more}", conflicts=conflicts)


# -- writing the result ----------------------------------------------------------------------


def _write_tree(repo: Repo, ours: Tree, manifests: dict[str, FileManifest], source: Callable[[TensorEntry], TensorEntry | None],
                compute: Callable[[TensorEntry], bytes], progress: Progress | None) -> tuple[str, int, int]:
    """Store ours' tree with its safetensors files rebuilt; return (tree id, tensors changed, tensors kept).

    For each of ours' tensors ``source`` names a stored tensor to copy (ours' own entry to keep
    it) or None, and then ``compute`` makes its bytes. Files keep ours' layout, tensor order and
    ``__metadata__``; a file whose tensors all stay keeps its entry. One tensor is held at a time.
    """
    entries = dict(ours.entries)
    changed = kept = 0
    with repo.objects.batch() as batch:
        for path, m in sorted(manifests.items()):
            sources = [source(t) for t in m.tensors]
            n = sum(1 for s, t in zip(sources, m.tensors, strict=True) if s is None or s.id != t.id)
            changed, kept = changed + n, kept + len(m.tensors) - n
            if n == 0:
                if progress:
                    progress(sum(t.size for t in m.tensors))
                continue

            def data(m: FileManifest = m, sources: list = sources) -> Iterator[bytes]:
                for t, s in zip(m.tensors, sources, strict=True):
                    yield compute(t) if s is None else tensor_data(repo.objects, s)
                    if progress:
                        progress(t.size)

            specs = [(t.name, t.dtype, t.shape, t.size) for t in m.tensors]
            entry, _ = write_safetensors(batch, specs, data(), _header_metadata(repo, m), mode=ours.entries[path].mode)
            entries[path] = entry
    return repo.objects.put(Tree(entries).encode()), changed, kept


def _require_clean(repo: Repo, head: str | None, force: bool) -> None:
    wt = repo.worktree
    if force or head is None or wt is None or not wt.exists():
        return
    current = status(repo, wt, against=head)
    if not current.clean:
        shown = _some([f"{f.path} ({f.change})" for f in current.files])
        raise DirtyWorktree(f"{wt} has uncommitted changes: {shown}", hint="commit them (`mvc commit`), or pass --force to discard them")


def _sync_worktree(repo: Repo, old: str | None, new: str, *, force: bool, progress: Progress | None = None) -> Path | None:
    """Bring the worktree from commit ``old`` to ``new`` (the branch has already moved), like ``update_worktree``."""
    wt = repo.worktree
    if wt is None:
        return None
    wt.mkdir(parents=True, exist_ok=True)
    target = repo.read_tree(repo.read_commit(new).tree)
    old_entries = repo.read_tree(repo.read_commit(old).tree).entries if old else {}
    current = status(repo, wt, against=old or new)
    if old and not current.clean and not force:
        raise DirtyWorktree(f"the merge is recorded as {new[:12]}, but {wt} changed while merging and was left as it is",
                            hint=f"commit or discard those changes, then `mvc checkout -f {new[:12]}` or switch back to the branch")
    on_disk = current.tree.entries if current.tree else {}
    write = [p for p, e in target.entries.items() if p not in on_disk or (on_disk[p].hash, on_disk[p].mode) != (e.hash, e.mode)]
    remove = [p for p in on_disk if p not in target.entries and (p in old_entries or force)]
    materialize(repo.objects, target, wt, paths=write, remove=remove, progress=progress)
    return wt


def _finish(repo: Repo, ref: str | None, head: str, theirs: str, tree_id: str, message: str, lineage: dict, *,
            author: str | None, run_hooks: bool, force: bool, progress: Progress | None) -> tuple[str, Path | None]:
    cid = repo.write_commit(tree_id, [head, theirs], message, ref=ref, expected=head, kind="merge", lineage=lineage,
                            author=author, run_hooks=run_hooks, what="merge result", reflog="merge")
    return cid, _sync_worktree(repo, head, cid, force=force, progress=progress)


def _short(ref: str | None) -> str | None:
    return ref[len("refs/heads/") :] if ref else None


# -- merging commits -------------------------------------------------------------------------


def merge(repo: Repo, rev: str, recipe: Recipe | None = None, *, message: str | None = None, force: bool = False,
          run_hooks: bool = True, author: str | None = None, progress: Progress | None = None) -> MergeResult:
    """Merge commit ``rev`` into HEAD's branch (or detached HEAD).

    Already up to date when ``rev`` is in HEAD's history; a fast-forward when HEAD is in
    ``rev``'s; otherwise a merge commit with parents (HEAD, rev) whose tensors are merged by
    ``recipe`` against the merge-base. Refuses a dirty worktree unless ``force``; raises
    MergeConflict naming what cannot be merged before anything is written.
    """
    from mvc import dag

    recipe = (recipe or Recipe()).checked()
    theirs = repo.resolve(rev)
    ref, head = repo.refs.head()
    branch = _short(ref)
    graph = dag.CommitGraph.from_store(repo.objects, [c for c in (head, theirs) if c])
    if head is not None and graph.is_ancestor(theirs, head):
        return MergeResult("up-to-date", head, head, theirs, branch)
    _require_clean(repo, head, force)
    if head is None or graph.is_ancestor(head, theirs):
        who = author or None
        if ref is None:
            repo.refs.set_head(theirs, message=f"merge {rev}: fast-forward", who=who)
        else:
            repo.refs.compare_and_swap(ref, head, theirs, message=f"merge {rev}: fast-forward", who=who)
        repo.index().sync_refs()
        wt = _sync_worktree(repo, head, theirs, force=force, progress=progress)
        return MergeResult("fast-forward", theirs, head, theirs, branch, worktree=str(wt) if wt else None)

    bases = graph.merge_bases(head, theirs)
    base = bases[0] if bases else None
    if recipe.needs_base and base is None:
        raise MergeConflict(f"{rev} shares no history with HEAD, so there is no merge-base for {recipe.strategy}",
                            hint="use --strategy linear or slerp, which need no base")
    ours_tree = repo.read_tree(repo.read_commit(head).tree)
    theirs_tree = repo.read_tree(repo.read_commit(theirs).tree)
    conflicts, kept = _check_files(repo, ours_tree, theirs_tree)
    ours_t, manifests = _tensors(repo, ours_tree, "ours")
    theirs_t, _ = _tensors(repo, theirs_tree, "theirs")
    base_t = _tensors(repo, repo.read_tree(repo.read_commit(base).tree), "the merge-base")[0] if recipe.needs_base else {}
    conflicts += _tensor_conflicts(ours_t, theirs_t, base_t if recipe.needs_base else None)
    _raise_conflicts(conflicts, f"{rev} into {branch or 'HEAD'}")

    lineage = recipe.to_lineage()
    w, lam = lineage["weights"], lineage["lambda"]

    def source(t: TensorEntry) -> TensorEntry | None:
        th, b = theirs_t[t.name], base_t.get(t.name)
        if t.id == th.id and (b is None or b.id == t.id or not recipe.needs_base):
            return t
        if t.dtype not in FLOAT_DTYPES:
            return t  # integer tensors are identical on both sides (checked)
        if recipe.strategy == "task-arithmetic" and b is not None:
            # one side unchanged and the other at full strength: that side's tensor, exactly
            if th.id == b.id and lam * w[0] == 1:
                return t
            if t.id == b.id and lam * w[1] == 1:
                return th
        return None

    def compute(t: TensorEntry) -> bytes:
        base_f = read_tensor(repo.objects, base_t[t.name]).float() if recipe.needs_base else None
        out = merge_tensors(recipe, t.name, read_tensor(repo.objects, t).float(), read_tensor(repo.objects, theirs_t[t.name]).float(), base_f)
        return to_bytes(out.to(torch_dtype(t.dtype)))

    tree_id, changed, unchanged = _write_tree(repo, ours_tree, manifests, source, compute, progress)
    lineage.update(merge_base=base, theirs=theirs, ref=rev)
    if len(bases) > 1:
        lineage["merge_bases"] = bases
    message = message or f"Merge {rev} into {branch or 'HEAD'} ({recipe.strategy})"
    cid, wt = _finish(repo, ref, head, theirs, tree_id, message, {"merge": lineage}, author=author, run_hooks=run_hooks, force=force, progress=progress)
    return MergeResult("merge", cid, head, theirs, branch, base, {"merge": lineage}, changed, unchanged, kept, str(wt) if wt else None)


def _tensor_conflicts(ours: dict[str, TensorEntry], theirs: dict[str, TensorEntry], base: dict[str, TensorEntry] | None) -> list[str]:
    out = []
    only_ours, only_theirs = sorted(set(ours) - set(theirs)), sorted(set(theirs) - set(ours))
    if only_ours:
        out.append(f"{len(only_ours)} tensor(s) only in ours: {_some(only_ours, 3)}")
    if only_theirs:
        out.append(f"{len(only_theirs)} tensor(s) only in theirs: {_some(only_theirs, 3)}")
    for name in sorted(set(ours) & set(theirs)):
        o, t = ours[name], theirs[name]
        if (o.dtype, o.shape) != (t.dtype, t.shape):
            out.append(f"tensor {name} is {o.dtype}{list(o.shape)} in ours but {t.dtype}{list(t.shape)} in theirs")
        elif o.dtype not in FLOAT_DTYPES and o.id != t.id:
            out.append(f"tensor {name} ({o.dtype}) differs and only floating-point tensors can be merged")
        elif o.dtype in FLOAT_DTYPES and o.id != t.id and o.dtype not in ("F64", "F32", "F16", "BF16"):
            out.append(f"tensor {name} ({o.dtype}) differs and {o.dtype} tensors cannot be merged")
        elif base is not None and o.dtype in FLOAT_DTYPES and not (o.id == t.id == getattr(base.get(name), "id", None)):
            b = base.get(name)
            if b is None:
                out.append(f"tensor {name} is missing in the merge-base")
            elif b.shape != o.shape or b.dtype not in FLOAT_DTYPES:
                out.append(f"tensor {name} is {b.dtype}{list(b.shape)} in the merge-base but {o.dtype}{list(o.shape)} in ours")
    return out


# -- merging a LoRA adapter ------------------------------------------------------------------

_PEFT_PREFIX = "base_model.model."
_LORA_KEY = re.compile(r"^(?P<module>.+)\.(?P<part>lora_A\.weight|lora_B\.weight|lora_B\.bias|lora_embedding_A|lora_embedding_B)$")


@dataclass
class _Lora:
    module: str
    kind: str  # linear | embedding
    a: TensorEntry | None = None
    b: TensorEntry | None = None
    bias: TensorEntry | None = None
    scaling: float = 0.0


def _pattern_value(patterns: dict, module: str, default: Any) -> Any:
    # peft's rule: a pattern key matches a module name ending in ".<key>" (or the whole name)
    for key, value in (patterns or {}).items():
        if re.match(rf"(.*\.)?({key})$", module):
            return value
    return default


def merge_adapter(repo: Repo, rev: str, *, message: str | None = None, force: bool = False, run_hooks: bool = True,
                  author: str | None = None, progress: Progress | None = None) -> MergeResult:
    """Fold the LoRA adapter committed at ``rev`` into HEAD's weights: ``W' = W + scaling · B @ A``.

    ``rev`` holds ``adapter_config.json`` and ``adapter_model.safetensors`` as peft's
    ``save_pretrained`` writes them. scaling is ``lora_alpha / r`` (``/ sqrt(r)`` with
    ``use_rslora``); ``fan_in_fan_out`` transposes the update; ``rank_pattern`` and
    ``alpha_pattern`` are honoured. Other adapter tensors (``modules_to_save``, saved base
    layers, biases) replace the base tensor of the same name. The result is a merge commit
    with parents (HEAD, rev).
    """
    adapter = repo.resolve(rev)
    ref, head = repo.refs.head()
    if head is None:
        raise UnknownRevision("HEAD has no commits: commit the base model first, then merge the adapter into it")
    _require_clean(repo, head, force)
    tree = repo.read_tree(repo.read_commit(adapter).tree)
    if "adapter_config.json" not in tree.entries or "adapter_model.safetensors" not in tree.entries:
        pickled = " (adapter_model.bin is never unpickled; re-save with safe_serialization)" if "adapter_model.bin" in tree.entries else ""
        raise MergeConflict(f"{rev} is not a LoRA adapter: it needs adapter_config.json and adapter_model.safetensors{pickled}")
    cfg = _json(repo, tree.entries["adapter_config.json"], "adapter_config.json")
    if not isinstance(cfg, dict) or str(cfg.get("peft_type", "LORA")).upper() != "LORA":
        raise MergeConflict(f"{rev} is a {cfg.get('peft_type') if isinstance(cfg, dict) else '?'} adapter; only LoRA adapters can be merged")
    if cfg.get("use_dora"):
        raise MergeConflict("DoRA adapters (use_dora) cannot be merged by mvc yet", hint="merge it with peft's merge_and_unload and commit the result")
    r_default, alpha_default = cfg.get("r", 8), cfg.get("lora_alpha", 8)
    fan_in_fan_out, rslora = bool(cfg.get("fan_in_fan_out")), bool(cfg.get("use_rslora"))

    adapter_t, _ = _tensors(repo, Tree({"adapter_model.safetensors": tree.entries["adapter_model.safetensors"]}), "the adapter")
    ours_tree = repo.read_tree(repo.read_commit(head).tree)
    ours_t, manifests = _tensors(repo, ours_tree, "HEAD")
    loras: dict[str, _Lora] = {}
    replace_with: dict[str, TensorEntry] = {}
    conflicts: list[str] = []
    for key, entry in adapter_t.items():
        if not key.startswith(_PEFT_PREFIX):
            conflicts.append(f"adapter tensor {key} does not start with {_PEFT_PREFIX!r}")
            continue
        name = key[len(_PEFT_PREFIX) :]
        m = _LORA_KEY.match(name)
        if m is None:
            if "lora_" in name or "magnitude" in name:
                conflicts.append(f"adapter tensor {key} is of a kind mvc cannot merge")
                continue
            replace_with[name.replace(".base_layer.", ".")] = entry  # modules_to_save, saved base layers, biases
            continue
        part = m["part"]
        lora = loras.setdefault(m["module"], _Lora(m["module"], "embedding" if part.startswith("lora_embedding") else "linear"))
        setattr(lora, {"lora_A.weight": "a", "lora_embedding_A": "a", "lora_B.weight": "b", "lora_embedding_B": "b", "lora_B.bias": "bias"}[part], entry)

    deltas: dict[str, list[tuple[_Lora, str]]] = {}  # base tensor name -> [(lora, "weight" | "bias")]
    for lora in loras.values():
        target = f"{lora.module}.weight"
        if lora.a is None or lora.b is None:
            conflicts.append(f"adapter module {lora.module} lacks its lora_A or lora_B tensor")
            continue
        base = replace_with.get(target) or ours_t.get(target)
        if base is None:
            conflicts.append(f"adapter targets {target}, which HEAD does not have")
            continue
        r = lora.a.shape[0]
        want_r = _pattern_value(cfg.get("rank_pattern"), lora.module, r_default)
        out_f, in_f = (lora.b.shape[0], lora.a.shape[1]) if lora.kind == "linear" else (lora.a.shape[1], lora.b.shape[0])
        expect = (in_f, out_f) if lora.kind == "linear" and fan_in_fan_out else (out_f, in_f)
        if len(lora.a.shape) != 2 or len(lora.b.shape) != 2 or lora.b.shape[1] != r or r != want_r:
            conflicts.append(f"adapter module {lora.module} has lora_A {list(lora.a.shape)} and lora_B {list(lora.b.shape)}, not rank {want_r}")
            continue
        if tuple(base.shape) != expect or base.dtype not in FLOAT_DTYPES:
            conflicts.append(f"adapter update for {target} is {list(expect)} but the tensor is {base.dtype}{list(base.shape)}")
            continue
        alpha = _pattern_value(cfg.get("alpha_pattern"), lora.module, alpha_default)
        lora.scaling = alpha / math.sqrt(r) if rslora else alpha / r
        deltas.setdefault(target, []).append((lora, "weight"))
        if lora.bias is not None:
            bias_name = f"{lora.module}.bias"
            if bias_name not in ours_t and bias_name not in replace_with:
                conflicts.append(f"adapter has a LoRA bias for {bias_name}, which HEAD does not have")
            deltas.setdefault(bias_name, []).append((lora, "bias"))
    for name, entry in replace_with.items():
        o = ours_t.get(name)
        if o is None:
            conflicts.append(f"adapter tensor {name} has no counterpart in HEAD")
        elif o.shape != entry.shape:
            conflicts.append(f"adapter tensor {name} is {list(entry.shape)} but HEAD's is {list(o.shape)}")
    _raise_conflicts(conflicts, f"adapter {rev} into {_short(ref) or 'HEAD'}")

    def source(t: TensorEntry) -> TensorEntry | None:
        return None if t.name in deltas else replace_with.get(t.name, t)

    def compute(t: TensorEntry) -> bytes:
        w = read_tensor(repo.objects, replace_with.get(t.name, t)).float()
        for lora, what in deltas[t.name]:
            if what == "bias":
                w = w + lora.scaling * read_tensor(repo.objects, lora.bias).float()
                continue
            update = read_tensor(repo.objects, lora.b).float() @ read_tensor(repo.objects, lora.a).float()
            if lora.kind == "embedding" or fan_in_fan_out:
                update = update.T
            w = w + lora.scaling * update
        return to_bytes(w.to(torch_dtype(t.dtype)))

    tree_id, changed, unchanged = _write_tree(repo, ours_tree, manifests, source, compute, progress)
    lineage = {"merge": {
        "strategy": "lora", "adapter": adapter, "theirs": adapter, "ref": rev, "merge_base": None, "r": r_default, "lora_alpha": alpha_default,
        "use_rslora": rslora, "fan_in_fan_out": fan_in_fan_out, "modules": len(loras), "base_model_name_or_path": cfg.get("base_model_name_or_path"),
    }}
    message = message or f"Merge adapter {rev} into {_short(ref) or 'HEAD'}"
    cid, wt = _finish(repo, ref, head, adapter, tree_id, message, lineage, author=author, run_hooks=run_hooks, force=force, progress=progress)
    return MergeResult("merge", cid, head, adapter, _short(ref), None, lineage, changed, unchanged, [], str(wt) if wt else None)


__all__ = [
    "DEFAULT_STRATEGY", "STRATEGIES", "MergeResult", "Recipe", "dare_drop", "dare_linear", "dare_ties", "elect_and_mean", "linear",
    "merge", "merge_adapter", "merge_tensors", "slerp", "task_arithmetic", "tensor_generator", "ties", "trim_top_k",
]
