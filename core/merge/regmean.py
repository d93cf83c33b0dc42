"""RegMean: merge linear layers by the closed form of a regression over their inputs.

Jin et al., "Dataless Knowledge Fusion by Merging Weights of Language Models", ICLR 2023,
arXiv:2212.09849.

For every ``nn.Linear`` with weight Wᵢ (out × in) and input Gram matrix Gᵢ = XᵢᵀXᵢ / nᵢ,
W* = (Σᵢ Wᵢ G̃ᵢ)(Σᵢ G̃ᵢ)⁻¹, the minimiser of Σᵢ ‖Xᵢ Wᵀ − Xᵢ Wᵢᵀ‖². G̃ scales the off-diagonal
entries by ``alpha`` (1 = plain RegMean, 0 = diagonal only). Inputs that no model's data ever
activates (dead ReLU units: zero Gram rows) leave the objective free in their columns; those
columns keep the models' mean, and the rest is solved exactly (pseudo-inverse if singular). Every other tensor (biases,
BatchNorm, conv layers) is averaged uniformly. :func:`gram_matrices` collects the Grams of the
inputs of every ``nn.Linear`` with forward hooks (conv layers are left out).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from .._checks import check_int, check_range, check_tensor
from .._registry import Hyper
from ..params import StateDict
from ._base import METHODS, MergeData, ModuleFactory
from .average import average_tensor

ALPHA = Hyper("alpha", "float", 0.9, 0.0, 1.0, 0.05, help="scale of the Grams' off-diagonals")


@METHODS.register(
    "regmean",
    title="RegMean",
    paper="https://arxiv.org/abs/2212.09849",
    params=(ALPHA,),
    tags=("data_dependent",),
)
def regmean(
    models: Sequence[StateDict],
    *,
    base: StateDict | None = None,
    generator: torch.Generator | None = None,
    grams: Sequence[Mapping[str, Tensor]],
    alpha: float = 0.9,
) -> StateDict:
    """RegMean; ``grams[i]`` maps a linear layer's name (``"trunk.fc0"``) to its (in, in)
    input Gram for model i (from :func:`gram_matrices`)."""
    alpha = check_range("alpha", alpha, 0.0, 1.0)
    if isinstance(grams, Mapping) or len(grams) != len(models):
        raise ValueError(f"grams must be a list with one entry per model ({len(models)})")
    out: StateDict = {}
    for k, v in models[0].items():
        if not v.is_floating_point():
            continue
        layer = k.removesuffix(".weight")
        if k.endswith(".weight") and v.ndim == 2 and all(layer in g for g in grams):
            out[k] = regmean_weight([m[k] for m in models], [g[layer] for g in grams], alpha)
        else:
            out[k] = average_tensor([m[k] for m in models])
    return out


def regmean_weight(weights: Sequence[Tensor], grams: Sequence[Tensor], alpha: float) -> Tensor:
    """W* = (Σ Wᵢ G̃ᵢ)(Σ G̃ᵢ)⁻¹ for (out, in) weights and (in, in) Grams."""
    d_in = weights[0].shape[1]
    for i, g in enumerate(grams):
        check_tensor(f"grams[{i}]", g, ndim=2, floating=True, finite=True)
        if g.shape != (d_in, d_in):
            raise ValueError(f"grams[{i}] must have shape ({d_in}, {d_in}), got {tuple(g.shape)}")
    dtype = torch.float64
    gs = [_shrink(g.to(dtype), alpha) for g in grams]  # (in, in) each
    lhs = torch.zeros_like(gs[0])  # (in, in) Σ G̃ᵢ
    rhs = torch.zeros(d_in, weights[0].shape[0], dtype=dtype, device=gs[0].device)  # (in, out)
    for g, w in zip(gs, weights, strict=True):
        lhs += g
        rhs += g @ w.to(dtype).T
    # An input no model ever sees (a dead ReLU unit) has a zero row and column in every Gram:
    # the objective does not depend on its weights, so they keep the models' mean, and the
    # system is solved on the inputs that are seen (positive definite there for alpha < 1).
    seen = torch.diagonal(lhs) > 0  # (in,)
    sol = torch.stack([w.to(dtype).T for w in weights]).mean(0)  # (in, out)
    if bool(seen.any()):
        a, b = lhs[seen][:, seen], rhs[seen]
        try:
            sol[seen] = torch.linalg.solve(a, b)
        except RuntimeError:  # singular only for alpha = 1 with too few samples
            sol[seen] = torch.linalg.pinv(a, hermitian=True) @ b  # minimum-norm least squares
    return sol.T.to(weights[0].dtype)  # (out, in)


def _shrink(g: Tensor, alpha: float) -> Tensor:
    """α · G off the diagonal, G on it."""
    return alpha * g + (1.0 - alpha) * torch.diag(torch.diagonal(g))


def gram_matrices(model: nn.Module, x: Tensor, *, batch_size: int = 256) -> dict[str, Tensor]:
    """Mean input Gram XᵀX / n of every ``nn.Linear`` (all leading dims flattened to rows).

    Args:
        model: the model (not modified; hooks are removed afterwards).
        x: (N, ...) inputs.
        batch_size: examples per forward pass.

    Returns:
        Layer name -> (in_features, in_features) Gram matrix in float64.
    """
    check_tensor("x", x, floating=True, finite=True, min_len=1)
    check_int("batch_size", batch_size, 1)
    sums: dict[str, Tensor] = {}
    counts: dict[str, int] = {}

    def hook(name: str):
        def fn(module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
            a = inputs[0].detach().reshape(-1, inputs[0].shape[-1]).to(torch.float64)  # (R, in)
            sums[name] = sums.get(name, 0) + a.T @ a  # (in, in)
            counts[name] = counts.get(name, 0) + a.shape[0]

        return fn

    handles = [
        m.register_forward_hook(hook(name))
        for name, m in model.named_modules()
        if isinstance(m, nn.Linear)
    ]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for start in range(0, x.shape[0], batch_size):
                model(x[start : start + batch_size])
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return {k: sums[k] / counts[k] for k in sums}


def prepare_regmean(modules: ModuleFactory, data: MergeData) -> dict[str, Any]:
    """RegMean's data: the input Gram matrices of each model's linear layers on its task's
    training inputs (:func:`gram_matrices`)."""
    grams = []
    for i, sd in enumerate(data.models):
        data.progress(i, len(data.models), f"regmean: {data.names[i]}")
        module = modules(sd)
        grams.append(gram_matrices(module, data.train(i)[0]))
    return {"grams": grams}


METHODS.attach("regmean", prepare=prepare_regmean)
