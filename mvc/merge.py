"""Merging models in weight space: the three-way merge of two commits, and LoRA adapters.

The strategies themselves are in ``mvc.merge_strategies``. ``merge`` merges a commit into the current branch: "already up to date" and fast-forward come
from the commit DAG (``mvc.dag``), otherwise every tensor is merged one at a time, streamed from
the store into a new tree in the store, and a merge commit is written like ``Repo.commit`` does
(tree, commit, index row, ref by compare-and-swap). ``merge_adapter`` folds a LoRA adapter
commit into the current commit's weights. torch is imported inside the functions only.
"""

from __future__ import annotations

import json
import math
import re
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mvc.errors import DirtyWorktree, MergeConflict, UnknownRevision
from mvc.merge_strategies import Recipe, merge_tensors
from mvc.status import status
from mvc.tensors import FLOAT_DTYPES, read_tensor, tensor_data, to_bytes, torch_dtype, write_safetensors
from store.materialize import entry_parts, load_manifest, materialize
from store.model import FileManifest, TensorEntry, Tree, TreeEntry

if TYPE_CHECKING:

    from mvc.repo import Repo

Progress = Callable[[int], None]


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
# tokenizer file keys that change how a tokenizer is loaded or used, not which tokens it has
TOKENIZER_SETTINGS = {"is_local", "local_files_only", "name_or_path", "_name_or_path", "model_max_length", "padding_side", "truncation_side",
                      "clean_up_tokenization_spaces", "chat_template", "model_input_names", "processor_class", "auto_map", "use_fast",
                      "trust_remote_code", "_commit_hash", "transformers_version", "truncation", "padding"}
WEIGHT_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".gguf", ".h5", ".msgpack", ".onnx", ".npz")
# config keys that decide tensor shapes or how they are read: a difference is a conflict
STRUCTURAL_KEYS = {"architectures", "model_type", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                   "num_key_value_heads", "head_dim", "vocab_size", "tie_word_embeddings", "n_embd", "n_layer", "n_head", "n_inner",
                   "d_model", "num_layers", "num_heads", "d_ff", "ffn_dim", "num_experts", "num_local_experts", "quantization_config"}
MAX_PARSED = 256 * 1024 * 1024


def _is_safetensors(path: str) -> bool:
    return path.endswith(".safetensors")


def _file_bytes(repo: Repo, entry: TreeEntry, path: str) -> bytes:
    if entry.size > MAX_PARSED:
        raise MergeConflict(f"{path} ({entry.size} bytes) is too large to compare")
    return b"".join(repo.objects.get(p.id) for p in entry_parts(repo.objects, entry))


def _json(repo: Repo, entry: TreeEntry, path: str) -> Any:
    try:
        return json.loads(_file_bytes(repo, entry, path))
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


def _tokenizer_conflict(repo: Repo, path: str, a: TreeEntry | None, b: TreeEntry | None) -> tuple[str | None, str | None]:
    """(why the tokenizers differ, or None; the settings that differ without changing tokens, or None)."""
    if a is None or b is None:
        return f"{path} exists only in {'theirs' if a is None else 'ours'}", None
    raw_a, raw_b = _file_bytes(repo, a, path), _file_bytes(repo, b, path)
    obj_a = obj_b = None
    if path.endswith(".json"):
        try:
            obj_a, obj_b = json.loads(raw_a), json.loads(raw_b)
        except (UnicodeDecodeError, ValueError):
            return f"{path} differs", None
        if obj_a == obj_b:
            return None, None  # same content, different formatting
    ids_a, ids_b = _token_ids(path, obj_a, raw_a), _token_ids(path, obj_b, raw_b)
    if ids_a is not None and ids_b is not None and ids_a != ids_b:

        def by_id(tok: str) -> tuple[int, str]:
            ids = [i for i in (ids_a.get(tok), ids_b.get(tok)) if isinstance(i, int)]
            return (min(ids) if ids else -1, tok)

        diffs = []
        for tok in sorted(set(ids_a) | set(ids_b), key=by_id):
            ia, ib = ids_a.get(tok), ids_b.get(tok)
            if tok not in ids_a:
                diffs.append(f"{tok!r} only in theirs (id {ib})")
            elif tok not in ids_b:
                diffs.append(f"{tok!r} only in ours (id {ia})")
            elif ia != ib:
                diffs.append(f"{tok!r} is id {ia} in ours but {ib} in theirs")
        return f"{path}: {len(diffs)} token(s) differ: {_some(diffs, 4)}", None
    if isinstance(obj_a, dict) and isinstance(obj_b, dict):
        keys = sorted(k for k in set(obj_a) | set(obj_b) if obj_a.get(k) != obj_b.get(k))
        if all(k in TOKENIZER_SETTINGS for k in keys):
            return None, f"differs in {_some(keys)} (settings, not tokens)"
        if keys == ["model"] and isinstance(obj_a.get("model"), dict) and isinstance(obj_b.get("model"), dict):
            keys = [f"model.{k}" for k in sorted(set(obj_a["model"]) | set(obj_b["model"])) if obj_a["model"].get(k) != obj_b["model"].get(k)]
        shown = [f"{k} {json.dumps(obj_a.get(k))[:40]} vs {json.dumps(obj_b.get(k))[:40]}" if k in obj_a or k in obj_b else k for k in keys]
        return f"{path} differs in {_some(shown, 3)}", None
    return f"{path} differs", None


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
            problem, settings = _tokenizer_conflict(repo, path, a, b)
            if problem:
                conflicts.append(f"tokenizers differ: {problem}")
            elif settings:
                kept.append({"path": path, "reason": settings})
        elif name == "config.json":
            if a is None or b is None:
                conflicts.append(f"{path} exists only in {'theirs' if a is None else 'ours'}")
                continue
            ca, cb = _json(repo, a, path), _json(repo, b, path)
            structural, other = _config_diff(ca, cb) if isinstance(ca, dict) and isinstance(cb, dict) else (["not a JSON object"], [])
            if structural:
                conflicts.append(f"{path}: {_some(structural)}")
            elif other:
                kept.append({"path": path, "reason": f"differs in {_some(other)}"})
        elif path.endswith(WEIGHT_SUFFIXES) and a is not None and b is not None:
            conflicts.append(f"{path} differs and only safetensors weights can be merged")
        else:
            reason = "differs" if a is not None and b is not None else "only in ours" if b is None else "only in theirs, not taken"
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
        if ref is None:
            repo.refs.set_head(theirs, message=f"merge {rev}: fast-forward", who=author, expected=head)
        else:
            repo.refs.compare_and_swap(ref, head, theirs, message=f"merge {rev}: fast-forward", who=author)
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
        if t.id == th.id and (not recipe.needs_base or b is None or b.id == t.id or b.shape != t.shape or b.dtype not in FLOAT_DTYPES):
            return t  # both sides agree, and there is no usable base change to add twice
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
        elif base is not None and o.id != t.id:  # a tensor both sides agree on needs no base
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

