"""Declarative permutation specs for the zoo's architectures (Ainsworth et al., Git Re-Basin,
arXiv 2209.04836, ``PermutationSpec``).

A spec says, for every state-dict tensor, which permutation acts on each of its axes. Hidden
units can be reordered without changing the function as long as every tensor touching a layer's
units is reordered with the same permutation: the layer's output rows (weight axis 0, bias,
BatchNorm weight/bias/running statistics) and the next layer's input columns (weight axis 1).

Residual networks tie permutations together: every block of a ResNet stage adds its output to
the same residual stream, so the stem (stage 1), the second conv + BN of every block and the
projection shortcut all share one permutation per stage (``P_stage{s}``); only the unit between
the two convs of a block (``P_layer{s}.{b}.inner``) is free.

Permutation convention: ``perm[p]`` is an index vector; permuting puts unit ``perm[p][i]`` of
the old tensor at position ``i`` of the new one (``index_select(axis, perm[p])``) on every axis
that ``p`` acts on.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from torch import Tensor, nn

Axes = tuple[str | None, ...]  # one permutation name (or None) per tensor axis


@dataclass(frozen=True)
class PermutationSpec:
    """Which permutation acts on which axis of which tensor.

    Attributes:
        axes_to_perm: state-dict key -> one permutation name (or None) per axis; keys not listed
            (e.g. ``num_batches_tracked``) are never permuted.
        perm_to_axes: permutation name -> ((key, axis), ...) that it acts on (derived).
        sizes: permutation name -> number of units it permutes.
        activations: permutation name -> names of modules whose outputs carry that permutation
            on dimension 1 (used by activation matching; outputs are taken before ReLU).
    """

    axes_to_perm: dict[str, Axes]
    sizes: dict[str, int]
    activations: dict[str, tuple[str, ...]] = field(default_factory=dict)
    perm_to_axes: dict[str, tuple[tuple[str, int], ...]] = field(init=False)

    def __post_init__(self) -> None:
        p2a: dict[str, list[tuple[str, int]]] = {p: [] for p in self.sizes}
        for key, axes in self.axes_to_perm.items():
            for axis, p in enumerate(axes):
                if p is None:
                    continue
                if p not in p2a:
                    raise ValueError(f"axes_to_perm[{key!r}] names {p!r}, not in sizes")
                p2a[p].append((key, axis))
        empty = [p for p, ax in p2a.items() if not ax]
        if empty:
            raise ValueError(f"permutations {empty} act on no tensor")
        missing = [p for p in self.activations if p not in self.sizes]
        if missing:
            raise ValueError(f"activations names unknown permutations {missing}")
        object.__setattr__(self, "perm_to_axes", {p: tuple(v) for p, v in p2a.items()})

    @property
    def names(self) -> list[str]:
        """Permutation names, in a fixed order."""
        return list(self.sizes)

    def check(self, sd: Mapping[str, Tensor], name: str = "sd") -> None:
        """Raise ValueError when ``sd`` lacks a key of the spec or a permuted axis has the
        wrong length."""
        for key, axes in self.axes_to_perm.items():
            if key not in sd:
                raise ValueError(f"{name} lacks key {key!r} required by the permutation spec")
            t = sd[key]
            if t.ndim != len(axes):
                raise ValueError(
                    f"{name}[{key!r}] must have {len(axes)} dimensions, got shape {tuple(t.shape)}"
                )
            for axis, p in enumerate(axes):
                if p is not None and t.shape[axis] != self.sizes[p]:
                    raise ValueError(
                        f"{name}[{key!r}] axis {axis} must have {self.sizes[p]} units for "
                        f"permutation {p!r}, got {t.shape[axis]}"
                    )


# --------------------------------------------------------------------------- builders
def _head_axes(sd: Mapping[str, Tensor], last: str) -> dict[str, Axes]:
    """The classifier head(s): outputs fixed, inputs carry the last hidden permutation."""
    axes: dict[str, Axes] = {}
    for key in sd:
        if re.fullmatch(r"(head|heads\.\d+)\.weight", key):
            axes[key] = (None, last)
        elif re.fullmatch(r"(head|heads\.\d+)\.bias", key):
            axes[key] = (None,)
    if not axes:
        raise ValueError("state dict has no 'head.*' or 'heads.<i>.*' keys")
    return axes


def _bn_axes(prefix: str, p: str) -> dict[str, Axes]:
    return {f"{prefix}.{s}": (p,) for s in ("weight", "bias", "running_mean", "running_var")}


def mlp_spec(sd: Mapping[str, Tensor]) -> PermutationSpec:
    """Spec of ``core.models`` MLP: ``trunk.fc{i}`` has units permuted by ``P_fc{i}``."""
    depth = len([k for k in sd if re.fullmatch(r"trunk\.fc\d+\.weight", k)])
    if depth == 0:
        raise ValueError("state dict has no 'trunk.fc<i>.weight' keys: not an mlp")
    axes: dict[str, Axes] = {}
    sizes: dict[str, int] = {}
    acts: dict[str, tuple[str, ...]] = {}
    prev: str | None = None
    for i in range(depth):
        p = f"P_fc{i}"
        sizes[p] = int(sd[f"trunk.fc{i}.weight"].shape[0])
        axes[f"trunk.fc{i}.weight"] = (p, prev)
        axes[f"trunk.fc{i}.bias"] = (p,)
        acts[p] = (f"trunk.fc{i}",)
        prev = p
    assert prev is not None
    axes.update(_head_axes(sd, prev))
    return PermutationSpec(axes, sizes, acts)


def cnn_spec(sd: Mapping[str, Tensor]) -> PermutationSpec:
    """Spec of ``core.models`` CNN: conv{i} (no bias) + bn{i} share ``P_conv{i}``; global
    average pooling keeps channel order, so the head's inputs carry the last one."""
    n = len([k for k in sd if re.fullmatch(r"trunk\.conv\d+\.weight", k)])
    if n == 0:
        raise ValueError("state dict has no 'trunk.conv<i>.weight' keys: not a cnn")
    axes: dict[str, Axes] = {}
    sizes: dict[str, int] = {}
    acts: dict[str, tuple[str, ...]] = {}
    prev: str | None = None
    for i in range(n):
        p = f"P_conv{i}"
        sizes[p] = int(sd[f"trunk.conv{i}.weight"].shape[0])
        axes[f"trunk.conv{i}.weight"] = (p, prev, None, None)
        axes.update(_bn_axes(f"trunk.bn{i}", p))
        acts[p] = (f"trunk.bn{i}",)
        prev = p
    assert prev is not None
    axes.update(_head_axes(sd, prev))
    return PermutationSpec(axes, sizes, acts)


def resnet_spec(sd: Mapping[str, Tensor]) -> PermutationSpec:
    """Spec of ``core.models`` ResNet-20: one permutation per residual stream (stage) shared by
    the stem, every block's conv2/bn2 and the projection shortcut; one free permutation inside
    each block (conv1/bn1 outputs, conv2 inputs)."""
    blocks = sorted(
        {
            (int(m.group(1)), int(m.group(2)))
            for k in sd
            if (m := re.fullmatch(r"trunk\.layer(\d+)\.(\d+)\.conv1\.weight", k))
        }
    )
    if "trunk.conv0.weight" not in sd or not blocks:
        raise ValueError("state dict has no 'trunk.conv0' / 'trunk.layer<s>.<b>.conv1' keys")
    axes: dict[str, Axes] = {}
    sizes: dict[str, int] = {}
    acts: dict[str, list[str]] = {}
    stream = "P_stage1"
    sizes[stream] = int(sd["trunk.conv0.weight"].shape[0])
    axes["trunk.conv0.weight"] = (stream, None, None, None)
    axes.update(_bn_axes("trunk.bn0", stream))
    acts[stream] = ["trunk.bn0"]
    for s, b in blocks:
        pre = f"trunk.layer{s}.{b}"
        prev_stream = stream
        stream = f"P_stage{s}"
        inner = f"P_layer{s}.{b}.inner"
        sizes[inner] = int(sd[f"{pre}.conv1.weight"].shape[0])
        sizes.setdefault(stream, int(sd[f"{pre}.conv2.weight"].shape[0]))
        axes[f"{pre}.conv1.weight"] = (inner, prev_stream, None, None)
        axes.update(_bn_axes(f"{pre}.bn1", inner))
        axes[f"{pre}.conv2.weight"] = (stream, inner, None, None)
        axes.update(_bn_axes(f"{pre}.bn2", stream))
        acts[inner] = [f"{pre}.bn1"]
        acts.setdefault(stream, []).append(f"{pre}.bn2")
        if f"{pre}.shortcut.conv.weight" in sd:
            axes[f"{pre}.shortcut.conv.weight"] = (stream, prev_stream, None, None)
            axes.update(_bn_axes(f"{pre}.shortcut.bn", stream))
            acts[stream].append(f"{pre}.shortcut.bn")
        elif prev_stream != stream:
            raise ValueError(f"{pre} changes stage without a projection shortcut")
    axes.update(_head_axes(sd, stream))
    return PermutationSpec(axes, sizes, {p: tuple(v) for p, v in acts.items()})


_BUILDERS = {"mlp": mlp_spec, "cnn": cnn_spec, "resnet20": resnet_spec}


def spec_for(model: nn.Module) -> PermutationSpec:
    """The permutation spec of a ``core.models`` classifier (mlp, cnn or resnet20).

    Args:
        model: a model built by ``core.models.create_model`` (its ``spec.name`` picks the
            builder; sizes come from its state dict).

    Raises:
        TypeError: ``model`` is not an ``nn.Module``.
        ValueError: the architecture has no permutation spec.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    arch = getattr(getattr(model, "spec", None), "name", None)
    if arch not in _BUILDERS:
        raise ValueError(
            f"model architecture must be one of {sorted(_BUILDERS)}, got {arch!r} "
            "(build models with core.models.create_model)"
        )
    sd = model.state_dict()
    spec = _BUILDERS[arch](sd)
    spec.check(sd, "model.state_dict()")
    return spec
