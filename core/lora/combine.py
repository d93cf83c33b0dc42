"""Merging LoRA adapters: core.merge methods on their task vectors, and PEFT's combinations.

:func:`merge_adapters` treats each adapter's ΔW (:meth:`LoraAdapter.delta`) as a task vector
around a zero base and runs any data-free method of :data:`core.merge.METHODS` on them; the
result is a merged ΔW (export it with :func:`adapter_from_delta` or add it with
:func:`merge_into_base`).

:func:`combine_adapters` reimplements PEFT's ``LoraModel.add_weighted_adapter``
(peft/tuners/lora/model.py, peft/utils/merge_utils.py) and returns a new :class:`LoraAdapter`
with PEFT's factors:

* ``cat``: A = [w₁s₁A₁; …], B = [B₁ … ] (rank Σ rᵢ) — exact: B A = Σ wᵢ sᵢ Bᵢ Aᵢ.
* ``linear``, ``ties``, ``dare_linear``, ``dare_ties``, ``magnitude_prune``: the merge is
  applied to the A factors and to the B factors separately, with weights √|wᵢsᵢ|·sign(wᵢsᵢ)
  on A and √|wᵢsᵢ| on B (equal ranks required). Only exact for one adapter; cross terms
  Bᵢ Aⱼ appear otherwise (PEFT's documented approximation).
* ``svd``, ``ties_svd``, ``dare_linear_svd``, ``dare_ties_svd``, ``magnitude_prune_svd``:
  the merge is applied to the full ΔWᵢ, then factorised by SVD to ``svd_rank`` (default: the
  largest rank), B = U_r Σ_r, A = V_rᵀ, optionally clamped at the ``svd_clamp`` quantile.

The new adapter's scaling is 1 (PEFT sets lora_alpha = r). The random prunes draw
``torch.bernoulli`` from ``generator`` in PEFT's order (module, then A before B, then adapter),
so a generator seeded like PEFT's global RNG reproduces its draws. Magnitude pruning keeps
exactly ⌊density·n⌋ entries by ``topk`` (PEFT's rule; density ≥ 1 keeps everything).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from .._checks import check_choice, check_int, check_range
from ..params import StateDict
from .adapter import LoraAdapter, LoraLayer, layer_order

COMBINATION_TYPES = (
    "svd",
    "linear",
    "cat",
    "ties",
    "ties_svd",
    "dare_ties",
    "dare_linear",
    "dare_ties_svd",
    "dare_linear_svd",
    "magnitude_prune",
    "magnitude_prune_svd",
)
_FACTOR_WISE = ("linear", "ties", "dare_linear", "dare_ties", "magnitude_prune")


# --------------------------------------------------------------------------- core.merge methods
def applicable_methods(n_adapters: int) -> list[str]:
    """core.merge methods that merge adapters' task vectors: data-free, one merged model
    (``per_task`` methods give one model per task), two-model methods only for two."""
    from ..merge import METHODS

    out = []
    for e in METHODS.entries():
        if "data_dependent" in e.tags or "per_task" in e.tags:
            continue
        if "two_models" in e.tags and n_adapters != 2:
            continue
        out.append(e.name)
    return out


def merge_adapters(
    adapters: Sequence[LoraAdapter],
    method: str,
    *,
    generator: torch.Generator | None = None,
    **hyperparameters: Any,
) -> StateDict:
    """Merge the adapters' task vectors with ``core.merge.merge(method, ...)``.

    Each ΔWᵢ is a task vector around a zero base (modules an adapter does not adapt count as
    0). Methods that take no base (``average``, ``slerp``) merge the ΔWᵢ themselves.

    Returns:
        The merged ΔW, ``"<path>.weight"`` (and ``.bias``) -> tensor.
    """
    from ..merge import METHODS, merge

    adapters = _check_adapters(adapters)
    if method not in applicable_methods(len(adapters)):
        raise ValueError(
            f"method must be one of {applicable_methods(len(adapters))} for "
            f"{len(adapters)} adapters, got {method!r}"
        )
    deltas = [ad.delta() for ad in adapters]
    keys: dict[str, Tensor] = {}
    for d in deltas:
        for k, v in d.items():
            if k in keys and keys[k].shape != v.shape:
                raise ValueError(f"adapters disagree on the shape of {k!r}")
            keys.setdefault(k, v)
    zeros = {k: torch.zeros_like(v) for k, v in keys.items()}
    models = [{k: d.get(k, zeros[k]) for k in keys} for d in deltas]
    base = zeros if "needs_base" in METHODS[method].tags else None
    return merge(method, models, base=base, generator=generator, **hyperparameters)


# --------------------------------------------------------------------------- PEFT combinations
def combine_adapters(
    adapters: Sequence[LoraAdapter],
    weights: Sequence[float],
    combination_type: str = "svd",
    *,
    svd_rank: int | None = None,
    svd_clamp: float | None = None,
    density: float | None = None,
    majority_sign_method: str = "total",
    generator: torch.Generator | None = None,
    order: Mapping[str, Tensor] | None = None,
) -> LoraAdapter:
    """PEFT's ``add_weighted_adapter`` on :class:`LoraAdapter` objects.

    Args:
        adapters: the adapters (one adapter always combines linearly, as in PEFT).
        weights: one finite weight per adapter (negative allowed).
        combination_type: one of :data:`COMBINATION_TYPES`.
        svd_rank: rank of the ``*_svd`` results (default: the largest adapter rank).
        svd_clamp: quantile in (0, 1] at which the SVD factors are clamped (None: none).
        density: kept fraction for the pruning types (required by them).
        majority_sign_method: "total" or "frequency" (TIES sign election).
        generator: seeds the DARE (random) prunes.
        order: a state dict whose key order gives the module order (PEFT visits modules in
            the model's order; this matters only for the random draws).
    """
    adapters = _check_adapters(adapters)
    check_choice("combination_type", combination_type, COMBINATION_TYPES)
    check_choice("majority_sign_method", majority_sign_method, ("total", "frequency"))
    if (
        isinstance(weights, str)
        or not isinstance(weights, Sequence)
        or len(weights) != len(adapters)
    ):
        raise ValueError(
            f"weights must have one number per adapter ({len(adapters)}), got {weights!r}"
        )
    w = [check_range(f"weights[{i}]", x) for i, x in enumerate(weights)]
    kind = "linear" if len(adapters) == 1 else combination_type
    prunes = kind not in ("svd", "linear", "cat")
    if prunes:
        if density is None:
            raise ValueError(f"combination_type {kind!r} needs density, got None")
        check_range("density", density, 0.0)
    if svd_rank is not None:
        check_int("svd_rank", svd_rank, 1)
    if svd_clamp is not None:
        check_range("svd_clamp", svd_clamp, 0.0, 1.0, low_inclusive=False)
    ranks = {ad_layer.rank for ad in adapters for ad_layer in ad.layers.values()}
    if kind in _FACTOR_WISE and len(ranks) != 1:
        raise ValueError(
            f"combination_type {kind!r} needs adapters of one rank, got ranks {sorted(ranks)}"
        )
    new_rank = (
        sum(max(layer.rank for layer in ad.layers.values()) for ad in adapters)
        if kind == "cat"
        else (svd_rank or max(ranks))
        if kind.endswith("svd")
        else max(ranks)
    )
    layers: dict[str, LoraLayer] = {}
    for path in layer_order(adapters, order):
        present = [
            (ad.layers[path], wi) for ad, wi in zip(adapters, w, strict=True) if path in ad.layers
        ]
        ref = present[0][0]
        if kind == "cat":
            a = torch.cat([layer.a * wi * layer.scaling for layer, wi in present], dim=0)
            b = torch.cat([layer.b for layer, _ in present], dim=1)
            a, b = _pad_rank(a, b, new_rank)
        elif kind in _FACTOR_WISE:
            wa = [
                math.sqrt(abs(wi * layer.scaling)) * (1 if wi * layer.scaling >= 0 else -1)
                for layer, wi in present
            ]
            wb = [math.sqrt(abs(wi * layer.scaling)) for layer, wi in present]
            dtype = ref.a.dtype
            a = _merge(
                kind,
                [layer.a for layer, _ in present],
                wa,
                density,
                majority_sign_method,
                generator,
            ).to(dtype)
            b = _merge(
                kind,
                [layer.b for layer, _ in present],
                wb,
                density,
                majority_sign_method,
                generator,
            ).to(dtype)
        else:
            delta = _merge(
                kind.removesuffix("_svd") if kind != "svd" else "linear",
                [_peft_delta(layer) for layer, _ in present],
                [wi for _, wi in present],
                density,
                majority_sign_method,
                generator,
            )
            a, b = _svd_factors(delta, ref, new_rank, svd_clamp)
        layers[path] = LoraLayer(ref.kind, a, b, 1.0, ref.fan_in_fan_out, None)
    return LoraAdapter(layers, {"r": new_rank, "lora_alpha": new_rank, "combination_type": kind})


def _check_adapters(adapters: Sequence[LoraAdapter]) -> list[LoraAdapter]:
    if isinstance(adapters, LoraAdapter) or not isinstance(adapters, Sequence) or not adapters:
        raise ValueError("adapters must be a non-empty list of LoraAdapter")
    for i, ad in enumerate(adapters):
        if not isinstance(ad, LoraAdapter):
            raise TypeError(f"adapters[{i}] must be a LoraAdapter, got {type(ad).__name__}")
    return list(adapters)


def _pad_rank(a: Tensor, b: Tensor, rank: int) -> tuple[Tensor, Tensor]:
    """Zero-pad the factors to ``rank`` rows of A / columns of B (PEFT allocates Σ rᵢ)."""
    extra = rank - a.shape[0]
    if extra > 0:
        a = torch.cat([a, a.new_zeros(extra, *a.shape[1:])], dim=0)
        b = torch.cat([b, b.new_zeros(b.shape[0], extra, *b.shape[2:])], dim=1)
    return a, b


def _peft_delta(layer: LoraLayer) -> Tensor:
    """PEFT's ``get_delta_weight``: ΔW in the base weight's orientation."""
    return layer.delta_weight()


def _svd_factors(
    delta: Tensor, ref: LoraLayer, rank: int, clamp: float | None
) -> tuple[Tensor, Tensor]:
    if ref.kind == "conv":
        mat = delta.flatten(1) if delta.shape[2:] != (1, 1) else delta.squeeze(3).squeeze(2)
    elif ref.kind == "embedding" or ref.fan_in_fan_out:
        mat = delta.T
    else:
        mat = delta
    u, s, vh = torch.linalg.svd(mat, full_matrices=False)
    u = u[:, :rank] * s[:rank]  # (out, r) U Σ
    vh = vh[:rank]  # (r, in)
    if clamp is not None:
        hi = torch.quantile(torch.cat([u.flatten(), vh.flatten()]), clamp)
        u, vh = u.clamp(-hi, hi), vh.clamp(-hi, hi)
    if ref.kind == "conv":
        return vh.reshape(vh.shape[0], *ref.a.shape[1:]), u.reshape(u.shape[0], u.shape[1], 1, 1)
    return vh, u


def _merge(
    kind: str,
    tensors: list[Tensor],
    weights: list[float],
    density: float | None,
    sign_method: str,
    generator: torch.Generator | None,
) -> Tensor:
    """peft.utils.merge_utils: task_arithmetic / ties / dare_linear / dare_ties / magnitude_prune."""
    if kind in ("ties", "magnitude_prune"):
        tensors = [_magnitude_prune(t, density) for t in tensors]
    elif kind in ("dare_linear", "dare_ties"):
        tensors = [_random_prune(t, density, generator) for t in tensors]
    stack = torch.stack(tensors)  # (N, *shape)
    w = torch.tensor(weights, dtype=stack.dtype, device=stack.device).view(
        -1, *[1] * (stack.ndim - 1)
    )
    if kind in ("ties", "dare_ties"):
        sign = stack.sign()
        total = stack.sum(0) if sign_method == "total" else sign.sum(0)
        majority = torch.where(total >= 0, 1, -1)
        agree = sign == majority  # (N, *shape) zeros never agree
        merged = (stack * w * agree).sum(0)
        return merged / agree.sum(0).clamp(min=1.0)
    return (stack * w).sum(0)


def _magnitude_prune(t: Tensor, density: float | None) -> Tensor:
    assert density is not None
    if density >= 1:
        return t
    k = int(density * t.numel())
    mask = torch.zeros(t.numel(), dtype=t.dtype, device=t.device)
    mask[torch.topk(t.abs().reshape(-1), k=k, largest=True).indices] = 1
    return t * mask.view(t.shape)


def _random_prune(t: Tensor, density: float | None, generator: torch.Generator | None) -> Tensor:
    assert density is not None
    if density >= 1:
        return t
    mask = torch.bernoulli(torch.full_like(t, density), generator=generator)
    return t * mask / density
