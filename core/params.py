"""State-dict arithmetic: task vectors, add/scale/lerp, flatten/unflatten, compatibility checks.

A state dict is ``dict[str, Tensor]``. Nothing here mutates its inputs. Integer tensors (such as
BatchNorm's ``num_batches_tracked``) are never averaged as floats: arithmetic takes them from
the first (or base) state dict unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from ._checks import check_range

StateDict = dict[str, Tensor]


def is_mergeable(t: Tensor) -> bool:
    """True for floating-point tensors, the only ones arithmetic applies to."""
    return t.is_floating_point() or t.is_complex()


def check_state_dict(name: str, sd: object, *, allow_empty: bool = False) -> StateDict:
    """Check that ``sd`` is a mapping of str -> Tensor (non-empty unless ``allow_empty``);
    return it as a dict."""
    if not isinstance(sd, Mapping):
        raise TypeError(
            f"{name} must be a state dict (mapping of str to Tensor), got {type(sd).__name__}"
        )
    for k, v in sd.items():
        if not isinstance(k, str) or not isinstance(v, Tensor):
            raise TypeError(f"{name} must map str to Tensor; key {k!r} has {type(v).__name__}")
    if not sd and not allow_empty:
        raise ValueError(f"{name} is empty: expected at least one tensor")
    return dict(sd)


def _check_keys(name: str, keys: object, sd: Mapping[str, Tensor], sd_name: str) -> list[str]:
    if isinstance(keys, str) or not isinstance(keys, Sequence):
        raise TypeError(f"{name} must be a sequence of key names, got {type(keys).__name__}")
    missing = [k for k in keys if k not in sd]
    if missing:
        raise ValueError(f"{name} must be keys of {sd_name}; not found: {missing[:5]}")
    return list(keys)


def check_compatible(
    sds: Sequence[Mapping[str, Tensor]], names: Sequence[str] | None = None
) -> None:
    """Check that state dicts have the same keys, shapes and dtypes.

    Raises:
        ValueError: listing missing/extra keys or shape/dtype mismatches (first few).
    """
    if isinstance(sds, Mapping) or not isinstance(sds, Sequence):
        raise TypeError(f"sds must be a sequence of state dicts, got {type(sds).__name__}")
    if len(sds) == 0:
        raise ValueError("sds must hold at least one state dict, got 0")
    names = list(names) if names is not None else [f"models[{i}]" for i in range(len(sds))]
    ref = check_state_dict(names[0], sds[0])
    for nm, sd in zip(names[1:], sds[1:], strict=True):
        sd = check_state_dict(nm, sd)
        missing = sorted(set(ref) - set(sd))
        extra = sorted(set(sd) - set(ref))
        if missing or extra:
            raise ValueError(
                f"{nm} has different keys from {names[0]}: missing {missing[:5]}"
                f"{'...' if len(missing) > 5 else ''}, unexpected {extra[:5]}"
                f"{'...' if len(extra) > 5 else ''}"
            )
        bad = [
            f"{k}: {tuple(ref[k].shape)}/{ref[k].dtype} vs {tuple(sd[k].shape)}/{sd[k].dtype}"
            for k in ref
            if ref[k].shape != sd[k].shape or ref[k].dtype != sd[k].dtype
        ]
        if bad:
            raise ValueError(
                f"{nm} does not match {names[0]} in shape/dtype: {bad[:5]}"
                f"{'...' if len(bad) > 5 else ''}"
            )


def clone(sd: Mapping[str, Tensor]) -> StateDict:
    """Deep copy (detached, same device)."""
    sd = check_state_dict("sd", sd, allow_empty=True)
    return {k: v.detach().clone() for k, v in sd.items()}


def to_device(sd: Mapping[str, Tensor], device: torch.device | str) -> StateDict:
    """Copy of ``sd`` on ``device``."""
    sd = check_state_dict("sd", sd, allow_empty=True)
    return {k: v.detach().to(device) for k, v in sd.items()}


def task_vector(base: Mapping[str, Tensor], tuned: Mapping[str, Tensor]) -> StateDict:
    """τ = θ_tuned − θ_base for every floating-point tensor (integer buffers are left out)."""
    check_compatible([base, tuned], ["base", "tuned"])
    return {k: tuned[k].detach() - base[k].detach() for k in base if is_mergeable(base[k])}


def apply_task_vector(
    base: Mapping[str, Tensor], tv: Mapping[str, Tensor], scale: float = 1.0
) -> StateDict:
    """θ = θ_base + scale · τ. Keys absent from τ (integer buffers) are copied from base."""
    base = check_state_dict("base", base)
    tv = check_state_dict("tv", tv)
    scale = check_range("scale", scale)
    extra = sorted(set(tv) - set(base))
    if extra:
        raise ValueError(f"tv has keys not in base: {extra[:5]}")
    out: StateDict = {}
    for k, v in base.items():
        if k in tv:
            if tv[k].shape != v.shape:
                raise ValueError(
                    f"tv[{k!r}] has shape {tuple(tv[k].shape)}, expected {tuple(v.shape)}"
                )
            out[k] = v.detach() + scale * tv[k].to(v.dtype)
        else:
            out[k] = v.detach().clone()
    return out


def combine_task_vectors(
    base: Mapping[str, Tensor],
    task_vectors: Sequence[Mapping[str, Tensor]],
    coefficients: Sequence[float],
    keys: Sequence[str],
) -> StateDict:
    """θ₀ + Σᵢ cᵢ τᵢ over ``keys`` (other entries are taken from ``base``); zero coefficients
    are skipped, so one-hot coefficients cost one add per key."""
    if len(coefficients) != len(task_vectors):
        raise ValueError(
            f"coefficients must have {len(task_vectors)} entries, got {len(coefficients)}"
        )
    out = dict(base)
    for k in keys:
        acc = base[k].clone()
        for c, tv in zip(coefficients, task_vectors, strict=True):
            if c != 0.0:
                acc.add_(tv[k], alpha=float(c))
        out[k] = acc
    return out


def add(a: Mapping[str, Tensor], b: Mapping[str, Tensor]) -> StateDict:
    """a + b over floating tensors; integer tensors from a."""
    check_compatible([a, b], ["a", "b"])
    return {k: a[k] + b[k] if is_mergeable(a[k]) else a[k].clone() for k in a}


def scale(a: Mapping[str, Tensor], factor: float) -> StateDict:
    """factor · a over floating tensors; integer tensors copied."""
    a = check_state_dict("a", a)
    factor = check_range("factor", factor)
    return {k: v * factor if is_mergeable(v) else v.clone() for k, v in a.items()}


def lerp(a: Mapping[str, Tensor], b: Mapping[str, Tensor], t: float) -> StateDict:
    """(1 − t)·a + t·b over floating tensors; integer tensors from a."""
    check_compatible([a, b], ["a", "b"])
    t = check_range("t", t)
    return {k: torch.lerp(a[k], b[k], t) if is_mergeable(a[k]) else a[k].clone() for k in a}


def weighted_sum(sds: Sequence[Mapping[str, Tensor]], weights: Sequence[float]) -> StateDict:
    """Σ w_i · sd_i over floating tensors; integer tensors from the first."""
    if isinstance(sds, Mapping) or not isinstance(sds, Sequence):
        raise TypeError(f"sds must be a sequence of state dicts, got {type(sds).__name__}")
    if isinstance(weights, str) or not isinstance(weights, Sequence):
        raise TypeError(f"weights must be a sequence of numbers, got {type(weights).__name__}")
    weights = [check_range(f"weights[{i}]", w) for i, w in enumerate(weights)]
    if len(sds) != len(weights):
        raise ValueError(
            f"weights must have one entry per state dict ({len(sds)}), got {len(weights)}"
        )
    check_compatible(sds)
    out: StateDict = {}
    for k, v in sds[0].items():
        if is_mergeable(v):  # accumulate in at least float32 (half would overflow on alpha)
            acc = torch.zeros_like(v, dtype=torch.promote_types(v.dtype, torch.float32))
            for sd, w in zip(sds, weights, strict=True):
                acc.add_(sd[k].to(acc.dtype), alpha=float(w))
            out[k] = acc.to(v.dtype)
        else:
            out[k] = v.clone()
    return out


def flatten(sd: Mapping[str, Tensor], keys: Sequence[str] | None = None) -> Tensor:
    """Concatenate the floating tensors of ``sd`` (in ``keys`` order) into one 1-D vector."""
    sd = check_state_dict("sd", sd)
    keys = (
        _check_keys("keys", keys, sd, "sd")
        if keys is not None
        else [k for k, v in sd.items() if is_mergeable(v)]
    )
    if not keys:
        raise ValueError("sd has no floating-point tensors to flatten")
    return torch.cat([sd[k].reshape(-1) for k in keys])  # (P,)


def unflatten(
    vec: Tensor, like: Mapping[str, Tensor], keys: Sequence[str] | None = None
) -> StateDict:
    """Inverse of :func:`flatten`: split ``vec`` into tensors shaped as in ``like``.
    Keys of ``like`` not in ``keys`` are copied from ``like``."""
    if not isinstance(vec, Tensor):
        raise TypeError(f"vec must be a Tensor, got {type(vec).__name__}")
    like = check_state_dict("like", like)
    keys = (
        _check_keys("keys", keys, like, "like")
        if keys is not None
        else [k for k, v in like.items() if is_mergeable(v)]
    )
    total = sum(like[k].numel() for k in keys)
    if vec.ndim != 1 or vec.numel() != total:
        raise ValueError(f"vec must be 1-D with {total} elements, got shape {tuple(vec.shape)}")
    out: StateDict = {}
    offset = 0
    for k in keys:
        n = like[k].numel()
        out[k] = vec[offset : offset + n].reshape(like[k].shape).to(like[k].dtype)
        offset += n
    for k, v in like.items():
        if k not in out:
            out[k] = v.clone()
    return {k: out[k] for k in like}


def n_params(sd: Mapping[str, Tensor]) -> int:
    """Number of floating-point values in ``sd``."""
    sd = check_state_dict("sd", sd, allow_empty=True)
    return sum(v.numel() for v in sd.values() if is_mergeable(v))


def allclose(
    a: Mapping[str, Tensor], b: Mapping[str, Tensor], *, atol: float = 1e-6, rtol: float = 1e-5
) -> bool:
    """Same keys and all tensors close."""
    a = check_state_dict("a", a, allow_empty=True)
    b = check_state_dict("b", b, allow_empty=True)
    if set(a) != set(b):
        return False
    return all(
        a[k].shape == b[k].shape
        and torch.allclose(a[k].float(), b[k].float(), atol=atol, rtol=rtol)
        for k in a
    )
