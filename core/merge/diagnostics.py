"""Interference diagnostics: where task vectors agree, where they fight, what TIES/DARE keep.

The quantities behind the analysis of Yadav et al., "TIES-Merging: Resolving Interference When
Merging Models", NeurIPS 2023, arXiv:2306.01708 (§3, Fig. 3: redundant parameters and sign
conflicts) and of Ilharco et al., "Editing Models with Task Arithmetic", ICLR 2023,
arXiv:2212.04089 (§5: cosine similarity between task vectors), computed on task vectors
τᵢ = θᵢ − θ₀ over the floating-point tensors, grouped into layers (a tensor's module: the key
without its last dotted part, so ``fc1.weight`` and ``fc1.bias`` form layer ``fc1``).

* :func:`task_vector_cosine` — the (N, N) cosine similarity of the flattened τᵢ.
* :func:`layer_norms` — ‖τᵢ‖₂ restricted to each layer, (N, L).
* :func:`sign_conflicts` — per layer, the fraction of coordinates with at least two non-zero
  entries among the τᵢ whose non-zero entries do not all share one sign (the TIES paper's
  "sign conflict"; ``density`` < 1 first applies the TIES trim, as in its Fig. 3).
* :func:`ties_keep` — what TIES keeps (trim to the top ``density`` |τ| per model, globally or
  per tensor; elect the sign of Σ trimmed τ per coordinate, 0 counting as +; keep the trimmed
  entries that agree): per (model, layer) the fraction of entries that enter the disjoint
  merge, and per model its share of the elected sign (of the coordinates and of the |τ| mass
  of all kept entries), exactly as :mod:`core.merge.ties` merges.
* :func:`dare_keep` — the entries DARE keeps (drop rate p, the same seeded draws as
  :mod:`core.merge.dare_ties`), per (model, layer), and with ``density`` the TIES step that
  DARE-TIES applies to the dropped vectors.
* :func:`interference` — all of them in one :class:`InterferenceReport` for the Merge Lab.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .._checks import check_choice, check_range
from ..params import StateDict, check_compatible, is_mergeable
from ._blocks import dare_kernel, tensor_thresholds
from .ties import ties_thresholds


def layer_name(key: str) -> str:
    """The layer of a state-dict key: the key without its last dotted part (``fc1.weight`` ->
    ``fc1``); a key without a dot is its own layer."""
    return key.rsplit(".", 1)[0] if "." in key else key


def check_task_vectors(
    task_vectors: Sequence[Mapping[str, Tensor]], *, min_models: int = 1
) -> tuple[list[StateDict], list[str]]:
    """Validate task vectors (same keys, shapes, dtypes; at least ``min_models``; finite) and
    return them as dicts with their floating-point keys in order."""
    if isinstance(task_vectors, Mapping) or not isinstance(task_vectors, Sequence):
        raise TypeError(
            f"task_vectors must be a list of state dicts, got {type(task_vectors).__name__}"
        )
    if len(task_vectors) < min_models:
        raise ValueError(
            f"task_vectors must hold at least {min_models} task vectors, got {len(task_vectors)}"
        )
    tvs = [dict(t) for t in task_vectors]
    check_compatible(tvs, [f"task_vectors[{i}]" for i in range(len(tvs))])
    keys = [k for k, v in tvs[0].items() if is_mergeable(v) and not v.is_complex()]
    if not keys:
        raise ValueError("task_vectors hold no floating-point tensor")
    for i, tv in enumerate(tvs):
        for k in keys:
            if not bool(torch.isfinite(tv[k]).all()):
                raise ValueError(f"task_vectors[{i}][{k!r}] holds a NaN or infinite entry")
    return tvs, keys


def layers_of(keys: Sequence[str]) -> tuple[list[str], list[int]]:
    """The layers of ``keys`` in order of first appearance and each key's layer index."""
    names = list(dict.fromkeys(layer_name(k) for k in keys))
    index = {n: i for i, n in enumerate(names)}
    return names, [index[layer_name(k)] for k in keys]


def _stack(tvs: Sequence[StateDict], key: str) -> Tensor:
    return torch.stack([tv[key].detach().reshape(-1).double() for tv in tvs])  # (N, P_k)


# ----------------------------------------------------------------------------- geometry
def task_vector_cosine(task_vectors: Sequence[Mapping[str, Tensor]]) -> np.ndarray:
    """(N, N) cosine similarity of the flattened task vectors (0 where one of them is zero).

    Args:
        task_vectors: N task vectors τᵢ (state dicts of one architecture).
    """
    tvs, keys = check_task_vectors(task_vectors)
    gram = torch.zeros(len(tvs), len(tvs), dtype=torch.float64)  # (N, N) Σ τᵢ·τⱼ
    for k in keys:
        t = _stack(tvs, k)  # (N, P_k)
        gram += t @ t.T
    norm = gram.diagonal().sqrt()  # (N,)
    denom = torch.outer(norm, norm)
    cos = torch.where(denom > 0, gram / denom.clamp(min=1e-300), torch.zeros_like(gram))
    return cos.clamp(-1.0, 1.0).numpy()


def layer_norms(task_vectors: Sequence[Mapping[str, Tensor]]) -> tuple[list[str], np.ndarray]:
    """Per layer, ‖τᵢ‖₂ over that layer's entries.

    Returns:
        (layers, norms): L layer names and an (N, L) array.
    """
    tvs, keys = check_task_vectors(task_vectors)
    names, idx = layers_of(keys)
    sq = np.zeros((len(tvs), len(names)))  # (N, L) Σ τ² per layer
    for k, li in zip(keys, idx, strict=True):
        sq[:, li] += (_stack(tvs, k) ** 2).sum(1).numpy()
    return names, np.sqrt(sq)


# ----------------------------------------------------------------------------- masks
def _trim_masks(
    tvs: Sequence[StateDict], keys: Sequence[str], density: float, trim: str
) -> list[Tensor]:
    """Per key, the (N, P_k) bool mask of the entries each model keeps after the TIES trim
    (|τᵢ| >= its threshold; a zero threshold keeps the non-zero entries), as in ties_kernel."""
    n = len(tvs)
    global_thr = ties_thresholds(list(tvs), None, density=density) if trim == "global" else []
    masks = []
    for k in keys:
        t = _stack(tvs, k)  # (N, P_k)
        if trim == "global":
            per_model = global_thr
        else:
            per_model = tensor_thresholds([tv[k] for tv in tvs], None, [density] * n)
        th = torch.tensor(per_model, dtype=torch.float64)[:, None]  # (N, 1)
        masks.append(torch.where(th > 0, t.abs() >= th, t != 0))  # (N, P_k)
    return masks


@dataclass(frozen=True, eq=False)
class KeepResult:
    """What one merge keeps, per model and layer.

    Attributes:
        layers: L layer names.
        fraction: (N, L) fraction of each layer's entries of τᵢ that the merge uses.
        trimmed: (N, L) fraction that survives the first step alone (the TIES trim, or the
            DARE drop).
        agree: (N,) of the entries a model keeps after the first step, the fraction whose
            sign is the elected one (1 where no election).
        sign_share: (N,) share of each model in the elected sign: of all (model, coordinate)
            entries the merge keeps, the fraction that are the model's.
        mass_share: (N,) the same share weighted by |τ| (it sums to 1).
        merged_nonzero: (L,) fraction of each layer's coordinates where the merged τ is
            non-zero (at least one entry kept).
    """

    layers: tuple[str, ...]
    fraction: np.ndarray
    trimmed: np.ndarray
    agree: np.ndarray
    sign_share: np.ndarray
    mass_share: np.ndarray
    merged_nonzero: np.ndarray

    def to_dict(self) -> dict[str, Any]:
        return {
            "layers": list(self.layers),
            "fraction": self.fraction.tolist(),
            "trimmed": self.trimmed.tolist(),
            "agree": self.agree.tolist(),
            "sign_share": self.sign_share.tolist(),
            "mass_share": self.mass_share.tolist(),
            "merged_nonzero": self.merged_nonzero.tolist(),
        }


def _elect_and_count(
    tvs: Sequence[StateDict], keys: Sequence[str], first: Sequence[Tensor], elect: bool
) -> KeepResult:
    """Given the first-step masks (trim or drop), elect signs (if ``elect``) and count."""
    names, idx = layers_of(keys)
    n, n_layers = len(tvs), len(names)
    numel = np.zeros(n_layers)
    kept1 = np.zeros((n, n_layers))
    kept = np.zeros((n, n_layers))
    nonzero = np.zeros(n_layers)
    mass = np.zeros(n)
    count = np.zeros(n)
    for k, li, m in zip(keys, idx, first, strict=True):
        t = _stack(tvs, k)  # (N, P_k)
        if elect:
            elected = torch.where((t * m).sum(0) >= 0, 1.0, -1.0).double()  # (P_k,)
            keep = m & (torch.sign(t) == elected)  # (N, P_k)
        else:
            keep = m
        numel[li] += t.shape[1]
        kept1[:, li] += m.sum(1).double().numpy()
        kept[:, li] += keep.sum(1).double().numpy()
        nonzero[li] += float(keep.any(0).sum())
        mass += (t.abs() * keep).sum(1).numpy()
        count += keep.sum(1).double().numpy()
    total1 = kept1.sum(1)
    return KeepResult(
        layers=tuple(names),
        fraction=kept / numel,
        trimmed=kept1 / numel,
        agree=np.where(total1 > 0, kept.sum(1) / np.maximum(total1, 1), 1.0),
        sign_share=count / max(count.sum(), 1.0),
        mass_share=mass / mass.sum() if mass.sum() > 0 else np.zeros(n),
        merged_nonzero=nonzero / numel,
    )


def ties_keep(
    task_vectors: Sequence[Mapping[str, Tensor]], *, density: float = 0.2, trim: str = "global"
) -> KeepResult:
    """The entries TIES-Merging keeps (trim, elect, disjoint merge; arXiv:2306.01708).

    Args:
        task_vectors: N ≥ 1 task vectors.
        density: fraction of |τᵢ| kept by the trim, in (0, 1] (1 skips the trim).
        trim: "global" (top-k over the whole model, the paper) or "tensor" (per tensor).
    """
    check_range("density", density, 0.0, 1.0, low_inclusive=False)
    check_choice("trim", trim, ("global", "tensor"))
    tvs, keys = check_task_vectors(task_vectors)
    return _elect_and_count(tvs, keys, _trim_masks(tvs, keys, density, trim), elect=True)


def dare_dropped(
    task_vectors: Sequence[Mapping[str, Tensor]],
    *,
    drop: float = 0.5,
    generator: torch.Generator | None = None,
) -> list[StateDict]:
    """DARE(τᵢ) of every task vector: the same draws, in the same order (model by model, key
    by key), as :func:`core.merge.dare_ties.dare_ties` makes from the same generator state."""
    check_range("drop", drop, 0.0, 1.0, high_inclusive=False)
    tvs, keys = check_task_vectors(task_vectors)
    return [
        {k: dare_kernel([tv[k]], None, [1.0], drop=drop, generator=generator) for k in keys}
        for tv in tvs
    ]


def dare_keep(
    task_vectors: Sequence[Mapping[str, Tensor]],
    *,
    drop: float = 0.5,
    density: float | None = None,
    trim: str = "global",
    generator: torch.Generator | None = None,
) -> KeepResult:
    """The entries DARE keeps (arXiv:2311.03099), and with ``density`` those DARE-TIES keeps.

    Args:
        task_vectors: N ≥ 1 task vectors.
        drop: p in [0, 1), each entry dropped with probability p (seeded by ``generator``).
        density: None for plain DARE (no election: ``fraction`` is the drop's survivors);
            a value in (0, 1] runs the TIES trim and election on the dropped vectors.
        trim: the TIES trim scope when ``density`` is given.
        generator: seeds the drops.
    """
    if density is not None:
        check_range("density", density, 0.0, 1.0, low_inclusive=False)
        check_choice("trim", trim, ("global", "tensor"))
    dropped = dare_dropped(task_vectors, drop=drop, generator=generator)
    tvs, keys = check_task_vectors(dropped)
    survivors = [_stack(tvs, k) != 0 for k in keys]
    if density is None:
        return _elect_and_count(tvs, keys, survivors, elect=False)
    res = _elect_and_count(tvs, keys, _trim_masks(tvs, keys, density, trim), elect=True)
    first = _elect_and_count(tvs, keys, survivors, elect=False)
    return KeepResult(
        res.layers,
        res.fraction,
        first.trimmed,
        res.agree,
        res.sign_share,
        res.mass_share,
        res.merged_nonzero,
    )


def sign_conflicts(
    task_vectors: Sequence[Mapping[str, Tensor]], *, density: float = 1.0, trim: str = "global"
) -> tuple[list[str], np.ndarray]:
    """Per layer, the sign-conflict rate of the task vectors (TIES paper §3, Fig. 3).

    A coordinate is counted when at least two models have a non-zero entry there (after the
    TIES trim at ``density``); it is in conflict when those entries do not all share one
    sign. The rate is conflicts / counted coordinates, NaN for a layer with none counted.

    Args:
        task_vectors: N ≥ 2 task vectors.
        density: trim each τᵢ to its top ``density`` |τ| first, in (0, 1] (1: no trim).
        trim: "global" or "tensor" trim scope.

    Returns:
        (layers, rate): L layer names and an (L,) array in [0, 1] or NaN.
    """
    check_range("density", density, 0.0, 1.0, low_inclusive=False)
    check_choice("trim", trim, ("global", "tensor"))
    tvs, keys = check_task_vectors(task_vectors, min_models=2)
    names, idx = layers_of(keys)
    masks = _trim_masks(tvs, keys, density, trim)
    conflict = np.zeros(len(names))
    counted = np.zeros(len(names))
    for k, li, m in zip(keys, idx, masks, strict=True):
        t = _stack(tvs, k) * m  # (N, P_k) trimmed
        pos, neg = (t > 0).sum(0), (t < 0).sum(0)  # (P_k,)
        counted[li] += float(((pos + neg) >= 2).sum())
        conflict[li] += float(((pos > 0) & (neg > 0)).sum())
    with np.errstate(invalid="ignore", divide="ignore"):
        rate = np.where(counted > 0, conflict / np.maximum(counted, 1), np.nan)
    return names, rate


# ----------------------------------------------------------------------------- report
@dataclass(frozen=True, eq=False)
class InterferenceReport:
    """All interference diagnostics of one set of task vectors (see the module docstring).

    Attributes:
        names: N model names; layers: L layer names.
        cosine: (N, N) cosine similarity of the task vectors.
        norms: (N, L) ‖τᵢ‖ per layer.
        conflict: (L,) sign-conflict rate per layer of the untrimmed vectors.
        conflict_trimmed: (L,) the same after the TIES trim at ``density``.
        ties: what TIES keeps at ``density``; dare: what DARE keeps at ``drop``;
        dare_ties: what DARE-TIES keeps at (``drop``, ``density``).
        density, drop, trim, seed: the settings.
    """

    names: tuple[str, ...]
    layers: tuple[str, ...]
    cosine: np.ndarray
    norms: np.ndarray
    conflict: np.ndarray
    conflict_trimmed: np.ndarray
    ties: KeepResult
    dare: KeepResult
    dare_ties: KeepResult
    density: float
    drop: float
    trim: str
    seed: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (NaN conflict rates become None)."""

        def nan_none(a: np.ndarray) -> list[float | None]:
            return [None if np.isnan(v) else float(v) for v in a]

        return {
            "names": list(self.names),
            "layers": list(self.layers),
            "cosine": self.cosine.tolist(),
            "norms": self.norms.tolist(),
            "conflict": nan_none(self.conflict),
            "conflict_trimmed": nan_none(self.conflict_trimmed),
            "ties": self.ties.to_dict(),
            "dare": self.dare.to_dict(),
            "dare_ties": self.dare_ties.to_dict(),
            "density": self.density,
            "drop": self.drop,
            "trim": self.trim,
            "seed": self.seed,
        }


def interference(
    task_vectors: Sequence[Mapping[str, Tensor]],
    *,
    names: Sequence[str] | None = None,
    density: float = 0.2,
    drop: float = 0.5,
    trim: str = "global",
    seed: int = 0,
) -> InterferenceReport:
    """Every diagnostic of ``task_vectors`` (N ≥ 2) at one TIES density and DARE drop rate.

    Args:
        task_vectors: N task vectors τᵢ = θᵢ − θ₀.
        names: N model names (default ``model0``...).
        density: the TIES trim density, in (0, 1].
        drop: the DARE drop rate, in [0, 1).
        trim: "global" or "tensor".
        seed: seeds the DARE draws (``torch.Generator().manual_seed(seed)``, as the Merge Lab
            seeds its merges).
    """
    tvs, _ = check_task_vectors(task_vectors, min_models=2)
    ids = [f"model{i}" for i in range(len(tvs))] if names is None else [str(n) for n in names]
    if len(ids) != len(tvs):
        raise ValueError(f"names must have one name per task vector ({len(tvs)}), got {len(ids)}")
    check_range("density", density, 0.0, 1.0, low_inclusive=False)
    check_range("drop", drop, 0.0, 1.0, high_inclusive=False)
    check_choice("trim", trim, ("global", "tensor"))
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be an int >= 0, got {seed!r}")
    layers, norms = layer_norms(tvs)
    _, conflict = sign_conflicts(tvs)
    _, conflict_trimmed = sign_conflicts(tvs, density=density, trim=trim)
    return InterferenceReport(
        names=tuple(ids),
        layers=tuple(layers),
        cosine=task_vector_cosine(tvs),
        norms=norms,
        conflict=conflict,
        conflict_trimmed=conflict_trimmed,
        ties=ties_keep(tvs, density=density, trim=trim),
        dare=dare_keep(tvs, drop=drop, generator=torch.Generator().manual_seed(seed)),
        dare_ties=dare_keep(
            tvs,
            drop=drop,
            density=density,
            trim=trim,
            generator=torch.Generator().manual_seed(seed),
        ),
        density=float(density),
        drop=float(drop),
        trim=trim,
        seed=seed,
    )
