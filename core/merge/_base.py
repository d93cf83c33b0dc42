"""The merge-method registries and the checks every method shares.

``METHODS`` maps a method name to a state-dict function
``fn(models, *, base, generator, **hyper) -> StateDict`` that returns the merged floating-point
tensors; :func:`core.merge.merge` validates the inputs and fills in integer buffers.
Each entry (:class:`MethodEntry`) carries every per-method fact:

* ``tensor`` — for methods tagged ``per_tensor``, a pure function
  ``fn(tensors, base, *, generator=None, **hyper) -> Tensor`` over the tensors of one key, so a
  streaming engine can merge checkpoints key by key with bounded memory (a ``base`` of None
  means a zero base: the tensors are then task vectors and the result is the merged task
  vector). ``TENSOR_METHODS`` is a read-only view name -> kernel over the registry;
* ``prepare`` — for methods tagged ``data_dependent``, ``prepare(modules, data) -> dict`` that
  computes the method's data-derived arguments from a :class:`MergeData` (what the Merge Lab
  calls, so a new data-dependent method needs no code outside its own file); ``prepare_keys``
  names the hyperparameters those arguments depend on (Localize-and-Stitch's masks depend on
  ``density``);
* the tag ``scale_linear`` — the result is θ₀ + λ·f(τ; other hyperparameters), so a move of
  the λ (``scale``) slider alone may rescale a cached merged task vector;
* ``mergekit`` — the mergekit ``merge_method`` names the method runs (``linear`` → ``average``,
  ``dare_linear`` → ``dare``), read by the streaming CLI's config (core/stream/config.py).

The hyperparameter defaults are the registered function's keyword defaults; the ``Hyper``
metadata repeats them for the sliders and tests/merge/test_merge.py checks that the two agree.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from .._registry import Entry, Registry
from ..params import StateDict

MergeFn = Callable[..., StateDict]


# A per-tensor merge: fn(tensors, base, *, generator=None, **hyper) -> merged tensor.
TensorFn = Callable[..., Tensor]

# modules(sd) -> a fresh module of the architecture in eval mode, carrying sd's tensors (its
# own initial ones for None).
ModuleFactory = Callable[[Mapping[str, Tensor] | None], torch.nn.Module]


@dataclass(frozen=True, eq=False)
class MergeData:
    """What a data-dependent method's ``prepare(modules, data)`` hook may draw on.

    Built by the caller (:class:`core.merge_eval.MergeLab`); every field that costs something
    is a function, called only by the hooks that need it.

    Attributes:
        models: the source state dicts, (N,).
        base: the pre-trained state dict, or None.
        names: a display name per model (progress messages).
        train: ``train(i) -> (x, y)``: labelled training examples of model i's task.
        unlabeled: ``unlabeled() -> [x_t]``: unlabeled inputs of every evaluated task
            (AdaMerging's test-time adaptation data).
        evaluate: ``evaluate(sd) -> float``: held-out score of a merged model (greedy soup).
        hyperparameters: the slider values with the method's defaults filled in.
        progress: ``progress(done, total, message)``.
    """

    models: Sequence[StateDict]
    base: StateDict | None
    names: Sequence[str]
    train: Callable[[int], tuple[Tensor, Tensor]]
    unlabeled: Callable[[], list[Tensor]]
    evaluate: Callable[[Mapping[str, Tensor]], float]
    hyperparameters: Mapping[str, Any] = field(default_factory=dict)
    progress: Callable[[int, int, str], None] = lambda done, total, message: None


# prepare(modules, data) -> the method's data-derived keyword arguments
PrepareFn = Callable[[ModuleFactory, MergeData], dict[str, Any]]


@dataclass(frozen=True)
class MethodEntry(Entry[MergeFn]):
    """A merge method's registry entry: function, paper, hyperparameters, tags, and

    Attributes:
        tensor: the per-tensor kernel (methods tagged ``per_tensor``), or None.
        prepare: ``prepare(modules, data) -> dict`` computing the data-derived arguments
            (methods tagged ``data_dependent``), or None.
        prepare_keys: hyperparameters the prepared arguments depend on (part of their cache
            key), e.g. ``("density",)``.
    """

    tensor: TensorFn | None = None
    prepare: PrepareFn | None = None
    prepare_keys: tuple[str, ...] = ()
    mergekit: tuple[str, ...] = ()  # the mergekit merge_method names this method runs

    def __post_init__(self) -> None:
        if not isinstance(self.mergekit, tuple) or not all(
            isinstance(x, str) and x for x in self.mergekit
        ):
            raise ValueError(
                f"merge method {self.name!r}: mergekit must be a tuple of non-empty names, "
                f"got {self.mergekit!r}"
            )
        if self.tensor is not None and "per_tensor" not in self.tags:
            raise ValueError(
                f"merge method {self.name!r} has a tensor kernel but no per_tensor tag"
            )
        if self.prepare is not None and "data_dependent" not in self.tags:
            raise ValueError(
                f"merge method {self.name!r} has a prepare hook but no data_dependent tag"
            )
        unknown = sorted(set(self.prepare_keys) - {p.name for p in self.params})
        if unknown:
            raise ValueError(
                f"merge method {self.name!r}: prepare_keys {unknown} are not hyperparameters"
            )


class _TensorMethods(Mapping[str, TensorFn]):
    """Read-only view name -> per-tensor kernel of every entry that has one."""

    def __init__(self, registry: Registry[MergeFn]) -> None:
        self._registry = registry

    def _kernels(self) -> dict[str, TensorFn]:
        out: dict[str, TensorFn] = {}
        for e in self._registry.entries():
            fn = getattr(e, "tensor", None)
            if fn is not None:
                out[e.name] = fn
        return out

    def __getitem__(self, name: str) -> TensorFn:
        fn = getattr(self._registry[name], "tensor", None) if name in self._registry else None
        if fn is None:
            raise KeyError(
                f"merge method {name!r} has no per-tensor kernel; expected one of "
                f"{sorted(self._kernels())}"
            )
        return fn

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str) or name not in self._registry:
            return False
        return getattr(self._registry[name], "tensor", None) is not None

    def __iter__(self) -> Iterator[str]:
        return iter(self._kernels())

    def __len__(self) -> int:
        return len(self._kernels())


METHODS: Registry[MergeFn] = Registry("merge method", entry=MethodEntry)
TENSOR_METHODS: Mapping[str, TensorFn] = _TensorMethods(METHODS)

# Elements processed at once by the chunked per-tensor kernels (fixed so that random draws
# do not depend on anything but the generator's state).
CHUNK = 1 << 20

TAGS = frozenset(
    {"needs_base", "per_tensor", "data_dependent", "two_models", "per_task", "scale_linear"}
)


def method_entry(name: str) -> MethodEntry:
    """The registry entry of merge method ``name`` (typed: tensor kernel, prepare hook)."""
    entry = METHODS[name]
    assert isinstance(entry, MethodEntry)
    return entry


def check_tensors(tensors: Sequence[Tensor], base: Tensor | None) -> list[Tensor]:
    """Check the per-tensor inputs: a non-empty list of floating tensors of one shape."""
    if isinstance(tensors, Tensor) or not isinstance(tensors, Sequence):
        raise TypeError(f"tensors must be a list of tensors, got {type(tensors).__name__}")
    if len(tensors) == 0:
        raise ValueError("tensors must hold at least one tensor, got 0")
    ref = tensors[0]
    for i, t in enumerate(tensors):
        if not isinstance(t, Tensor):
            raise TypeError(f"tensors[{i}] must be a Tensor, got {type(t).__name__}")
        if not t.is_floating_point():
            raise TypeError(f"tensors[{i}] must be floating point, got dtype {t.dtype}")
        if t.shape != ref.shape:
            raise ValueError(
                f"tensors[{i}] has shape {tuple(t.shape)}, expected {tuple(ref.shape)}"
            )
    if base is not None:
        if not isinstance(base, Tensor):
            raise TypeError(f"base must be a Tensor or None, got {type(base).__name__}")
        if base.shape != ref.shape:
            raise ValueError(f"base has shape {tuple(base.shape)}, expected {tuple(ref.shape)}")
    return list(tensors)


def check_weights(weights: Sequence[float] | None, n: int) -> list[float]:
    """Per-model weights: None -> all ones; otherwise n finite numbers."""
    if weights is None:
        return [1.0] * n
    if isinstance(weights, Tensor):
        weights = weights.tolist()
    if isinstance(weights, str) or not isinstance(weights, Sequence):
        raise TypeError(f"weights must be a list of numbers, got {type(weights).__name__}")
    if len(weights) != n:
        raise ValueError(f"weights must have one entry per model ({n}), got {len(weights)}")
    out = []
    for i, w in enumerate(weights):
        if isinstance(w, bool) or not isinstance(w, int | float):
            raise TypeError(f"weights[{i}] must be a number, got {type(w).__name__} {w!r}")
        if not math.isfinite(w):
            raise ValueError(f"weights[{i}] must be finite, got {w!r}")
        out.append(float(w))
    return out


def compute_dtype(t: Tensor) -> torch.dtype:
    """Half-precision tensors are merged in float32; float32/float64 as they are."""
    return torch.float32 if t.dtype in (torch.float16, torch.bfloat16) else t.dtype


def chunks(n: int, size: int = CHUNK) -> list[slice]:
    """Consecutive slices covering range(n)."""
    return [slice(i, min(i + size, n)) for i in range(0, n, size)]


def apply_per_tensor(
    fn: TensorFn,
    models: Sequence[StateDict],
    base: StateDict | None,
    *,
    generator: torch.Generator | None = None,
    **hyper: Any,
) -> StateDict:
    """Run a per-tensor merge over every floating-point key (in the first model's order)."""
    out: StateDict = {}
    for k, v in models[0].items():
        if v.is_floating_point():
            b = None if base is None else base[k]
            out[k] = fn([m[k] for m in models], b, generator=generator, **hyper)
    return out


def first_nonfinite(tensors: Sequence[Tensor]) -> int | None:
    """Index of the first tensor holding NaN or Inf, or None when all are finite.

    Fast and exact: one sum per tensor (NaN and Inf propagate into it; a finite tensor's sum
    is finite unless it overflows its dtype) and one device synchronisation for all of them;
    only a tensor whose sum is not finite is checked entry by entry. On a CPU the sum runs at
    memory speed, ~15x faster than ``torch.isfinite(t).all()``.
    """
    floats = [(i, t) for i, t in enumerate(tensors) if t.is_floating_point() and t.numel()]
    if not floats:
        return None
    sums = torch.stack([t.sum().to(torch.float64) for _, t in floats])
    if bool(torch.isfinite(sums).all()):
        return None
    for (i, t), ok in zip(floats, torch.isfinite(sums).tolist(), strict=True):
        if not ok and not bool(torch.isfinite(t).all()):
            return i
    return None


def check_merged_finite(key: str, t: Tensor, *, hint: str) -> None:
    """Refuse a merged tensor holding NaN/Inf. Merges check that their inputs are finite, so
    such values mean the result overflowed its dtype (float16 sums beyond ±65504 become inf).

    Raises:
        ValueError: naming the tensor, its dtype and ``hint`` (the way out).
    """
    if first_nonfinite([t]) is not None:
        raise ValueError(
            f"merged tensor {key!r} overflows {t.dtype}: finite inputs gave NaN/Inf (values "
            f"beyond ±{torch.finfo(t.dtype).max:.6g} do not fit); {hint}"
        )
