"""Shared machinery: evaluation data (a fixed, reported subset by default), a private copy of
the network whose tensors are overwritten in place at every point, and BatchNorm resets.

One private copy per call, never one state dict per point: every point writes its weights into
the copy's own tensors (``torch.lerp(..., out=)``) and runs plain batched forward passes under
``torch.inference_mode``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._checks import check_int
from ..data import Dataset, stratified_subset
from ..device import configure_threads, resolve_device
from ..params import StateDict, check_compatible

ProgressFn = Callable[[int, int], None]  # (done, total)
SUBSET_SEED = 0  # the fixed evaluation subset is drawn with this seed (reported in results)


@dataclass(frozen=True)
class EvalData:
    """Evaluation splits on the evaluation device.

    Attributes:
        splits: split name -> ((n, ...) inputs, (n,) labels), subset already taken.
        n_examples: split name -> examples used.
        n_total: split name -> examples available.
        bn_x: (m, ...) training inputs for BatchNorm resets.
    """

    splits: dict[str, tuple[Tensor, Tensor]]
    n_examples: dict[str, int]
    n_total: dict[str, int]
    bn_x: Tensor

    @property
    def exact(self) -> bool:
        """True when every split is evaluated in full."""
        return self.n_examples == self.n_total


def _subset(y: Tensor, k: int | None) -> Tensor | None:
    """Fixed, sorted, stratified subset of ``k`` of the labels ``y`` (None: all)."""
    if k is None or k >= len(y):
        return None
    return stratified_subset(y, k, random_state=SUBSET_SEED)


def prepare_data(
    data: Dataset | Mapping[str, tuple[Tensor, Tensor]],
    *,
    max_examples: int | None,
    bn_examples: int = 2000,
    device: torch.device,
) -> EvalData:
    """Turn a Dataset (splits "train" and "test") or a mapping of splits into :class:`EvalData`.

    Args:
        data: a ``core.data.Dataset`` or split name -> (x, y).
        max_examples: examples per split (a fixed seeded subset); None for the full data.
        bn_examples: training examples for BatchNorm resets (from "train", else the first split).
        device: evaluation device.
    """
    if isinstance(data, Dataset):
        raw = {"train": (data.x_train, data.y_train), "test": (data.x_test, data.y_test)}
    elif isinstance(data, Mapping):
        raw = dict(data)
    else:
        raise TypeError(
            f"data must be a core.data.Dataset or a mapping of split -> (x, y), got {type(data).__name__}"
        )
    if not raw:
        raise ValueError("data must hold at least one split, got none")
    if max_examples is not None:
        check_int("max_examples", max_examples, 1)
    check_int("bn_examples", bn_examples, 1)
    splits: dict[str, tuple[Tensor, Tensor]] = {}
    n_used: dict[str, int] = {}
    n_total: dict[str, int] = {}
    for name, xy in raw.items():
        if not (isinstance(xy, tuple | list) and len(xy) == 2):
            raise TypeError(f"data[{name!r}] must be an (x, y) pair, got {type(xy).__name__}")
        x, y = xy
        if not isinstance(x, Tensor) or not x.is_floating_point() or x.ndim < 2:
            raise TypeError(
                f"data[{name!r}] x must be a floating (N, ...) Tensor, got {type(x).__name__}"
            )
        if not isinstance(y, Tensor) or y.ndim != 1 or y.dtype not in (torch.int64, torch.int32):
            raise TypeError(f"data[{name!r}] y must be a 1-D integer Tensor")
        if len(x) != len(y) or len(x) == 0:
            raise ValueError(
                f"data[{name!r}] must have equal, non-zero lengths, got {len(x)} and {len(y)}"
            )
        idx = _subset(y, max_examples)
        if idx is not None:
            x, y = x[idx], y[idx]
        splits[name] = (x.to(device), y.long().to(device))
        n_used[name], n_total[name] = len(x), len(xy[0])
    bn_src, bn_y = raw["train"] if "train" in raw else next(iter(raw.values()))
    idx = _subset(bn_y, bn_examples)
    bn_x = (bn_src if idx is None else bn_src[idx]).to(device)
    return EvalData(splits, n_used, n_total, bn_x)


def _bn_modules(net: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def has_batchnorm(model: nn.Module) -> bool:
    """True when ``model`` has BatchNorm layers (whose running statistics need a reset)."""
    return bool(_bn_modules(model))


@torch.no_grad()
def reset_batchnorm(net: nn.Module, x: Tensor, *, batch_size: int = 500) -> None:
    """Recompute every BatchNorm layer's running statistics of ``net`` (in place) from ``x``:
    statistics reset, cumulative averaging (``momentum=None``), one pass in train mode.
    The caller's momentum and train/eval mode are restored."""
    bns = _bn_modules(net)
    if not bns:
        return
    was_training = net.training
    momenta = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    net.train()
    try:
        for xb in x.split(batch_size):
            net(xb)
    finally:
        for m, mom in zip(bns, momenta, strict=True):
            m.momentum = mom
        net.train(was_training)


class PrivateNet:
    """A private eval-mode copy of ``model`` whose tensors are overwritten at every point.

    Args:
        model: the architecture (never modified).
        like: a state dict to start from (its keys define the model's tensors).
        device: evaluation device.
    """

    def __init__(self, model: nn.Module, like: Mapping[str, Tensor], device: torch.device):
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
        configure_threads()
        net = copy.deepcopy(model).to(device).eval()
        for p in net.parameters():
            p.requires_grad_(False)
        net.load_state_dict(like)
        self.net = net
        self.device = device
        self.tensors: StateDict = net.state_dict()  # live views of the copy's tensors
        self.float_keys = [k for k, v in self.tensors.items() if v.is_floating_point()]
        self.var_keys = [k for k in self.float_keys if k.endswith("running_var")]
        self.has_bn = has_batchnorm(net)

    @torch.no_grad()
    def write(self, fn: Callable[[str, Tensor], object]) -> None:
        """Call ``fn(key, live_tensor)`` for every floating tensor; ``fn`` writes in place."""
        for k in self.float_keys:
            fn(k, self.tensors[k])
        for k in self.var_keys:  # affine combinations outside [0, 1] can make variances < 0
            self.tensors[k].clamp_(min=0.0)

    @torch.no_grad()
    def evaluate(
        self, data: EvalData, *, recompute_bn: bool, batch_size: int, head: int = 0
    ) -> dict[str, tuple[float, float]]:
        """(mean loss, accuracy) per split of the current weights."""
        if recompute_bn and self.has_bn:
            reset_batchnorm(self.net, data.bn_x, batch_size=min(batch_size, 500))
        out: dict[str, tuple[float, float]] = {}
        kw: dict[str, Any] = {"head": head} if head else {}
        with torch.inference_mode():
            for name, (x, y) in data.splits.items():
                loss = torch.zeros((), device=self.device)
                correct = torch.zeros((), dtype=torch.int64, device=self.device)
                for xb, yb in zip(x.split(batch_size), y.split(batch_size), strict=True):
                    logits = self.net(xb, **kw)  # (B, C)
                    loss += F.cross_entropy(logits, yb, reduction="sum")
                    correct += (logits.argmax(1) == yb).sum()
                out[name] = (float(loss) / len(y), int(correct) / len(y))
        return out


def float_state(
    sds: list[Mapping[str, Tensor]], names: list[str], device: torch.device
) -> list[StateDict]:
    """Check compatibility and move the floating tensors of each state dict to ``device``."""
    check_compatible(sds, names)
    return [
        {k: v.detach().to(device, torch.float32) for k, v in sd.items() if v.is_floating_point()}
        for sd in sds
    ]


def device_of(device: str | torch.device) -> torch.device:
    return resolve_device(device)
