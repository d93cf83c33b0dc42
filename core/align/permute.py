"""Applying, inverting and sampling permutations described by a :class:`PermutationSpec`."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from ..params import StateDict, check_state_dict
from .spec import PermutationSpec

Permutation = dict[str, Tensor]  # permutation name -> (n,) int64 index vector


def check_permutation(spec: PermutationSpec, perm: object, name: str = "perm") -> Permutation:
    """Check that ``perm`` maps every permutation of ``spec`` to a valid index vector."""
    if not isinstance(perm, Mapping):
        raise TypeError(
            f"{name} must be a mapping of permutation name to Tensor, got {type(perm).__name__}"
        )
    missing = sorted(set(spec.sizes) - set(perm))
    extra = sorted(set(perm) - set(spec.sizes))
    if missing or extra:
        raise ValueError(
            f"{name} must have keys {spec.names}; missing {missing}, unexpected {extra}"
        )
    out: Permutation = {}
    for p, n in spec.sizes.items():
        idx = perm[p]
        if not isinstance(idx, Tensor) or idx.ndim != 1 or idx.dtype != torch.int64:
            raise TypeError(f"{name}[{p!r}] must be a 1-D int64 Tensor, got {idx!r:.60}")
        if idx.numel() != n or not torch.equal(torch.sort(idx.cpu()).values, torch.arange(n)):
            raise ValueError(
                f"{name}[{p!r}] must be a permutation of range({n}), got {idx.numel()} entries that are not"
            )
        out[p] = idx
    return out


def identity_permutation(spec: PermutationSpec) -> Permutation:
    """The permutation that changes nothing."""
    return {p: torch.arange(n) for p, n in spec.sizes.items()}


def random_permutation(spec: PermutationSpec, *, generator: torch.Generator) -> Permutation:
    """A uniformly random permutation of every group, drawn from ``generator``."""
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    return {p: torch.randperm(n, generator=generator) for p, n in spec.sizes.items()}


def invert_permutation(perm: Mapping[str, Tensor]) -> Permutation:
    """``q`` with ``apply(q, apply(perm, sd)) == sd``."""
    return {p: torch.argsort(idx) for p, idx in perm.items()}


def permute_tensor(
    spec: PermutationSpec,
    perm: Mapping[str, Tensor],
    key: str,
    t: Tensor,
    *,
    except_axis: int | None = None,
) -> Tensor:
    """``t`` (the tensor stored under ``key``) with every axis permuted as the spec says,
    except ``except_axis``. Returns ``t`` itself when nothing applies."""
    for axis, p in enumerate(spec.axes_to_perm.get(key, ())):
        if p is None or axis == except_axis:
            continue
        t = t.index_select(axis, perm[p].to(t.device))
    return t


def apply_permutation(
    spec: PermutationSpec, perm: Mapping[str, Tensor], sd: Mapping[str, Tensor]
) -> StateDict:
    """Reorder the hidden units of a state dict; the network's function is unchanged.

    Args:
        spec: which permutation acts on which axis (see :func:`core.align.spec_for`).
        perm: permutation name -> (n,) int64 index vector (unit ``perm[p][i]`` moves to ``i``).
        sd: the state dict to permute (not modified).

    Returns:
        A new state dict; tensors the spec does not mention are shared with ``sd`` unchanged.
    """
    sd = check_state_dict("sd", sd)
    spec.check(sd, "sd")
    perm = check_permutation(spec, perm)
    return {k: permute_tensor(spec, perm, k, v.detach()) for k, v in sd.items()}
