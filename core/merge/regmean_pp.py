"""RegMean++: RegMean with the Gram matrices of the merged model's own inputs, layer by layer.

Nguyen et al., "RegMean++: Enhancing Effectiveness and Generalization of Regression Mean for
Model Merging", 2025, arXiv:2508.03121.

RegMean (:mod:`core.merge.regmean`) takes every layer's input Gram from model i alone. RegMean++
merges in forward order and takes layer l's Gram for model i from the inputs that layer sees
when model i's data runs through the *already merged* layers before it and model i's own
layer l: Gᵢ,ₗ = Xᵢ,ₗᵀXᵢ,ₗ / n with Xᵢ,ₗ the input of layer l in θ_merged[<l] ∘ θᵢ[≥l]. Then
W*ₗ = (Σᵢ Wᵢ,ₗ G̃ᵢ,ₗ)(Σᵢ G̃ᵢ,ₗ)⁻¹ as in RegMean (off-diagonals × α; α = 0.95, FusionBench's
RegMean++ configuration).

Variant: the layers are the model's modules in the order a forward pass first calls them; every
``nn.Linear`` weight is merged by the closed form, every other tensor (biases, BatchNorm, conv
layers) by the mean, and a module's merged values take part in the forward passes of every
later module. FusionBench's CLIP version steps over transformer blocks instead (the linear
layers inside one block see that model's own block); for a network with one linear layer per
block, such as an MLP, the two coincide (tested against FusionBench's algorithm).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from .._checks import check_int, check_range, check_tensor
from .._registry import Hyper
from ..params import StateDict
from ._base import METHODS, MergeData, ModuleFactory
from .average import average_tensor
from .regmean import regmean_weight

PP_ALPHA = Hyper("alpha", "float", 0.95, 0.0, 1.0, 0.05, help="scale of the Grams' off-diagonals")


class _Captured(Exception):
    """Raised by the Gram hook to stop a forward pass once the layer's input is seen."""


@METHODS.register(
    "regmean_pp",
    title="RegMean++",
    paper="https://arxiv.org/abs/2508.03121",
    params=(PP_ALPHA,),
    tags=("data_dependent",),
)
def regmean_pp(
    models: Sequence[StateDict],
    *,
    base: StateDict | None = None,
    generator: torch.Generator | None = None,
    model: nn.Module,
    x: Tensor | Sequence[Tensor],
    alpha: float = 0.95,
    batch_size: int = 256,
) -> StateDict:
    """RegMean++; ``model`` gives the architecture (used through functional_call only) and
    ``x`` the inputs of each model's task (one tensor for all models, or one per model)."""
    alpha = check_range("alpha", alpha, 0.0, 1.0)
    check_int("batch_size", batch_size, 1)
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    xs = [x] * len(models) if isinstance(x, Tensor) else list(x)
    if len(xs) != len(models):
        raise ValueError(f"x must be one tensor or one per model ({len(models)}), got {len(xs)}")
    for i, xi in enumerate(xs):
        check_tensor(f"x[{i}]", xi, floating=True, finite=True, min_len=1)
    keys = [k for k, v in models[0].items() if v.is_floating_point()]
    owners = forward_order(model, xs[0][:1], models[0])
    modules = dict(model.named_modules())
    merged: StateDict = {}
    for name in owners:
        own = [k for k in keys if k.rsplit(".", 1)[0] == name and k not in merged]
        weight = f"{name}.weight"
        if isinstance(modules[name], nn.Linear) and weight in own:
            grams = [
                layer_gram(model, {**sd, **merged}, name, xi, batch_size)
                for sd, xi in zip(models, xs, strict=True)
            ]
            merged[weight] = regmean_weight([sd[weight] for sd in models], grams, alpha)
        for k in own:
            if k not in merged:
                merged[k] = average_tensor([sd[k] for sd in models])
    for k in keys:  # tensors of modules a forward pass never calls
        if k not in merged:
            merged[k] = average_tensor([sd[k] for sd in models])
    return merged


def forward_order(model: nn.Module, x: Tensor, sd: StateDict) -> list[str]:
    """Names of the modules owning tensors of ``sd``, in the order a forward pass first calls
    them (with the parameters of ``sd``)."""
    seen: list[str] = []
    owners = {k.rsplit(".", 1)[0] for k in sd if "." in k}

    def hook(name: str):
        def fn(module: nn.Module, inputs: tuple[Tensor, ...]) -> None:
            if name not in seen:
                seen.append(name)

        return fn

    handles = [
        m.register_forward_pre_hook(hook(n)) for n, m in model.named_modules() if n in owners
    ]
    try:
        _forward(model, sd, x)
    finally:
        for h in handles:
            h.remove()
    return seen


def layer_gram(
    model: nn.Module, params: StateDict, layer: str, x: Tensor, batch_size: int = 256
) -> Tensor:
    """Mean input Gram XᵀX / n (float64) of the ``nn.Linear`` named ``layer`` when ``x`` runs
    through ``model`` with ``params`` (each pass stops at that layer)."""
    module = dict(model.named_modules())[layer]
    total: Tensor | None = None
    count = 0

    def fn(mod: nn.Module, inputs: tuple[Tensor, ...]) -> None:
        nonlocal total, count
        a = inputs[0].detach().reshape(-1, inputs[0].shape[-1]).to(torch.float64)  # (R, in)
        total = a.T @ a if total is None else total + a.T @ a  # (in, in)
        count += a.shape[0]
        raise _Captured

    handle = module.register_forward_pre_hook(fn)
    try:
        for start in range(0, x.shape[0], batch_size):
            try:
                _forward(model, params, x[start : start + batch_size])
            except _Captured:
                pass
    finally:
        handle.remove()
    if total is None:
        raise ValueError(f"layer {layer!r} was not called by the forward pass")
    return total / count


def _forward(model: nn.Module, params: StateDict, x: Tensor) -> Tensor:
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            return torch.func.functional_call(model, params, (x,))
    finally:
        model.train(was_training)


def prepare_regmean_pp(modules: ModuleFactory, data: MergeData) -> dict[str, Any]:
    """RegMean++'s data: the architecture and each model's training inputs (the Grams are
    taken layer by layer inside the merge, from the merged layers' outputs)."""
    return {"model": modules(None), "x": [data.train(i)[0] for i in range(len(data.models))]}


METHODS.attach("regmean_pp", prepare=prepare_regmean_pp)
