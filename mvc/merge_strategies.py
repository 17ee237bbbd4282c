"""Merge strategies: pure functions on fp32 torch tensors, and the recipe that picks one.

``linear``, ``slerp``, ``task_arithmetic``, ``ties``, ``dare_linear`` and ``dare_ties`` never
modify their inputs; they are built from ``trim_top_k`` (TIES trimming), ``dare_drop`` (DARE)
and ``elect_and_mean`` (TIES sign election and disjoint mean). docs/merge.md gives the formulas
and conventions. torch is imported inside the functions only.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from mvc.errors import InvalidArgument
from store.ids import hash_bytes

if TYPE_CHECKING:
    import torch

STRATEGIES = ("linear", "slerp", "task-arithmetic", "ties", "dare-ties", "dare-linear")
TASK_VECTOR_STRATEGIES = ("task-arithmetic", "ties", "dare-ties", "dare-linear")
DEFAULT_STRATEGY = "task-arithmetic"
DEFAULT_DENSITY = 0.2
DOT_THRESHOLD = 0.9995  # slerp falls back to lerp for vectors closer to parallel than this

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


def _bad_recipe(message: str) -> InvalidArgument:
    return InvalidArgument(message, hint="`mvc merge --help` lists the options; docs/merge.md says which strategy uses which")


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
            raise _bad_recipe(f"unknown merge strategy {self.strategy!r}; choose one of {', '.join(STRATEGIES)}")
        w = tuple(float(x) for x in self.weights)
        if len(w) > 2 or not all(math.isfinite(x) for x in w):
            raise _bad_recipe("--weight takes one value (the share of REF) or two (HEAD's and REF's), all finite")
        dare = s.startswith("dare")
        if self.density is not None and s not in ("ties", "dare-ties", "dare-linear"):
            raise _bad_recipe(f"--density has no effect with the {s} strategy")
        if self.density is not None and not 0 < self.density <= 1:
            raise _bad_recipe(f"--density must be in (0, 1], not {self.density}")
        if self.lam is not None and (s not in TASK_VECTOR_STRATEGIES or not math.isfinite(self.lam)):
            raise _bad_recipe(f"--lambda applies to {', '.join(TASK_VECTOR_STRATEGIES)} and must be finite")
        if self.seed is not None and not dare:
            raise _bad_recipe(f"--seed has no effect with the {s} strategy (only dare-ties and dare-linear are random)")
        out = replace(self, strategy=s, weights=w, seed=(self.seed if self.seed is not None else secrets.randbits(63)) if dare else None)
        ws = out.resolved_weights()
        if s == "linear" and sum(ws) == 0:
            raise _bad_recipe("linear weights must not sum to zero")
        if s == "slerp" and not 0 <= ws[1] / sum(ws) <= 1:
            raise _bad_recipe("slerp's factor t (--weight) must be in [0, 1]")
        if s in ("ties", "dare-ties") and min(ws) <= 0:
            raise _bad_recipe(f"{s} weights must be positive")
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
