"""Per-tensor merge formulas, registered by name.

Each method sees one tensor name at a time: the base tensor (or None) and one tensor per model,
all float32 and of the same shape, and returns the merged float32 tensor. Nothing here reads
files, so every formula can be checked on hand-made tensors.
"""

from __future__ import annotations

import difflib
import hashlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from finetune.errors import UnknownIdError

# |cos| above this counts as parallel for SLERP: sin(theta) < ~0.03 there, and dividing by it
# would amplify float32 rounding more than the arc bends the result.
SLERP_PARALLEL_COS = 0.9995


@dataclass(frozen=True)
class MergeParams:
    """Knobs shared by the methods; each method reads only the ones it needs."""

    weights: tuple[float, ...]  # one per model (empty for slerp)
    density: float = 0.5  # fraction of task-vector entries kept (ties, dare)
    lam: float = 1.0  # scale of the combined task vector
    slerp_t: float = 0.5  # 0 -> first model, 1 -> second model
    seed: int = 0  # dare drop masks


TensorFn = Callable[[str, "torch.Tensor | None", Sequence[torch.Tensor], MergeParams], torch.Tensor]


@dataclass(frozen=True)
class MergeMethod:
    """A registered merge method."""

    name: str
    summary: str
    needs_base: bool
    model_count: int | None  # exact number of models required, None for any >= 1
    fn: TensorFn


def tensor_seed(seed: int, name: str) -> int:
    """A 63-bit seed for one tensor: stable across runs, processes and tensor order."""
    digest = hashlib.sha256(f"{seed}\0{name}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def _task_vectors(base: torch.Tensor | None, models: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    assert base is not None, "method registered with needs_base"
    return [m - base for m in models]


def linear(name, base, models, p: MergeParams) -> torch.Tensor:
    """sum_i w_i m_i / sum_i w_i; the base is not part of the average."""
    total = sum(p.weights)
    out = torch.zeros_like(models[0])
    for w, m in zip(p.weights, models, strict=True):
        out.add_(m, alpha=w / total)
    return out


def task_arithmetic(name, base, models, p: MergeParams) -> torch.Tensor:
    """base + lam * sum_i w_i (m_i - base)."""
    combined = torch.zeros_like(base)
    for w, tau in zip(p.weights, _task_vectors(base, models), strict=True):
        combined.add_(tau, alpha=w)
    return base + p.lam * combined


def _keep_count(density: float, numel: int) -> int:
    # At least one entry survives, so a tiny tensor is never wiped by rounding.
    return max(1, round(density * numel))


def trim_top_magnitude(tau: torch.Tensor, density: float) -> torch.Tensor:
    """Zero all but the top-`density` fraction of entries by |value| (ties at the cut kept)."""
    if tau.numel() == 0 or density >= 1.0:
        return tau
    magnitude = tau.abs().reshape(-1)
    k = _keep_count(density, magnitude.numel())
    # The k-th largest |value| is the (n - k + 1)-th smallest.
    threshold = magnitude.kthvalue(magnitude.numel() - k + 1).values
    return torch.where(tau.abs() >= threshold, tau, torch.zeros_like(tau))


def ties(name, base, models, p: MergeParams) -> torch.Tensor:
    """TIES: trim, elect the sign with the larger total mass, average the agreeing entries.

    v_i = w_i * trim(m_i - base); s = sign(sum_i v_i); agreeing entries have sign(v_i) == s
    and v_i != 0; merged = sum_i agree_i v_i / sum_i agree_i w_i (0 where none agree);
    result = base + lam * merged.
    """
    weighted = torch.stack(
        [
            w * trim_top_magnitude(tau, p.density)
            for w, tau in zip(p.weights, _task_vectors(base, models), strict=True)
        ]
    )  # [n_models, *shape]
    elected = torch.sign(weighted.sum(dim=0))  # [*shape], 0 where the masses cancel exactly
    agree = (torch.sign(weighted) == elected) & (weighted != 0)  # [n_models, *shape]
    w = torch.tensor(p.weights, dtype=weighted.dtype).reshape(-1, *([1] * base.dim()))
    numerator = (weighted * agree).sum(dim=0)
    denominator = (w * agree).sum(dim=0)
    merged = torch.where(denominator > 0, numerator / denominator.clamp_min(1e-12), 0.0)
    return base + p.lam * merged


def dare_masks(name: str, shape: torch.Size, n_models: int, p: MergeParams) -> list[torch.Tensor]:
    """Keep masks for one tensor, model by model, from a generator seeded by (seed, name)."""
    generator = torch.Generator().manual_seed(tensor_seed(p.seed, name))
    return [torch.rand(shape, generator=generator) < p.density for _ in range(n_models)]


def dare(name, base, models, p: MergeParams) -> torch.Tensor:
    """DARE: drop each task-vector entry with probability 1 - density, rescale by 1/density,
    then combine like task arithmetic: base + lam * sum_i w_i mask_i (m_i - base) / density."""
    masks = dare_masks(name, base.shape, len(models), p)
    combined = torch.zeros_like(base)
    for w, tau, keep in zip(p.weights, _task_vectors(base, models), masks, strict=True):
        combined.add_(tau * keep, alpha=w / p.density)
    return base + p.lam * combined


def slerp(name, base, models, p: MergeParams) -> torch.Tensor:
    """Spherical interpolation between two tensors, treated as flat vectors.

    The angle comes from the normalised vectors; the arc weights apply to the raw vectors, so
    norms interpolate too. Nearly parallel (or zero) vectors fall back to linear interpolation.
    """
    v0, v1 = models
    t = p.slerp_t
    n0, n1 = float(v0.norm()), float(v1.norm())
    if n0 == 0.0 or n1 == 0.0:
        return (1 - t) * v0 + t * v1
    cos = float((v0.reshape(-1).double() @ v1.reshape(-1).double()) / (n0 * n1))
    cos = min(1.0, max(-1.0, cos))
    if abs(cos) > SLERP_PARALLEL_COS:
        return (1 - t) * v0 + t * v1
    theta = math.acos(cos)
    s0 = math.sin((1 - t) * theta) / math.sin(theta)
    s1 = math.sin(t * theta) / math.sin(theta)
    return s0 * v0 + s1 * v1


_METHODS: dict[str, MergeMethod] = {
    m.name: m
    for m in (
        MergeMethod("linear", "weighted average of the models", False, None, linear),
        MergeMethod(
            "task_arithmetic", "base + lam * sum w_i (m_i - base)", True, None, task_arithmetic
        ),
        MergeMethod("ties", "trim, elect sign, disjoint mean of task vectors", True, None, ties),
        MergeMethod("dare", "random drop and rescale of task vectors, then sum", True, None, dare),
        MergeMethod("slerp", "spherical interpolation of two models", False, 2, slerp),
    )
}


def known_methods() -> tuple[str, ...]:
    """Names of the registered merge methods, sorted."""
    return tuple(sorted(_METHODS))


def get_method(name: str) -> MergeMethod:
    """The registered method called `name`.

    Raises:
        UnknownIdError: no such method; the message lists the known ones and the nearest.
    """
    try:
        return _METHODS[name]
    except KeyError:
        near = difflib.get_close_matches(name, list(_METHODS), n=1)
        hint = f" (did you mean {near[0]!r}?)" if near else ""
        raise UnknownIdError(
            f"unknown merge method {name!r}{hint}; known: {', '.join(known_methods())}",
            method=name,
        ) from None
