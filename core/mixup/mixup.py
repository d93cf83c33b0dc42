"""mixup: convex combinations of inputs and labels.

Zhang, Cisse, Dauphin, Lopez-Paz, "mixup: Beyond Empirical Risk Minimization", ICLR 2018,
arXiv:1710.09412. λ ~ Beta(α, α) (one per batch, or one per row); x = λ x_a + (1 - λ) x_b,
y = λ y_a + (1 - λ) y_b with b = partner[a] from a random permutation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from .._checks import check_int, check_tensor
from .._registry import Hyper
from ..kernels import LOCK
from ._base import (
    MIXERS,
    ROW_LOOP_MIN,
    MixResult,
    check_targets,
    fused_ok,
    mix_targets,
    sample_lam,
    sample_partner,
)


@dataclass(frozen=True)
class MixupParams:
    """Sampled mixup parameters.

    Attributes:
        lam: (N,) weight of each row's own input and label.
        partner: (N,) int64 partner index (a permutation).
    """

    lam: Tensor
    partner: Tensor


def sample_mixup(
    n: int,
    *,
    alpha: float = 1.0,
    lam: float | None = None,
    per_sample: bool = False,
    generator: torch.Generator,
) -> MixupParams:
    """Draw the partner permutation and λ for a batch of ``n`` rows."""
    check_int("n", n, 1)
    partner = sample_partner(n, generator)
    lams = sample_lam(n, alpha=alpha, lam=lam, per_sample=per_sample, generator=generator)
    return MixupParams(lam=lams, partner=partner)


def apply_mixup(x: Tensor, y: Tensor, params: MixupParams) -> MixResult:
    """Mix ``x`` (N, ...) and soft targets ``y`` (N, C) with ``params``; inputs are not changed.

    ``out = lerp(x[partner], x, λ)``. On the CPU with large rows the output is written in one
    pass from the two source rows (no gathered ``x[partner]`` temporary): by one numba kernel
    for the whole batch when it can (contiguous float32/float64, see ``core.kernels._mixup_nb``), else
    one ``torch.lerp`` per row; otherwise one gather and one in-place ``lerp_``. All evaluate
    the same ``lerp`` per element, so the results are identical. λ = 1 returns ``x``
    bit-exactly, λ = 0 returns ``x[partner]``.
    """
    check_tensor("x", x, floating=True, min_len=1)
    n = x.shape[0]
    check_targets("y", y, n)
    _check_params(params, n)
    partner = params.partner.to(x.device)
    lam = params.lam.float()
    if fused_ok(x):
        out = torch.empty_like(x)
        weights = lam.to(x.dtype).numpy()
        rows = (x.view(n, -1).numpy(), params.partner.numpy(), weights, out.view(n, -1).numpy())
        with LOCK:
            _rows_lerp()(*rows)
    elif x.device.type == "cpu" and x[0].numel() >= ROW_LOOP_MIN:
        out = torch.empty_like(x, memory_format=torch.contiguous_format)
        for i, (j, w) in enumerate(zip(params.partner.tolist(), lam.tolist(), strict=True)):
            torch.lerp(x[j], x[i], w, out=out[i])  # one read of each source, one write
    else:
        out = x[partner]  # (N, ...) partner rows, a fresh tensor (faster than index_select)
        if bool((params.lam == params.lam[0]).all()):  # one λ per batch: scalar weight
            out.lerp_(x, float(params.lam[0]))
        else:
            w = params.lam.to(device=x.device, dtype=x.dtype).view(n, *([1] * (x.ndim - 1)))
            out.lerp_(x, w)  # w (N, 1, ...)
    return MixResult(
        x=out,
        y=mix_targets(y, partner, lam.to(y.device)),
        lam=lam,
        partner=params.partner,
        lam_x=lam,
    )


def _rows_lerp() -> Any:
    from ..kernels._mixup_nb import rows_lerp

    return rows_lerp


def _check_params(params: MixupParams, n: int) -> None:
    if not isinstance(params, MixupParams):
        raise TypeError(f"params must be MixupParams, got {type(params).__name__}")
    if params.lam.shape != (n,) or params.partner.shape != (n,):
        raise ValueError(
            f"params must hold lam and partner of shape ({n},), got "
            f"{tuple(params.lam.shape)} and {tuple(params.partner.shape)}"
        )


@MIXERS.register(
    "mixup",
    title="mixup",
    paper="https://arxiv.org/abs/1710.09412",
    params=(Hyper("alpha", "float", 1.0, 0.05, 4.0, 0.05, help="Beta(α, α) for λ"),),
    tags=("pixel",),
)
def mixup(
    x: Tensor,
    y: Tensor,
    *,
    alpha: float = 1.0,
    lam: float | None = None,
    per_sample: bool = False,
    generator: torch.Generator,
) -> MixResult:
    """Convex combination of each row with its partner."""
    params = sample_mixup(len(x), alpha=alpha, lam=lam, per_sample=per_sample, generator=generator)
    return apply_mixup(x, y, params)
