"""Fisher merging: parameter-wise weighted average by diagonal Fisher information.

Matena & Raffel, "Merging Models with Fisher-Weighted Averaging", NeurIPS 2022,
arXiv:2111.09832.

θ* = Σᵢ wᵢ F̂ᵢ θᵢ / Σᵢ wᵢ F̂ᵢ elementwise, with F̂ᵢ = max(Fᵢ, floor). Tensors without a Fisher
(buffers such as BatchNorm running statistics) are averaged with the weights.
:func:`fisher_diagonal` computes Fᵢ from a model and data: per-example squared gradients of
log p(y|x) (not the per-batch surrogate of MergeLM/FusionBench), with y the true label
("empirical") or drawn from the model's p(y|x) ("sampled", an unbiased estimate of the exact
Fisher).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._checks import check_choice, check_int, check_range, check_tensor
from .._registry import Hyper
from ..params import StateDict
from ._base import METHODS, MergeData, ModuleFactory, check_tensors, check_weights, compute_dtype
from .average import WEIGHTS, average_tensor

FLOOR = Hyper("floor", "float", 1e-6, 0.0, 1e-2, 1e-6, help="lower bound on every Fisher value")


@METHODS.register(
    "fisher",
    title="Fisher merging",
    paper="https://arxiv.org/abs/2111.09832",
    params=(WEIGHTS, FLOOR),
    tags=("per_tensor", "data_dependent"),
)
def fisher(
    models: Sequence[StateDict],
    *,
    base: StateDict | None = None,
    generator: torch.Generator | None = None,
    fishers: Sequence[Mapping[str, Tensor]],
    weights: Sequence[float] | None = None,
    floor: float = 1e-6,
) -> StateDict:
    """Fisher-weighted average; ``fishers[i]`` maps parameter names to Fᵢ (from
    :func:`fisher_diagonal`)."""
    if isinstance(fishers, Mapping) or len(fishers) != len(models):
        raise ValueError(f"fishers must be a list with one entry per model ({len(models)})")
    out: StateDict = {}
    for k, v in models[0].items():
        if not v.is_floating_point():
            continue
        tensors = [m[k] for m in models]
        if all(k in f for f in fishers):
            out[k] = fisher_tensor(
                tensors, None, fishers=[f[k] for f in fishers], weights=weights, floor=floor
            )
        else:
            out[k] = average_tensor(tensors, weights=weights)
    return out


def fisher_tensor(
    tensors: Sequence[Tensor],
    base: Tensor | None = None,
    *,
    generator: torch.Generator | None = None,
    fishers: Sequence[Tensor],
    weights: Sequence[float] | None = None,
    floor: float = 1e-6,
) -> Tensor:
    """Σ wᵢ F̂ᵢ θᵢ / Σ wᵢ F̂ᵢ of one tensor (``base`` is ignored).

    Args:
        tensors: N tensors of one shape.
        base: unused.
        generator: unused.
        fishers: N non-negative tensors of the same shape.
        weights: N non-negative weights (default all 1).
        floor: F̂ = max(F, floor); must be > 0 unless every Fisher sum is positive.
    """
    tensors = check_tensors(tensors, None)
    fishers = check_tensors(fishers, tensors[0])
    if len(fishers) != len(tensors):
        raise ValueError(
            f"fishers must have one entry per model ({len(tensors)}), got {len(fishers)}"
        )
    floor = check_range("floor", floor, 0.0)
    w = check_weights(weights, len(tensors))
    if any(x < 0 for x in w):
        raise ValueError(f"weights must be non-negative, got {w}")
    dtype = compute_dtype(tensors[0])
    num = torch.zeros(tensors[0].shape, dtype=dtype, device=tensors[0].device)
    den = torch.zeros(tensors[0].shape, dtype=dtype, device=tensors[0].device)
    for t, f, wi in zip(tensors, fishers, w, strict=True):
        fw = f.to(dtype).clamp(min=floor) * wi  # same shape
        num += fw * t.to(dtype)
        den += fw
    if bool((den <= 0).any()):
        raise ValueError("Fisher weights sum to 0 somewhere; use floor > 0 or positive weights")
    return (num / den).to(tensors[0].dtype)


def fisher_diagonal(
    model: nn.Module,
    x: Tensor,
    y: Tensor | None = None,
    *,
    n_examples: int = 256,
    labels: str = "empirical",
    generator: torch.Generator | None = None,
    batch_size: int = 64,
) -> StateDict:
    """Diagonal Fisher of every parameter: the mean over examples of (∂ log p(y|x)/∂θ)².

    Args:
        model: a classifier returning logits (N, C); not modified.
        x: (N, ...) inputs; the first ``n_examples`` are used.
        y: (N,) true labels, needed for ``labels="empirical"``.
        n_examples: how many examples to average over (<= N).
        labels: "empirical" (true labels) or "sampled" (y ~ p(y|x), seeded by ``generator``).
        generator: seeds the sampled labels.
        batch_size: examples per vectorised per-example-gradient call.

    Returns:
        Parameter name -> Fisher diagonal, shaped like the parameter.
    """
    check_choice("labels", labels, ("empirical", "sampled"))
    check_tensor("x", x, floating=True, finite=True, min_len=1)
    n = check_int("n_examples", n_examples, 1, x.shape[0])
    check_int("batch_size", batch_size, 1)
    if labels == "empirical":
        if y is None:
            raise ValueError("labels='empirical' needs y (true labels), got None")
        check_tensor("y", y, ndim=1, min_len=n)
    params = {k: p.detach() for k, p in model.named_parameters()}
    buffers = {k: b.detach() for k, b in model.named_buffers()}
    was_training = model.training
    model.eval()
    try:
        total = {k: torch.zeros_like(p, dtype=compute_dtype(p)) for k, p in params.items()}
        for start in range(0, n, batch_size):
            xb = x[start : min(start + batch_size, n)]  # (B, ...)
            yb = _labels(model, params, buffers, xb, y, start, labels, generator)  # (B,)
            grads = _per_example_grads(model, params, buffers, xb, yb)
            for k, g in grads.items():
                total[k] += (g.to(total[k].dtype) ** 2).sum(dim=0)
    finally:
        model.train(was_training)
    return {k: v / n for k, v in total.items()}


def _labels(
    model: nn.Module,
    params: dict[str, Tensor],
    buffers: dict[str, Tensor],
    xb: Tensor,
    y: Tensor | None,
    start: int,
    labels: str,
    generator: torch.Generator | None,
) -> Tensor:
    if labels == "empirical":
        assert y is not None
        return y[start : start + xb.shape[0]].long()
    with torch.no_grad():
        logits = torch.func.functional_call(model, {**params, **buffers}, (xb,))  # (B, C)
        probs = F.softmax(logits.float(), dim=-1)  # (B, C)
    return torch.multinomial(probs, 1, generator=generator).squeeze(1)  # (B,)


def _per_example_grads(
    model: nn.Module, params: dict[str, Tensor], buffers: dict[str, Tensor], xb: Tensor, yb: Tensor
) -> dict[str, Tensor]:
    """∂ log p(y|x)/∂θ for every example: name -> (B, *param shape)."""

    def log_lik(p: dict[str, Tensor], xi: Tensor, yi: Tensor) -> Tensor:
        logits = torch.func.functional_call(model, {**p, **buffers}, (xi[None],))  # (1, C)
        return F.log_softmax(logits, dim=-1).gather(1, yi.reshape(1, 1)).sum()

    grad_fn = torch.func.vmap(torch.func.grad(log_lik), in_dims=(None, 0, 0))
    return grad_fn(params, xb, yb)


METHODS.attach("fisher", tensor=fisher_tensor)


def prepare_fisher(modules: ModuleFactory, data: MergeData) -> dict[str, Any]:
    """Fisher merging's data: the empirical diagonal Fisher of each model on its task's
    training examples (:func:`fisher_diagonal` over every example)."""
    fishers = []
    for i, sd in enumerate(data.models):
        data.progress(i, len(data.models), f"fisher: {data.names[i]}")
        module = modules(sd)
        x, y = data.train(i)
        fishers.append(fisher_diagonal(module, x, y, n_examples=len(y)))
    return {"fishers": fishers}


METHODS.attach("fisher", prepare=prepare_fisher)
