"""Feature extraction from any zoo model, without modifying it.

``extract_features`` returns the penultimate features (the trunk output that the linear head
reads); ``layer_features`` returns the (flattened) outputs of any named submodules, captured with
forward hooks that are removed afterwards. Both run in eval mode under ``torch.no_grad`` and
restore the model's train/eval mode.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .._checks import check_int, check_tensor
from ..device import resolve_device
from ..models import Classifier


def _check_model_input(model: nn.Module, x: Tensor, batch_size: int) -> None:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    check_tensor("x", x, ndim=(2, 3, 4), floating=True, finite=True, min_len=1)
    check_int("batch_size", batch_size, 1, 1 << 20)


@torch.no_grad()
def extract_features(
    model: Classifier,
    x: Tensor,
    *,
    batch_size: int = 1024,
    device: str | torch.device = "auto",
) -> Tensor:
    """Penultimate-layer features of ``model`` on ``x``.

    Args:
        model: a :class:`core.models.Classifier` (its ``features`` method is used).
        x: (N, ...) inputs.
        batch_size: rows per forward pass.
        device: where the forward passes run; the model is moved there for the call and back.

    Returns:
        (N, D) float32 features on the CPU.
    """
    if not isinstance(model, Classifier):
        raise TypeError(f"model must be a core.models.Classifier, got {type(model).__name__}")
    _check_model_input(model, x, batch_size)
    dev = resolve_device(device)
    was_training = model.training
    home = next(model.parameters()).device
    model.eval().to(dev)
    try:
        out = [
            model.features(x[i : i + batch_size].to(dev)).float().cpu()
            for i in range(0, len(x), batch_size)
        ]
    finally:
        model.to(home).train(was_training)
    return torch.cat(out)  # (N, D)


def layer_names(model: nn.Module) -> list[str]:
    """Names of the submodules whose outputs ``layer_features`` can capture (leaves and blocks)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    return [name for name, _ in model.named_modules() if name]


@torch.no_grad()
def layer_features(
    model: nn.Module,
    x: Tensor,
    layers: Sequence[str],
    *,
    batch_size: int = 1024,
    device: str | torch.device = "auto",
) -> dict[str, Tensor]:
    """Outputs of the named submodules, flattened per sample, via temporary forward hooks.

    Args:
        model: any module; its parameters and mode are left as they were.
        x: (N, ...) inputs.
        layers: submodule names from :func:`layer_names`, e.g. ``["trunk.fc0", "trunk"]``.
        batch_size: rows per forward pass.
        device: where the forward passes run.

    Returns:
        layer name -> (N, D_layer) float32 CPU tensor.
    """
    _check_model_input(model, x, batch_size)
    if isinstance(layers, str) or not isinstance(layers, Sequence) or not layers:
        raise ValueError(f"layers must be a non-empty list of module names, got {layers!r}")
    modules = dict(model.named_modules())
    unknown = [name for name in layers if name not in modules or not name]
    if unknown:
        raise ValueError(
            f"layers {unknown} are not submodules of the model; expected some of "
            f"{layer_names(model)[:20]}"
        )
    dev = resolve_device(device)
    captured: dict[str, list[Tensor]] = {name: [] for name in layers}

    def hook_for(name: str):  # noqa: ANN202 - hook signature is torch's
        def hook(_module: nn.Module, _inputs: object, output: object) -> None:
            if not isinstance(output, Tensor):
                raise TypeError(f"layer {name!r} returns {type(output).__name__}, not a tensor")
            captured[name].append(output.detach().flatten(1).float().cpu())

        return hook

    was_training = model.training
    home = next(model.parameters()).device
    handles = [modules[name].register_forward_hook(hook_for(name)) for name in layers]
    model.eval().to(dev)
    try:
        for i in range(0, len(x), batch_size):
            model(x[i : i + batch_size].to(dev))
    finally:
        for h in handles:
            h.remove()
        model.to(home).train(was_training)
    return {name: torch.cat(parts) for name, parts in captured.items()}  # (N, D_layer) each
