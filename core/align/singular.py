"""Singular-vector alignment under permutation (Ito, Yamada, Kumagai, "Analysis of Linear Mode
Connectivity via Permutation-Based Weight Matching", ICLR 2025, arXiv 2402.04051).

The paper's claims, which this analysis lets a researcher check on any pair of zoo models:

* a permutation changes a layer's singular **vectors** but not its singular **values**: with
  ``W = U S V^T``, ``P W Q^T = (P U) S (Q V)^T``;
* weight matching does not bring the two models much closer in L2 (the distance ratio
  ``||theta_A - pi(theta_B)|| / ||theta_A - theta_B||`` stays well above 0);
* what it does is align the singular vectors that carry the **large** singular values:
  ``<W_A, P W_B Q^T> = sum_ij s_i^A s_j^B (u_i^A . P u_j^B)(v_i^A . Q v_j^B)`` is dominated by
  the pairs of large singular values, so those are the directions matching lines up.

Variant implemented here (the paper's Fig. 3-style per-layer measure, reconstructed from the
algebra above): for each permuted weight, reshaped to ``(out, in * kernel)``, and its SVDs in A
and in the (un)permuted B, the alignment of the i-th singular pair is
``a_ij = (u_i^A . u_j^B)(v_i^A . v_j^B)`` — a product of cosines, invariant to the sign flip
``(u, v) -> (-u, -v)`` that the SVD leaves free. The diagonal ``a_ii`` (index i = rank by
singular value) is reported before and after permuting B, along with the top-k block of
``|a_ij|`` for heat maps, the singular values of both, and the L2 distances.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .._checks import check_choice, check_int
from ..params import check_state_dict
from .permute import Permutation, apply_permutation, check_permutation, identity_permutation
from .spec import PermutationSpec, spec_for

MATCHERS = ("weight matching", "activation matching")


@dataclass
class LayerAlignment:
    """Singular-vector alignment of one weight of model A and model B.

    Attributes:
        key: the state-dict key (a weight with at least one permuted axis).
        sigma_a: (r,) singular values of A's weight, descending.
        sigma_b: (r,) singular values of B's weight before permuting.
        sigma_b_permuted: (r,) after permuting (equal to ``sigma_b`` up to round-off).
        diag_before: (r,) ``a_ii`` of A against unpermuted B.
        diag_after: (r,) ``a_ii`` of A against permuted B.
        overlap_before: (k, k) ``|a_ij|`` of the top-k singular pairs, unpermuted B.
        overlap_after: (k, k) the same for permuted B.
    """

    key: str
    sigma_a: Tensor
    sigma_b: Tensor
    sigma_b_permuted: Tensor
    diag_before: Tensor
    diag_after: Tensor
    overlap_before: Tensor
    overlap_after: Tensor

    def top_alignment(self, k: int) -> tuple[float, float]:
        """Mean ``a_ii`` over the top-k singular pairs, before and after."""
        k = min(k, len(self.diag_before))
        return float(self.diag_before[:k].mean()), float(self.diag_after[:k].mean())


@dataclass
class SingularAlignment:
    """Per-layer singular-vector alignment and the L2 distances before/after a permutation.

    Attributes:
        layers: one :class:`LayerAlignment` per permuted weight, in state-dict order.
        distance_before: ``||theta_A - theta_B||`` over the weights in ``layers``.
        distance_after: ``||theta_A - pi(theta_B)||`` over the same weights.
        matcher: how the permutation was found ("given", "weight matching", ...).
    """

    layers: list[LayerAlignment]
    distance_before: float
    distance_after: float
    matcher: str = "given"

    @property
    def distance_ratio(self) -> float:
        """``distance_after / distance_before`` (Ito et al.'s "WM barely reduces L2")."""
        return self.distance_after / self.distance_before if self.distance_before > 0 else 1.0


def _matrix(t: Tensor) -> Tensor:
    return t.detach().double().cpu().reshape(t.shape[0], -1)  # (out, in * kernel)


def _svd(w: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    u, s, vh = torch.linalg.svd(w, full_matrices=False)  # (out, r), (r,), (r, in)
    return u, s, vh.T


def _layer(key: str, wa: Tensor, wb: Tensor, wbp: Tensor, top_k: int) -> LayerAlignment:
    ua, sa, va = _svd(wa)
    ub, sb, vb = _svd(wb)
    up, sp, vp = _svd(wbp)
    before = (ua.T @ ub) * (va.T @ vb)  # (r, r) a_ij, sign-invariant
    after = (ua.T @ up) * (va.T @ vp)
    k = min(top_k, len(sa))
    return LayerAlignment(
        key=key,
        sigma_a=sa.float(),
        sigma_b=sb.float(),
        sigma_b_permuted=sp.float(),
        diag_before=before.diagonal().float(),
        diag_after=after.diagonal().float(),
        overlap_before=before[:k, :k].abs().float(),
        overlap_after=after[:k, :k].abs().float(),
    )


def singular_alignment(
    spec: PermutationSpec,
    sd_a: Mapping[str, Tensor],
    sd_b: Mapping[str, Tensor],
    perm: Mapping[str, Tensor] | None = None,
    *,
    top_k: int = 16,
    matcher: str = "given",
) -> SingularAlignment:
    """Singular-vector alignment of every permuted weight of A and B, before and after ``perm``.

    Args:
        spec: the architecture's permutation spec.
        sd_a: reference state dict (not modified).
        sd_b: the other model (not modified).
        perm: permutation of B's units (e.g. from :func:`core.align.weight_matching`); None is
            the identity (then "after" equals "before").
        top_k: size of the ``|a_ij|`` blocks kept for heat maps.
        matcher: a label stored with the result.

    Returns:
        A :class:`SingularAlignment` with one entry per weight (ndim >= 2) the spec permutes.
    """
    sd_a = check_state_dict("sd_a", sd_a)
    sd_b = check_state_dict("sd_b", sd_b)
    spec.check(sd_a, "sd_a")
    spec.check(sd_b, "sd_b")
    check_int("top_k", top_k, 1, 4096)
    perm = identity_permutation(spec) if perm is None else check_permutation(spec, perm)
    sd_bp = apply_permutation(spec, perm, sd_b)
    layers: list[LayerAlignment] = []
    d_before = d_after = 0.0
    for key, axes in spec.axes_to_perm.items():
        if len(axes) < 2 or all(p is None for p in axes) or not key.endswith("weight"):
            continue
        wa, wb, wbp = _matrix(sd_a[key]), _matrix(sd_b[key]), _matrix(sd_bp[key])
        d_before += float((wa - wb).square().sum())
        d_after += float((wa - wbp).square().sum())
        layers.append(_layer(key, wa, wb, wbp, top_k))
    if not layers:
        raise ValueError("spec permutes no weight matrix (ndim >= 2): nothing to analyse")
    return SingularAlignment(layers, d_before**0.5, d_after**0.5, matcher)


def compare_singular_alignment(
    model: nn.Module,
    sd_a: Mapping[str, Tensor],
    sd_b: Mapping[str, Tensor],
    *,
    matchers: Sequence[str] = ("weight matching",),
    x: Tensor | None = None,
    top_k: int = 16,
    generator: torch.Generator | None = None,
    device: str | torch.device = "cpu",
) -> dict[str, SingularAlignment]:
    """Find B's permutation with each matcher and analyse the singular-vector alignment.

    Args:
        model: the architecture (its spec comes from :func:`core.align.spec_for`).
        sd_a: reference model; sd_b: model to align.
        matchers: "weight matching" and / or "activation matching" (the latter needs ``x``).
        x: (N, ...) training inputs for activation matching.
        top_k: heat-map block size.
        generator: permutation order of weight matching.
        device: where activation matching runs.
    """
    from .activation_matching import activation_matching
    from .weight_matching import weight_matching

    if not matchers:
        raise ValueError(f"matchers must name at least one of {MATCHERS}, got {list(matchers)}")
    spec = spec_for(model)
    out: dict[str, SingularAlignment] = {}
    for m in matchers:
        check_choice("matcher", m, MATCHERS)
        perm: Permutation
        if m == "weight matching":
            perm = weight_matching(spec, sd_a, sd_b, generator=generator)
        else:
            if x is None:
                raise ValueError("x (training inputs) is required for activation matching")
            perm = activation_matching(model, sd_a, sd_b, x.split(250), spec=spec, device=device)
        out[m] = singular_alignment(spec, sd_a, sd_b, perm, top_k=top_k, matcher=m)
    return out


__all__ = [
    "MATCHERS",
    "LayerAlignment",
    "SingularAlignment",
    "compare_singular_alignment",
    "singular_alignment",
]
