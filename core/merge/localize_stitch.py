"""Localize-and-Stitch: sparse per-task regions, stitched where they overlap.

He et al., "Localize-and-Stitch: Efficient Model Merging via Sparse Task Arithmetic",
TMLR 2025, arXiv:2408.09485 (authors' code: yifei-he/Localize-and-Stitch, ``localize_utils.py``).

1. Localize: a binary mask γᵢ per task. Dataless (``masks=None``): the top ``density`` of |τᵢ|
   over all floating entries of the model. With data (:func:`localize_masks`): mask logits S
   start at ±``sigmoid_bias`` on that top-``density`` set and follow the reference update on
   the loss of θ₀ + σ(S) ⊙ τᵢ on a few labelled examples; γᵢ = round(σ(S)).
2. Stitch: entries selected by several tasks are averaged, θ = θ₀ + Σᵢ (γᵢ / Σⱼ γⱼ) ⊙ τᵢ
   (0 where no task selects an entry) — the reference ``Stitcher.get_average_masks``.

The dataless top-k keeps |τ| ≥ the k-th largest value (exactly k entries without ties; the
reference's strict ``>`` keeps k − 1). The reference's training step is
S ← S − g σ'(S) + ℓ₁ sign(S) σ'(S) with g = Σ_batches lr · ∂L/∂θ ⊙ τ (the reference divides
the sum by a counter that stays 1, so g is a sum over batches): the ``l1`` term as
coded pushes the logits away from 0 (the paper writes an L1 penalty on σ(S)); it is kept as
coded, with the authors' defaults (σ bias 5, lr 1e7, ℓ₁ 1, 10 epochs). Tensors the model does
not train (floating buffers such as BatchNorm statistics) get the dataless mask.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._checks import check_int, check_range, check_tensor
from .._registry import Hyper
from ..params import StateDict
from ._base import METHODS, MergeData, ModuleFactory, compute_dtype
from ._blocks import magnitude_threshold

LS_DENSITY = Hyper(
    "density", "float", 0.1, 0.001, 1.0, 0.001, help="fraction of |τᵢ| each task localises"
)


@METHODS.register(
    "localize_stitch",
    title="Localize-and-Stitch",
    paper="https://arxiv.org/abs/2408.09485",
    params=(LS_DENSITY,),
    tags=("needs_base", "data_dependent"),
)
def localize_stitch(
    models: Sequence[StateDict],
    *,
    base: StateDict | None = None,
    generator: torch.Generator | None = None,
    masks: Sequence[Mapping[str, Tensor]] | None = None,
    density: float = 0.1,
) -> StateDict:
    """θ₀ + Σᵢ (γᵢ / Σⱼ γⱼ) ⊙ τᵢ; ``masks[i]`` maps keys to task i's bool mask (from
    :func:`localize_masks`); None localises without data (top-``density`` of |τᵢ|)."""
    assert base is not None  # merge() checks needs_base
    density = check_range("density", density, 0.0, 1.0, low_inclusive=False)
    if masks is None:
        masks = [dataless_mask(base, m, density) for m in models]
    elif isinstance(masks, Mapping) or len(masks) != len(models):
        raise ValueError(f"masks must be a list with one entry per model ({len(models)})")
    keys = [k for k, v in base.items() if v.is_floating_point()]
    out: StateDict = {}
    for k in keys:
        dtype = compute_dtype(base[k])
        b = base[k].to(dtype)
        num = torch.zeros_like(b)  # (*shape) Σ γᵢ τᵢ
        cnt = torch.zeros_like(b)  # (*shape) Σ γᵢ
        for i, (m, mask) in enumerate(zip(models, masks, strict=True)):
            g = _mask_of(mask, k, b, i).to(dtype)
            num += g * (m[k].to(dtype) - b)
            cnt += g
        out[k] = b + num / cnt.clamp(min=1.0)
    return out


def _mask_of(mask: Mapping[str, Tensor], k: str, like: Tensor, i: int) -> Tensor:
    if k not in mask:
        raise ValueError(f"masks[{i}] has no entry for {k!r}")
    g = mask[k]
    if not isinstance(g, Tensor) or g.shape != like.shape:
        raise ValueError(
            f"masks[{i}][{k!r}] must be a tensor of shape {tuple(like.shape)}, "
            f"got {getattr(g, 'shape', type(g).__name__)}"
        )
    if g.dtype != torch.bool and not bool(((g == 0) | (g == 1)).all()):
        raise ValueError(f"masks[{i}][{k!r}] must be binary (bool or 0/1)")
    return g


def dataless_mask(base: StateDict, tuned: StateDict, density: float) -> StateDict:
    """γ = [|τ| ≥ t] with t the k-th largest |τ| over every floating entry, k = ⌊density·P⌋."""
    keys = [k for k, v in base.items() if v.is_floating_point()]
    thr = magnitude_threshold([tuned[k] for k in keys], [base[k] for k in keys], density)
    out: StateDict = {}
    for k in keys:
        tau = tuned[k].to(compute_dtype(base[k])) - base[k].to(compute_dtype(base[k]))
        out[k] = tau.abs() >= thr if thr > 0 else tau != 0
    return out


def localize_masks(
    model: nn.Module,
    base: StateDict,
    tuned: StateDict,
    x: Tensor,
    y: Tensor,
    *,
    density: float = 0.01,
    epochs: int = 10,
    lr: float = 1e7,
    l1: float = 1.0,
    sigmoid_bias: float = 5.0,
    batch_size: int = 128,
) -> StateDict:
    """Learn task ``tuned``'s mask on labelled examples (the paper's "Localize" with data).

    Args:
        model: a classifier whose state dict matches ``base`` (used through functional_call).
        base: θ₀.
        tuned: the task's fine-tuned state dict θᵢ.
        x: (N, ...) inputs of the task (the reference uses 64 per class).
        y: (N,) labels.
        density: fraction of the top |τ| the logits start positive on.
        epochs: full passes; each sums lr · ∂L/∂θ ⊙ τ over the batches, then steps S.
        lr: the reference's gradient scale (1e7 for ViT task vectors).
        l1: the reference's regularisation strength.
        sigmoid_bias: initial |S|.
        batch_size: examples per gradient evaluation.

    Returns:
        Key -> bool mask for every floating key (parameters learned, buffers dataless).
    """
    density = check_range("density", density, 0.0, 1.0, low_inclusive=False)
    check_int("epochs", epochs, 0)
    check_range("lr", lr, 0.0)
    check_range("l1", l1, 0.0)
    check_range("sigmoid_bias", sigmoid_bias, 0.0)
    check_int("batch_size", batch_size, 1)
    check_tensor("x", x, floating=True, finite=True, min_len=1)
    check_tensor("y", y, ndim=1, min_len=x.shape[0])
    start = dataless_mask(base, tuned, density)
    names = [k for k, _ in model.named_parameters() if k in start]
    tau = {
        k: tuned[k].detach().to(torch.float32) - base[k].detach().to(torch.float32) for k in names
    }
    logits = {k: torch.where(start[k], sigmoid_bias, -sigmoid_bias) for k in names}
    fixed = {k: v for k, v in base.items() if k not in tau}
    was_training = model.training
    model.eval()
    try:
        for _ in range(epochs):
            grads = _summed_grad(model, base, fixed, tau, logits, x, y, batch_size)
            for k in names:
                s = torch.sigmoid(logits[k])
                d = s * (1.0 - s)  # σ'(S)
                g = lr * grads[k] * tau[k]
                logits[k] = logits[k] - g * d + l1 * torch.where(logits[k] > 0, d, -d)
    finally:
        model.train(was_training)
    return {k: (logits[k] > 0) if k in logits else start[k] for k in start}


def _summed_grad(
    model: nn.Module,
    base: StateDict,
    fixed: StateDict,
    tau: dict[str, Tensor],
    logits: dict[str, Tensor],
    x: Tensor,
    y: Tensor,
    batch_size: int,
) -> dict[str, Tensor]:
    """Sum over batches of ∂ CE / ∂θ at θ = θ₀ + σ(S) ⊙ τ (θ fixed within the epoch)."""
    params = {
        k: (base[k].to(torch.float32) + torch.sigmoid(logits[k]) * tau[k]).requires_grad_(True)
        for k in tau
    }
    total = {k: torch.zeros_like(v) for k, v in params.items()}
    for i in range(0, x.shape[0], batch_size):
        out = torch.func.functional_call(model, {**fixed, **params}, (x[i : i + batch_size],))
        loss = F.cross_entropy(out, y[i : i + batch_size].long())
        grads = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
        for k, g in zip(params, grads, strict=True):
            if g is not None:
                total[k] += g
    return total


def prepare_localize_stitch(modules: ModuleFactory, data: MergeData) -> dict[str, Any]:
    """Localize-and-Stitch's data: each task's mask learnt on its training examples
    (:func:`localize_masks`, the authors' defaults) at the ``density`` of the hyperparameters."""
    density = check_range("density", data.hyperparameters["density"], 0.0, 1.0, low_inclusive=False)
    if data.base is None:
        raise ValueError("localize_stitch needs the task-vector setting (a base model)")
    masks = []
    for i, sd in enumerate(data.models):
        data.progress(i, len(data.models), f"localize_stitch: {data.names[i]}")
        x, y = data.train(i)
        masks.append(localize_masks(modules(None), data.base, sd, x, y, density=density))
    return {"masks": masks}


METHODS.attach("localize_stitch", prepare=prepare_localize_stitch, prepare_keys=("density",))
