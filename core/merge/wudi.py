"""WUDI-Merging: data-free merging by removing the interference the task vectors predict.

Cheng et al., "Whoever Started the Interference Should End It: Guiding Data-Free Model Merging
via Task Vectors", ICML 2025, arXiv:2503.08099.

Variant: the paper's WUDI, as FusionBench's ``wudi.wudi_merging``. For every 2-D weight the
merged task vector τ_m starts at Σᵢ τᵢ and minimises

    L(τ_m) = Σᵢ ‖(τ_m − τᵢ) τᵢᵀ‖²_F / ‖τᵢ‖²_F

with Adam (lr 1e-5, no weight decay) for ``steps`` iterations (the rows of τᵢ stand in for the
task's inputs). Every other tensor is the mean of the task vectors; θ = θ₀ + α τ_m (α = 1 in
the paper and FusionBench).

The loss is quadratic, so its gradient has the closed form ∇L = 2 (τ_m G − C) with
G = Σᵢ τᵢᵀτᵢ / ‖τᵢ‖² (n × n) and C = Σᵢ τᵢ τᵢᵀ τᵢ / ‖τᵢ‖² (m × n), both computed once. Each
step is then one (m × n)(n × n) product instead of T forward and backward products through
autograd (or, for wide matrices, T products through (m × m) terms, whichever costs less); the
Adam updates are PyTorch's own. Task vectors that are exactly zero add nothing to L (FusionBench
would divide by zero).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from .._checks import check_int, check_range
from .._registry import Hyper
from ..params import StateDict
from ._base import METHODS, apply_per_tensor, check_tensors
from ._subspace import finish, task_deltas

WUDI_SCALE = Hyper("scale", "float", 1.0, 0.0, 3.0, 0.05, help="α: scale of the merged vector")
WUDI_STEPS = Hyper("steps", "int", 300, 0, 2000, 10, help="Adam iterations per matrix")
WUDI_LR = Hyper("lr", "float", 1e-5, 1e-7, 1e-3, 1e-6, help="Adam learning rate")


@METHODS.register(
    "wudi",
    title="WUDI-Merging",
    paper="https://arxiv.org/abs/2503.08099",
    params=(WUDI_SCALE, WUDI_STEPS, WUDI_LR),
    tags=("needs_base", "per_tensor"),
)
def wudi(
    models: Sequence[StateDict],
    *,
    base: StateDict | None = None,
    generator: torch.Generator | None = None,
    scale: float = 1.0,
    steps: int = 300,
    lr: float = 1e-5,
) -> StateDict:
    """θ₀ + α τ_m with τ_m minimising the interference loss, matrix by matrix."""
    return apply_per_tensor(wudi_tensor, models, base, scale=scale, steps=steps, lr=lr)


def wudi_tensor(
    tensors: Sequence[Tensor],
    base: Tensor | None,
    *,
    generator: torch.Generator | None = None,
    scale: float = 1.0,
    steps: int = 300,
    lr: float = 1e-5,
) -> Tensor:
    """WUDI of one tensor (``tensors`` are task vectors when ``base`` is None).

    Args:
        tensors: T fine-tuned tensors.
        base: θ₀ or None (zero).
        generator: unused (the optimisation is deterministic).
        scale: α.
        steps: Adam iterations (0 returns Σᵢ τᵢ for matrices).
        lr: Adam learning rate.
    """
    tensors = check_tensors(tensors, base)
    scale = check_range("scale", scale)
    steps = check_int("steps", steps, 0)
    lr = check_range("lr", lr, 0.0, None, low_inclusive=False)
    taus = task_deltas(tensors, base)  # (T, *shape)
    if taus.ndim != 3:
        return finish(taus.mean(0), base, scale, tensors[0])
    return finish(wudi_matrix(taus, steps=steps, lr=lr), base, scale, tensors[0])


def wudi_loss(merged: Tensor, taus: Tensor) -> Tensor:
    """L(τ_m) = Σᵢ ‖(τ_m − τᵢ) τᵢᵀ‖²_F / ‖τᵢ‖²_F over the non-zero τᵢ (the objective)."""
    norms = taus.flatten(1).pow(2).sum(1)  # (T,)
    live = norms > 0
    prod = (merged - taus[live]) @ taus[live].transpose(1, 2)  # (T', m, m)
    return (prod.pow(2).sum((1, 2)) / norms[live]).sum()


def wudi_matrix(taus: Tensor, *, steps: int, lr: float) -> Tensor:
    """Adam on the WUDI loss from τ_m = Σᵢ τᵢ, with the closed-form gradient -> (m, n)."""
    _, m, n = taus.shape
    norms = taus.flatten(1).pow(2).sum(1)  # (T,) ‖τᵢ‖²
    live = norms > 0
    t_live, inv = taus[live], norms[live].reciprocal()  # (T', m, n), (T',)
    merged = torch.nn.Parameter(taus.sum(0).clone())  # (m, n)
    if steps == 0 or t_live.shape[0] == 0:
        return merged.detach()
    gram_path = m * n * n <= 2 * t_live.shape[0] * m * m * n  # cost of one step per path
    scaled = t_live * inv.view(-1, 1, 1)  # (T', m, n) τᵢ / ‖τᵢ‖²
    if gram_path:
        gram = torch.einsum("tmi,tmj->ij", scaled, t_live)  # (n, n) Σ τᵢᵀτᵢ / ‖τᵢ‖²
    pairs = list(zip(scaled, t_live, strict=True))
    if m <= n:  # C = Σ τᵢ τᵢᵀ τᵢ / ‖τᵢ‖² through (m, m) or (n, n) products, the cheaper
        const = torch.stack([(s @ t.T) @ t for s, t in pairs]).sum(0)  # (m, n)
    else:
        const = torch.stack([s @ (t.T @ t) for s, t in pairs]).sum(0)  # (m, n)
    opt = torch.optim.Adam([merged], lr=lr, weight_decay=0.0)
    with torch.no_grad():
        for _ in range(steps):
            if gram_path:
                grad = merged @ gram  # (m, n)
            else:
                grad = torch.stack([(merged @ t.T) @ s for s, t in pairs]).sum(0)
            merged.grad = grad.sub_(const).mul_(2.0)
            opt.step()
    return merged.detach()


METHODS.attach("wudi", tensor=wudi_tensor)
