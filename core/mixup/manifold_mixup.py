"""Manifold Mixup: mix hidden representations at a randomly chosen layer.

Verma et al., "Manifold Mixup: Better Representations by Interpolating Hidden States",
ICML 2019, arXiv:1806.05236. A layer k is drawn uniformly from the input and the hidden stages
(the official PreActResNet draws k in {0, 1, 2}); at k = input this is plain mixup. For hidden
layers a one-shot forward hook on that layer of the model replaces its output h with
λ h + (1 - λ) h[partner] on the model's **next** forward pass, then removes itself; the returned
``x`` is the unchanged input. This fits :func:`core.train.train`, which runs the model right after
``mix_fn``. Works with every zoo :class:`~core.models.Classifier` (mlp, cnn, resnet20 trunks).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from .._checks import check_int
from .._registry import Hyper
from ._base import MIXERS, MixResult, check_targets, mix_targets, sample_lam, sample_partner
from .mixup import MixupParams, apply_mixup

INPUT = "input"


def mix_layers(model: nn.Module) -> list[str]:
    """Names of the places where hidden states can be mixed: "input", then hidden stages.

    For a zoo Classifier: the ReLU outputs of the mlp/cnn trunk and the residual stages
    ``layer1``/``layer2`` of resnet20, excluding the last stage (whose output is the features).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    trunk = getattr(model, "trunk", model)
    names = [n for n, _ in trunk.named_children() if n.startswith("relu") or n.startswith("layer")]
    prefix = "trunk." if trunk is not model else ""
    return [INPUT] + [prefix + n for n in names[:-1]]


class HiddenMix:
    """One-shot forward hook that mixes a layer's output with its partner rows."""

    def __init__(self, model: nn.Module, layer: str, lam: Tensor, partner: Tensor):
        self.layer, self.lam, self.partner = layer, lam, partner
        module = model.get_submodule(layer)
        previous = getattr(model, "_pending_hidden_mix", None)
        if previous is not None:  # a mix that never ran is dropped, not stacked
            previous.remove()
        self._model = model
        self._handle = module.register_forward_hook(self._hook)
        model._pending_hidden_mix = self  # type: ignore[assignment]
        self.fired = False

    def _hook(self, module: nn.Module, inputs: Any, output: Tensor) -> Tensor:
        self.remove()
        if output.shape[0] != self.partner.shape[0]:
            raise ValueError(
                f"manifold mixup was sampled for {self.partner.shape[0]} rows, "
                f"but layer {self.layer!r} saw a batch of {output.shape[0]}"
            )
        self.fired = True
        partner = self.partner.to(output.device)
        w = self.lam.to(output.device, output.dtype).view(-1, *([1] * (output.ndim - 1)))
        return torch.lerp(output.index_select(0, partner), output, w)

    def restrict(self, keep: Tensor) -> None:
        """Rows outside ``keep`` (N,) bool are left unmixed (λ = 1)."""
        self.lam = torch.where(keep.cpu(), self.lam, torch.ones_like(self.lam))

    def remove(self) -> None:
        self._handle.remove()
        if getattr(self._model, "_pending_hidden_mix", None) is self:
            self._model._pending_hidden_mix = None  # type: ignore[assignment]


@dataclass(frozen=True)
class ManifoldMixupParams:
    """Sampled Manifold Mixup parameters: the layer, λ (N,) and partners (N,)."""

    layer: str
    lam: Tensor
    partner: Tensor


def sample_manifold_mixup(
    n: int,
    layers: list[str] | tuple[str, ...],
    *,
    alpha: float = 2.0,
    lam: float | None = None,
    per_sample: bool = False,
    generator: torch.Generator,
) -> ManifoldMixupParams:
    """Draw the layer (uniform over ``layers``), partners and λ."""
    check_int("n", n, 1)
    if not layers:
        raise ValueError("layers must name at least one layer, got none")
    k = int(torch.randint(0, len(layers), (1,), generator=generator))
    partner = sample_partner(n, generator)
    lams = sample_lam(n, alpha=alpha, lam=lam, per_sample=per_sample, generator=generator)
    return ManifoldMixupParams(layer=layers[k], lam=lams, partner=partner)


def apply_manifold_mixup(
    model: nn.Module, x: Tensor, y: Tensor, params: ManifoldMixupParams
) -> MixResult:
    """Mix the inputs (layer "input") or arm the hook on ``model``; targets mixed with λ."""
    check_targets("y", y, x.shape[0])
    if params.layer == INPUT:
        res = apply_mixup(x, y, MixupParams(lam=params.lam, partner=params.partner))
        return res.with_(info={"layer": INPUT})
    hidden = HiddenMix(model, params.layer, params.lam, params.partner)
    partner = params.partner.to(y.device)
    return MixResult(
        x=x,
        y=mix_targets(y, partner, params.lam.to(y.device)),
        lam=params.lam,
        partner=params.partner,
        lam_x=params.lam,
        info={"layer": params.layer, "hidden": hidden},
    )


@MIXERS.register(
    "manifold_mixup",
    title="Manifold Mixup",
    paper="https://arxiv.org/abs/1806.05236",
    params=(Hyper("alpha", "float", 2.0, 0.05, 4.0, 0.05, help="Beta(α, α) for λ"),),
    tags=("hidden", "model"),
)
def manifold_mixup(
    x: Tensor,
    y: Tensor,
    *,
    alpha: float = 2.0,
    lam: float | None = None,
    per_sample: bool = False,
    model: nn.Module | None = None,
    layers: list[str] | tuple[str, ...] | None = None,
    generator: torch.Generator,
) -> MixResult:
    """Mix at a random layer of ``model`` (required) among ``layers`` (default all)."""
    if model is None:
        raise ValueError("model is required for manifold_mixup (the hidden layers are its own)")
    allowed = mix_layers(model)
    layers = list(layers) if layers is not None else allowed
    bad = [name for name in layers if name not in allowed]
    if bad:
        raise ValueError(f"layers must be among {allowed}, got {bad}")
    params = sample_manifold_mixup(
        len(x), layers, alpha=alpha, lam=lam, per_sample=per_sample, generator=generator
    )
    return apply_manifold_mixup(model, x, y, params)
