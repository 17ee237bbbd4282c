"""Model-aware diff: files, config keys, tokenizer tokens, tensors with statistics, lineage.

Either side is a commit, or the right side is a model directory. Tensors whose ids match are
never read; a changed tensor pair is read, compared and dropped before the next, so memory
stays within a few tensors and time is about the time to read the changed ones.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mvc.status import compare_trees
from store.materialize import entry_parts, load_manifest
from store.model import Commit, FileManifest, TensorEntry, Tree
from store.snapshot import hash_tree, scan, split_file, validate

if TYPE_CHECKING:
    import torch

    from mvc.repo import Repo

CONFIG_FILES = ("config.json", "generation_config.json")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json", "merges.txt", "chat_template.jinja", "added_tokens.json")
_LAYER = re.compile(r"^(.*?\.(?:layers|layer|h|blocks|block)\.\d+)\.")


# -- sides -------------------------------------------------------------------------------------


class CommitSide:
    """A commit, read from the store."""

    def __init__(self, repo: Repo, cid: str) -> None:
        self.repo, self.id = repo, cid
        self.label = cid[:12]
        self.commit: Commit | None = repo.read_commit(cid)
        self.tree: Tree = repo.read_tree(self.commit.tree)

    def manifest(self, path: str) -> FileManifest | None:
        return load_manifest(self.repo.objects, self.tree.entries[path])

    def file_bytes(self, path: str) -> bytes:
        return b"".join(self.repo.objects.get(p.id) for p in entry_parts(self.repo.objects, self.tree.entries[path]))

    def tensor_bytes(self, path: str, t: TensorEntry) -> bytes:
        from mvc.tensors import tensor_data

        return tensor_data(self.repo.objects, t)


class DirSide:
    """A model directory on disk (files not in the stat cache are hashed, nothing is stored)."""

    def __init__(self, repo: Repo, directory: Path) -> None:
        self.repo, self.dir = repo, Path(directory).resolve()
        self.id = None
        self.label = str(directory)
        self.commit = None
        self.tree, self._manifests = hash_tree(self.dir, cache=repo.statcache)

    def manifest(self, path: str) -> FileManifest | None:
        if path in self._manifests:
            return self._manifests[path]
        entry = self.tree.entries[path]
        if entry.kind == "blob":
            return None
        if self.repo.objects.has(entry.id):
            return load_manifest(self.repo.objects, entry)
        src = next(f for f in scan(self.dir) if f.rel == path)
        validate([src])
        _entry, manifest = split_file(src, None)
        self._manifests[path] = manifest
        return manifest

    def file_bytes(self, path: str) -> bytes:
        return (self.dir / path).read_bytes()

    def tensor_bytes(self, path: str, t: TensorEntry) -> bytes:
        manifest = self.manifest(path)
        offset = manifest.header.size
        for other in manifest.tensors:
            if other.name == t.name:
                break
            offset += other.size
        with open(self.dir / path, "rb") as f:
            f.seek(offset)
            return f.read(t.size)


# -- report ------------------------------------------------------------------------------------


@dataclass
class TensorDiff:
    name: str
    change: str  # added | removed | modified | dtype | shape | moved
    path: str
    old_path: str | None = None
    dtype: str | None = None
    shape: list[int] | None = None
    detail: str = ""
    rel_change: float | None = None  # ||ΔW|| / ||W||
    max_abs: float | None = None
    cosine: float | None = None
    frac_changed: float | None = None


@dataclass
class KeyChange:
    key: str
    change: str  # added | removed | changed
    old: Any = None
    new: Any = None


@dataclass
class DiffReport:
    a: str
    b: str
    files: list[dict[str, Any]] = field(default_factory=list)
    config: dict[str, list[KeyChange]] = field(default_factory=dict)
    tokenizer: dict[str, Any] = field(default_factory=dict)
    tensors: list[TensorDiff] = field(default_factory=list)
    tensors_total: int = 0
    metrics: list[KeyChange] = field(default_factory=list)
    lineage: list[KeyChange] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        return d


def flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; lists are compared whole."""
    if isinstance(obj, dict) and obj:
        out: dict[str, Any] = {}
        for k, v in obj.items():
            out.update(flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: obj} if prefix else {"": obj}


def key_changes(old: Any, new: Any) -> list[KeyChange]:
    a, b = (flatten(old) if old else {}), (flatten(new) if new else {})  # flatten({}) would be {"": {}}
    out = []
    for k in sorted(set(a) | set(b)):
        if k not in b:
            out.append(KeyChange(k, "removed", a[k], None))
        elif k not in a:
            out.append(KeyChange(k, "added", None, b[k]))
        elif a[k] != b[k]:
            out.append(KeyChange(k, "changed", a[k], b[k]))
    return out


def _json_file(side: CommitSide | DirSide, path: str) -> Any:
    try:
        return json.loads(side.file_bytes(path))
    except (ValueError, UnicodeDecodeError):
        return None


def tensor_stats(old: torch.Tensor, new: torch.Tensor) -> dict[str, float]:
    """Relative change, max |Δ|, cosine similarity and fraction of elements changed."""
    import torch

    changed = (old != new)
    frac = float(changed.float().mean()) if old.numel() else 0.0
    a = old.to(torch.float64).flatten()
    b = new.to(torch.float64).flatten()
    d = b - a
    na = float(a.norm())
    nb = float(b.norm())
    return {
        "rel_change": float(d.norm()) / na if na else (0.0 if float(d.norm()) == 0 else float("inf")),
        "max_abs": float(d.abs().max()) if d.numel() else 0.0,
        "cosine": float(torch.dot(a, b) / (na * nb)) if na and nb else (1.0 if na == nb else 0.0),
        "frac_changed": frac,
    }


def _tokenizer_view(side: CommitSide | DirSide) -> dict[str, Any] | None:
    files = {p.rsplit("/", 1)[-1]: p for p in side.tree.entries}
    if not any(name in files for name in TOKENIZER_FILES):
        return None
    vocab: dict[str, int] = {}
    added: dict[str, bool] = {}
    merges: list | None = None
    tj = _json_file(side, files["tokenizer.json"]) if "tokenizer.json" in files else None
    if isinstance(tj, dict):
        model = tj.get("model") or {}
        v = model.get("vocab")
        if isinstance(v, dict):
            vocab = {str(k): int(i) for k, i in v.items() if isinstance(i, int)}
        elif isinstance(v, list):
            vocab = {str(x[0]): i for i, x in enumerate(v) if isinstance(x, list) and x}
        merges = model.get("merges")
        for t in tj.get("added_tokens") or []:
            if isinstance(t, dict) and "content" in t:
                added[str(t["content"])] = bool(t.get("special"))
    elif "vocab.json" in files:
        v = _json_file(side, files["vocab.json"])
        vocab = v if isinstance(v, dict) else {}
    if merges is None and "merges.txt" in files:
        merges = side.file_bytes(files["merges.txt"]).decode("utf-8", "replace").splitlines()
    cfg = _json_file(side, files["tokenizer_config.json"]) if "tokenizer_config.json" in files else {}
    cfg = cfg if isinstance(cfg, dict) else {}
    special = {k: v for k, v in cfg.items() if k.endswith("_token") or k == "additional_special_tokens"}
    stm = _json_file(side, files["special_tokens_map.json"]) if "special_tokens_map.json" in files else None
    if isinstance(stm, dict):
        special.update(stm)
    template = cfg.get("chat_template")
    if "chat_template.jinja" in files:
        template = side.file_bytes(files["chat_template.jinja"]).decode("utf-8", "replace")
    tokens = set(vocab) | set(added)
    return {"tokens": tokens, "size": len(tokens), "special": special, "merges": merges, "template": template, "added": added}


def tokenizer_diff(a: CommitSide | DirSide, b: CommitSide | DirSide) -> dict[str, Any]:
    ta, tb = _tokenizer_view(a), _tokenizer_view(b)
    if ta is None and tb is None:
        return {}
    ta = ta or {"tokens": set(), "size": 0, "special": {}, "merges": None, "template": None, "added": {}}
    tb = tb or {"tokens": set(), "size": 0, "special": {}, "merges": None, "template": None, "added": {}}
    out = {
        "vocab_size": [ta["size"], tb["size"]],
        "added_tokens": sorted(tb["tokens"] - ta["tokens"]),
        "removed_tokens": sorted(ta["tokens"] - tb["tokens"]),
        "special_tokens": [asdict(k) for k in key_changes(ta["special"], tb["special"])],
        "merges_changed": ta["merges"] != tb["merges"],
        "merges_count": [len(ta["merges"] or []), len(tb["merges"] or [])],
        "chat_template_changed": ta["template"] != tb["template"],
    }
    out["changed"] = bool(out["added_tokens"] or out["removed_tokens"] or out["special_tokens"] or out["merges_changed"] or out["chat_template_changed"])
    return out


def diff(repo: Repo, a_rev: str, b: str | None = None, *, stats: bool = True) -> DiffReport:
    """Compare commit ``a_rev`` with ``b`` (a commit, or a model directory); ``b`` None means HEAD."""
    left = CommitSide(repo, repo.resolve(a_rev))
    if b is not None and Path(b).is_dir() and not _is_rev(repo, b):
        right: CommitSide | DirSide = DirSide(repo, Path(b))
    else:
        right = CommitSide(repo, repo.resolve(b or "HEAD"))
    files, tensor_changes = compare_trees(left.tree, right.tree, left.manifest, right.manifest)
    report = DiffReport(left.id, right.id or right.label, files=[vars(f) for f in files])
    report.tensors_total = sum(len((right.manifest(p) or _EMPTY).tensors) for p, e in right.tree.entries.items() if e.kind == "file")
    changed_paths = {f.path for f in files}
    for path in sorted(changed_paths):
        name = path.rsplit("/", 1)[-1]
        if name in CONFIG_FILES:
            old = _json_file(left, path) if path in left.tree.entries else {}
            new = _json_file(right, path) if path in right.tree.entries else {}
            report.config[path] = key_changes(old, new)
    if any(f.path.rsplit("/", 1)[-1] in TOKENIZER_FILES for f in files):
        report.tokenizer = tokenizer_diff(left, right)
    lm = {m.name: (p, m) for p in left.tree.entries for m in ((left.manifest(p) or _EMPTY).tensors if p in changed_paths else ())}
    rm = {m.name: (p, m) for p in right.tree.entries for m in ((right.manifest(p) or _EMPTY).tensors if p in changed_paths else ())}
    for tc in tensor_changes:
        td = TensorDiff(tc.name, tc.change, tc.path, tc.old_path, detail=tc.detail)
        side_t = rm.get(tc.name) or lm.get(tc.name)
        if side_t:
            td.dtype, td.shape = side_t[1].dtype, list(side_t[1].shape)
        if tc.change == "modified" and stats:
            from mvc.tensors import from_bytes

            (pa, ta), (pb, tb) = lm[tc.name], rm[tc.name]
            try:
                old = from_bytes(left.tensor_bytes(pa, ta), ta.dtype, ta.shape)
                new = from_bytes(right.tensor_bytes(pb, tb), tb.dtype, tb.shape)
                for k, v in tensor_stats(old, new).items():
                    setattr(td, k, v)
                del old, new
            except ValueError:
                pass  # a dtype torch cannot read: reported without statistics
        report.tensors.append(td)
    if left.commit is not None and right.commit is not None:
        report.metrics = key_changes(left.commit.metrics, right.commit.metrics)
        report.lineage = key_changes(left.commit.lineage, right.commit.lineage)
    return report


_EMPTY = FileManifest("safetensors", 0, "0" * 32)


def _is_rev(repo: Repo, text: str) -> bool:
    from mvc.errors import UnknownRevision

    try:
        repo.resolve(text)
        return True
    except UnknownRevision:
        return False


def layer_of(name: str) -> str:
    """The group a tensor belongs to in the human view: ``model.layers.3`` or the name's stem."""
    m = _LAYER.match(name)
    if m:
        return m.group(1)
    return name.rsplit(".", 1)[0] if "." in name else name
