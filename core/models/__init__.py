"""Model registry: ``create_model(name, **kw)`` builds ``mlp``, ``cnn`` or ``resnet20``.

Every model is a :class:`Classifier`: a ``trunk`` that maps inputs to penultimate features and
a linear ``head`` (or ``heads.<i>`` for several task heads over one shared trunk).
``penultimate_features(model, x)`` returns the trunk output without changing the model.

State-dict key names (the alignment code relies on them):

* mlp:      ``trunk.fc{i}.weight/bias`` for i = 0..depth-1, then ``head.weight/bias``
* cnn:      ``trunk.conv{i}.weight``, ``trunk.bn{i}.{weight,bias,running_mean,running_var,
            num_batches_tracked}`` for i = 0..2, then ``head.*``
* resnet20: ``trunk.conv0``/``trunk.bn0``, ``trunk.layer{s}.{b}.conv{1,2}``, ``.bn{1,2}``,
            ``.shortcut.conv``/``.shortcut.bn`` (first block of stages 2 and 3), then ``head.*``
* efficientnet_lite0: ``trunk.stem``/``trunk.stem_bn``, ``trunk.blocks.{i}.{expand,bn0,dw,bn1,
            project,bn2}`` (i = 0..15; block 0 has no expand), ``trunk.head_conv``/``trunk.head_bn``,
            then ``head.*``; the 1x1 convs (expand, project, head_conv) hold an ``nn.Linear``
            as ``.linear`` (see ``efficientnet_lite``)
* moe:      ``trunk.embed``, ``trunk.moe{i}.router``, ``trunk.moe{i}.experts.{e}.fc{1,2}``,
            ``trunk.moe{i}.slot_of`` (see ``moe``), then ``head.*``
* minilm:   ``trunk.encoder.<transformers BertModel name>``, then ``head.*``

The two pretrained backbones (``efficientnet_lite0``, ``minilm``) load their shipped weights
when ``pretrained=True`` (the default); the zoo stores them with ``pretrained=False`` so that
rebuilding a stored model does not read the weights twice.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from .._registry import Hyper, Registry
from ._weights import WeightsUnavailable
from .classifier import Classifier
from .cnn import build_cnn
from .efficientnet_lite import build_efficientnet_lite0
from .external import EXTERNAL
from .minilm import build_minilm
from .mlp import build_mlp
from .moe import build_moe
from .resnet import build_resnet20
from .vit import build_vit

ARCHITECTURES: Registry[Callable[..., Classifier]] = Registry("architecture")

_COMMON = (
    Hyper("n_classes", "int", 10, 2, 1000, 1, help="outputs per head"),
    Hyper("in_channels", "int", 1, 1, 4, 1, help="input channels"),
    Hyper("image_size", "int", 28, 8, 256, 1, help="input side in pixels"),
    Hyper("n_heads", "int", 1, 1, 16, 1, help="task heads over one shared trunk"),
)

ARCHITECTURES.register(
    "mlp",
    title="MLP",
    paper="",
    params=(
        Hyper("width", "int", 512, 16, 2048, 16, help="hidden units per layer"),
        Hyper("depth", "int", 3, 1, 8, 1, help="hidden layers"),
        *_COMMON,
    ),
)(build_mlp)
ARCHITECTURES.register(
    "cnn",
    title="CNN (3 conv + BatchNorm)",
    params=(
        Hyper("width", "int", 16, 4, 256, 4, help="channels of the first conv layer"),
        *_COMMON,
    ),
)(build_cnn)
ARCHITECTURES.register(
    "resnet20",
    title="ResNet-20 (CIFAR-style)",
    paper="https://arxiv.org/abs/1512.03385",
    params=(
        Hyper("width", "int", 8, 4, 128, 4, help="channels of the first stage (x1, x2, x4)"),
        *_COMMON,
    ),
)(build_resnet20)
ARCHITECTURES.register(
    "vit",
    title="ViT (small, patch tokens + CLS)",
    paper="https://arxiv.org/abs/2010.11929",
    params=(
        Hyper("width", "int", 64, 16, 512, 16, help="token dimension"),
        Hyper("depth", "int", 3, 1, 12, 1, help="transformer blocks"),
        Hyper("heads", "int", 4, 1, 16, 1, help="attention heads (must divide width)"),
        Hyper("patch_size", "int", 4, 1, 16, 1, help="patch side (must divide image_size)"),
        *_COMMON,
    ),
)(build_vit)
ARCHITECTURES.register(
    "moe",
    title="Sparse MoE MLP (top-k routed experts)",
    paper="https://arxiv.org/abs/2101.03961",
    params=(
        Hyper("width", "int", 64, 16, 1024, 16, help="embedding / residual width"),
        Hyper("depth", "int", 1, 1, 4, 1, help="residual MoE blocks"),
        Hyper("n_experts", "int", 8, 1, 64, 1, help="router entries (experts) per block"),
        Hyper("top_k", "int", 2, 1, 8, 1, help="experts chosen per input"),
        Hyper("expert_width", "int", 64, 8, 1024, 8, help="hidden units of each expert"),
        Hyper("n_slots", "int", 0, 0, 64, 1, help="stored experts per block (0: one per entry)"),
        *_COMMON,
    ),
)(build_moe)
# Pretrained backbones live in their own registry: pages that train architectures from scratch
# list ARCHITECTURES (whose entries all have a ``width``); create_model builds from both.
BACKBONES: Registry[Callable[..., Classifier]] = Registry("pretrained backbone")
_PRETRAINED = Hyper("pretrained", "bool", True, help="load the shipped pretrained weights")
BACKBONES.register(
    "efficientnet_lite0",
    title="EfficientNet-Lite0 (ImageNet-1k)",
    paper="https://arxiv.org/abs/1905.11946",
    params=(
        Hyper("n_classes", "int", 1000, 2, 1000, 1, help="outputs of the head (1000: ImageNet)"),
        _PRETRAINED,
        Hyper("freeze_bn", "bool", True, help="keep the ImageNet BatchNorm statistics in training"),
        Hyper("normalize_features", "bool", False, help="unit-L2-norm pooled features"),
    ),
)(build_efficientnet_lite0)
BACKBONES.register(
    "minilm",
    title="all-MiniLM-L6-v2 (sentence embeddings)",
    paper="https://arxiv.org/abs/2002.10957",
    params=(Hyper("n_classes", "int", 2, 2, 1000, 1, help="outputs of the head"), _PRETRAINED),
)(build_minilm)


def architecture_entry(name: str) -> Any:
    """The registry entry of ``name`` among ARCHITECTURES and BACKBONES.

    Raises:
        ValueError: unknown name (the message lists every known one).
    """
    if isinstance(name, str) and name in BACKBONES:
        return BACKBONES[name]
    if isinstance(name, str) and name in ARCHITECTURES:
        return ARCHITECTURES[name]
    if isinstance(name, str) and name in EXTERNAL:
        return EXTERNAL[name]
    raise ValueError(
        f"unknown architecture {name!r}; expected one of "
        f"{sorted([*ARCHITECTURES.names(), *BACKBONES.names()])}"
    )


@dataclass(frozen=True)
class ModelSpec:
    """Architecture name + keyword arguments: enough to rebuild a model from a state dict."""

    name: str
    kwargs: dict[str, Any]


def create_model(name: str, *, seed: int | None = 0, **kw: Any) -> Classifier:
    """Build a registered architecture.

    Args:
        name: "mlp", "cnn", "resnet20", "efficientnet_lite0" or "minilm".
        seed: seeds the weight initialisation in a forked RNG (the global RNG is left as it
            was); None uses the global RNG.
        **kw: architecture keyword arguments (see ``ARCHITECTURES[name].params``).

    Raises:
        ValueError: unknown name or keyword, or a value out of range.
    """
    entry = architecture_entry(name)
    allowed = {p.name: p for p in entry.params}
    unknown = sorted(set(kw) - set(allowed))
    if unknown:
        raise ValueError(
            f"unknown argument(s) {unknown} for architecture {name!r}; expected {sorted(allowed)}"
        )
    for k, v in kw.items():
        p = allowed[k]
        if p.kind == "int" and (isinstance(v, bool) or not isinstance(v, int)):
            raise TypeError(f"{k} must be an int, got {type(v).__name__} {v!r}")
        if p.kind == "bool" and not isinstance(v, bool):
            raise TypeError(f"{k} must be a bool, got {type(v).__name__} {v!r}")
        if p.low is not None and p.high is not None and not p.low <= v <= p.high:
            raise ValueError(f"{k} must be in [{p.low}, {p.high}], got {v!r}")
    if seed is None:
        model = entry.fn(**kw)
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed))
            model = entry.fn(**kw)
    model.spec = ModelSpec(name, {**entry.defaults(), **kw})
    return model


def penultimate_features(model: nn.Module, x: Tensor) -> Tensor:
    """Penultimate-layer features (the trunk output), computed without changing the model.

    Returns:
        (N, D) features.
    """
    if not isinstance(model, Classifier):
        raise TypeError(f"model must be a core.models.Classifier, got {type(model).__name__}")
    return model.features(x)


__all__ = [
    "ARCHITECTURES",
    "BACKBONES",
    "Classifier",
    "ModelSpec",
    "WeightsUnavailable",
    "architecture_entry",
    "create_model",
    "penultimate_features",
]
