"""ZipIt! (Stoica, Bolya, Bjorner, Ramesh, Hearn, Hoffman, "ZipIt! Merging Models from Different
Tasks without Training", ICLR 2024, arXiv 2305.03053; reference code gstoica27/ZipIt
``matching_functions.py::match_tensors_zipit``, ``model_merger.py``).

Variant implemented (the reference's default: covariance metric, ``r = 0.5``, ``a = 0.3``,
``b = 0.125``), for two ``core.models`` MLPs of the same shape:

1. Run both models on the same inputs; at every hidden layer record the post-ReLU features of
   A and B, concatenate them into 2n features and take their correlation matrix (from the
   covariance, diagonal set to −inf).
2. Greedy zipping (``match_tensors_zipit``): repeatedly take the most correlated pair of
   features — **within one model or across the two** — and merge them into one feature; the
   merged feature's similarities become the element-wise minimum of the two and are multiplied
   by ``alpha`` (Sec. 4.3; ``alpha <= 0`` forbids any further merge into that feature from the
   two origins instead); each model may merge only ``beta * (to_remove // 2)`` pairs within
   itself, after which same-model pairs of that model are disabled; stop at ``n`` features.
   A merged feature is the mean of its members: merge matrix ``M`` (n, 2n), unmerge
   ``U`` (2n, n) of 0/1 entries (member j of group g).
3. Weights: layer l of the zipped model is ``Σ_i M_i^l W_i^l U_i^{l-1}`` (``M_i`` / ``U_i`` the
   model-i halves), biases ``Σ_i M_i^l b_i^l``; layers after the last zipped one stay separate
   and receive the unmerged features ``U_i`` (partial zipping, ``stop_at``); a fully zipped
   model averages the two (unmerged) heads, as the reference's ``get_merged_state_dict``.

Partial zipping returns a :class:`ZippedMLP` with one branch per model after the shared trunk;
its logits are the mean of the branches' logits (same label space). The reference instead
concatenates the heads of models trained on disjoint label sets; ``ZippedMLP.branches`` gives
each branch's logits for that use. Only MLPs (``trunk.fc<i>``) are supported: convolutional
and residual graphs need the reference's hand-written graphs and BatchNorm handling.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from .._checks import check_int, check_range
from ..params import StateDict, check_state_dict
from .activation_matching import _batches


@dataclass
class ZipMatrices:
    """Merge and unmerge matrices of one zipped layer.

    Attributes:
        merge: (m, 2n) — merged feature g is the mean of its members (rows sum to 1).
        unmerge: (2n, m) — 0/1, member j belongs to group g.
        n_within: merges of two features of the same model, per model (A, B).
        n_across: merged features that hold at least one feature of each model.
    """

    merge: Tensor
    unmerge: Tensor
    n_within: tuple[int, int]
    n_across: int


def zip_features(
    corr: Tensor, *, n_out: int | None = None, alpha: float = 0.3, beta: float = 0.125
) -> ZipMatrices:
    """Greedy ZipIt! matching of the 2n features of two models from their correlation.

    Args:
        corr: (2n, 2n) correlation of the concatenated features [A; B] (not modified).
        n_out: number of merged features (default n, the reference's ``r = 0.5``).
        alpha: similarity damping of a merged feature (reference ``a``); <= 0 blocks it.
        beta: within-model merge budget as a fraction of ``to_remove // 2`` (reference ``b``).
    """
    if not isinstance(corr, Tensor) or corr.ndim != 2 or corr.shape[0] != corr.shape[1]:
        raise ValueError(
            f"corr must be a square (2n, 2n) tensor, got {getattr(corr, 'shape', corr)}"
        )
    total = int(corr.shape[0])
    if total % 2 or total == 0:
        raise ValueError(f"corr must have an even, positive size 2n, got {total}")
    n = total // 2
    n_out = n if n_out is None else n_out
    check_int("n_out", n_out, 1, total)
    check_range("alpha", alpha, -1.0, 1.0)
    check_range("beta", beta, 0.0, 1.0)
    sims = corr.detach().double().cpu().numpy().copy()  # (2n, 2n)
    sims = np.nan_to_num(sims, nan=0.0)
    np.fill_diagonal(sims, -np.inf)
    origin = np.repeat([0, 1], n)  # model of each (group's first) feature
    alive = np.ones(total, dtype=bool)
    members: list[list[int]] = [[j] for j in range(total)]
    to_remove = total - n_out
    budget = [int((to_remove // 2) * beta + 1e-4)] * 2
    within = [0, 0]
    for _ in range(to_remove):
        flat = int(np.argmax(sims))
        i, j = divmod(flat, total)
        if not np.isfinite(sims[i, j]):
            break  # nothing left that may merge (every remaining pair disabled)
        i, j = min(i, j), max(i, j)
        oi, oj = origin[i], origin[j]
        members[i] += members[j]
        members[j] = []
        sims[:, i] = np.minimum(sims[:, i], sims[:, j])
        sims[i, :] = np.minimum(sims[i, :], sims[j, :])
        if alpha <= 0:
            for o in {oi, oj}:
                block = origin == o
                sims[block, i] = -np.inf
                sims[i, block] = -np.inf
        else:
            sims[:, i] *= alpha
            sims[i, :] *= alpha
        sims[i, i] = -np.inf
        sims[j, :] = -np.inf
        sims[:, j] = -np.inf
        alive[j] = False
        if oi == oj:
            within[oi] += 1
            budget[oi] -= 1
            if budget[oi] <= 0:
                same = alive & (origin == oi)
                sims[np.ix_(same, same)] = -np.inf
    groups = [members[g] for g in np.flatnonzero(alive)]
    unmerge = torch.zeros(total, len(groups), dtype=torch.float32)  # (2n, m)
    for g, mem in enumerate(groups):
        unmerge[mem, g] = 1.0
    merge = (unmerge / unmerge.sum(0, keepdim=True)).T.contiguous()  # (m, 2n)
    across = int(((unmerge[:n].sum(0) > 0) & (unmerge[n:].sum(0) > 0)).sum())
    return ZipMatrices(merge, unmerge, (within[0], within[1]), across)


def feature_correlation(feats_a: Tensor, feats_b: Tensor, eps: float = 1e-7) -> Tensor:
    """(2n, 2n) correlation of the concatenated features [A; B] from (N, n) samples, float64
    (the reference's ``CovarianceMetric`` + ``compute_correlation``)."""
    if feats_a.shape != feats_b.shape or feats_a.ndim != 2:
        raise ValueError(
            f"feats_a and feats_b must both be (N, n), got {tuple(feats_a.shape)} and "
            f"{tuple(feats_b.shape)}"
        )
    f = torch.cat([feats_a, feats_b], 1).double()  # (N, 2n)
    f = f - f.mean(0, keepdim=True)
    cov = f.T @ f / max(f.shape[0], 1)
    std = cov.diagonal().clamp_min(0).sqrt()
    return cov / torch.outer(std, std).clamp_min(eps)


def _depth(sd: Mapping[str, Tensor]) -> int:
    depth = len([k for k in sd if re.fullmatch(r"trunk\.fc\d+\.weight", k)])
    if depth == 0 or "head.weight" not in sd:
        raise ValueError("ZipIt! supports core.models MLPs ('trunk.fc<i>' layers and one 'head')")
    return depth


@torch.no_grad()
def _hidden_features(sd: Mapping[str, Tensor], x: Tensor) -> list[Tensor]:
    """Post-ReLU features of every hidden layer of an MLP, each (N, n)."""
    out: list[Tensor] = []
    h = x.flatten(1)
    for i in range(_depth(sd)):
        h = torch.relu(h @ sd[f"trunk.fc{i}.weight"].T.float() + sd[f"trunk.fc{i}.bias"].float())
        out.append(h)
    return out


class ZippedMLP(nn.Module):
    """A partially zipped MLP: shared (zipped) layers, then one branch per model.

    Attributes:
        shared: the zipped hidden layers (Linear + ReLU).
        tails: per model, its remaining layers with unmerged inputs, ending in its head.
    """

    def __init__(self, shared: nn.Sequential, tails: list[nn.Sequential]):
        super().__init__()
        self.shared = shared
        self.tails = nn.ModuleList(tails)

    def branches(self, x: Tensor) -> list[Tensor]:
        h = self.shared(x.flatten(1))
        return [tail(h) for tail in self.tails]

    def forward(self, x: Tensor) -> Tensor:
        return torch.stack(self.branches(x)).mean(0)


@dataclass
class ZipResult:
    """ZipIt! of two MLPs.

    Attributes:
        state_dict: the fully zipped model's weights (same keys and shapes as the inputs) when
            every layer is zipped, else None.
        model: the zipped network (a loaded copy of the architecture, or a :class:`ZippedMLP`).
        layers: per zipped layer, its :class:`ZipMatrices`.
        stop_at: number of zipped hidden layers.
    """

    state_dict: StateDict | None
    model: nn.Module
    layers: list[ZipMatrices]
    stop_at: int


@torch.no_grad()
def zipit(
    model: nn.Module,
    sd_a: Mapping[str, Tensor],
    sd_b: Mapping[str, Tensor],
    batches: Tensor | Iterable,
    *,
    stop_at: int | None = None,
    alpha: float = 0.3,
    beta: float = 0.125,
    max_examples: int = 10_000,
) -> ZipResult:
    """Zip two same-shape MLPs (possibly from different initialisations) with ZipIt!.

    Args:
        model: the architecture (a ``core.models`` MLP; never modified).
        sd_a: first model's state dict.
        sd_b: second model's state dict.
        batches: inputs (N, ...) or an iterable of batches / (x, y) tuples for the features.
        stop_at: number of hidden layers to zip (default all = full zip; fewer = partial
            zipping with separate later layers and heads).
        alpha: similarity damping after a merge (reference ``a``).
        beta: within-model merge budget (reference ``b``).
        max_examples: at most this many inputs are used for the correlations.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    sd_a = check_state_dict("sd_a", sd_a)
    sd_b = check_state_dict("sd_b", sd_b)
    depth = _depth(sd_a)
    if set(sd_a) != set(sd_b) or any(sd_a[k].shape != sd_b[k].shape for k in sd_a):
        raise ValueError("sd_a and sd_b must have the same keys and shapes")
    stop_at = depth if stop_at is None else stop_at
    check_int("stop_at", stop_at, 1, depth)
    check_int("max_examples", max_examples, 1)
    xs, seen = [], 0
    for xb in _batches(batches):
        xs.append(xb.cpu().float())
        seen += len(xb)
        if seen >= max_examples:
            break
    if not xs:
        raise ValueError("batches must hold at least one input, got none")
    x = torch.cat(xs)[:max_examples]
    fa, fb = _hidden_features(sd_a, x), _hidden_features(sd_b, x)
    sds = [{k: v.detach().cpu().float() for k, v in sd.items()} for sd in (sd_a, sd_b)]
    layers: list[ZipMatrices] = []
    weights: list[tuple[Tensor, Tensor]] = []  # zipped (W, b) per shared layer
    prev: list[Tensor | None] = [None, None]  # U_i of the previous layer, (n, m)
    for i in range(stop_at):
        z = zip_features(feature_correlation(fa[i], fb[i]), alpha=alpha, beta=beta)
        n = fa[i].shape[1]
        merge = [z.merge[:, :n], z.merge[:, n:]]  # M_i (m, n)
        terms = []
        for s in (0, 1):
            w_s, u_s = sds[s][f"trunk.fc{i}.weight"], prev[s]  # (n, n_prev), (n_prev, m_prev)
            terms.append(merge[s] @ (w_s if u_s is None else w_s @ u_s))  # (m, m_prev)
        w = terms[0] + terms[1]
        b = merge[0] @ sds[0][f"trunk.fc{i}.bias"] + merge[1] @ sds[1][f"trunk.fc{i}.bias"]
        weights.append((w, b))
        prev = [z.unmerge[:n], z.unmerge[n:]]
        layers.append(z)
    u_a, u_b = prev
    assert u_a is not None and u_b is not None
    if stop_at == depth:
        out = {k: v.clone() for k, v in sds[0].items()}
        for i, (w, b) in enumerate(weights):
            out[f"trunk.fc{i}.weight"], out[f"trunk.fc{i}.bias"] = w, b
        out["head.weight"] = 0.5 * (sds[0]["head.weight"] @ u_a + sds[1]["head.weight"] @ u_b)
        out["head.bias"] = 0.5 * (sds[0]["head.bias"] + sds[1]["head.bias"])
        out = {k: v.to(sd_a[k].dtype) for k, v in out.items()}
        net = copy.deepcopy(model).cpu().eval()
        net.load_state_dict(out)
        return ZipResult(out, net, layers, stop_at)
    shared = nn.Sequential()
    for w, b in weights:
        lin = nn.Linear(w.shape[1], w.shape[0])
        lin.weight.copy_(w)
        lin.bias.copy_(b)
        shared.append(lin)
        shared.append(nn.ReLU())
    tails = []
    for s, u in ((0, u_a), (1, u_b)):
        tail = nn.Sequential()
        for i in range(stop_at, depth):
            w = sds[s][f"trunk.fc{i}.weight"]
            w = w @ u if i == stop_at else w
            lin = nn.Linear(w.shape[1], w.shape[0])
            lin.weight.copy_(w)
            lin.bias.copy_(sds[s][f"trunk.fc{i}.bias"])
            tail.append(lin)
            tail.append(nn.ReLU())
        head = nn.Linear(sds[s]["head.weight"].shape[1], sds[s]["head.weight"].shape[0])
        head.weight.copy_(sds[s]["head.weight"])
        head.bias.copy_(sds[s]["head.bias"])
        tail.append(head)
        tails.append(tail)
    return ZipResult(None, ZippedMLP(shared, tails).eval(), layers, stop_at)


__all__ = ["ZipMatrices", "ZipResult", "ZippedMLP", "feature_correlation", "zip_features", "zipit"]
