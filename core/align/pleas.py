"""PLeaS (Nasery, Hayase, Koh, Oh, "PLeaS — Merging Models with Permutations and Least
Squares", CVPR 2025, arXiv 2407.02447; reference code SewoongLab/PLeaS-Merging
``pleas/methods/partial_matching.py``, ``pleas/methods/pleas_merging.py``).

Variant implemented (the reference's default ``merging='perm_gradmask'``), for two
``core.models`` MLPs of the same shape, possibly from different initialisations:

1. **Permutation.** Activation matching (pre-ReLU correlations; or weight matching) pairs unit
   ``i`` of A with unit ``perm[i]`` of B at every hidden layer.
2. **Partial matching** (``get_blocks``): per layer, the fraction ``ratio`` of pairs with the
   lowest matching cost (correlation of the pair) is kept **separate** (A-only and B-only
   units), the rest is merged. The merged layer has ``k`` merged + ``m`` A-only + ``m`` B-only
   units, width ``n + m``: ``ratio = 0`` is one model's width (the permute-and-average case),
   ``ratio = 1`` the concatenation of the two models.
3. **Initial weights** (``build_partial_merge_model``): merged-to-merged blocks are averaged;
   separate outputs read their own model's separate inputs and the merged inputs; merged
   outputs read the separate inputs with half weight.
4. **Least squares** (``train`` / ``step``): every merged layer is fitted, independently, so
   that on the source models' activations its outputs match theirs — inputs
   ``[(h_A[merged] + h_B[merged]) / 2, h_A[A-only], h_B[B-only]]``, targets the pre-activations
   ``[(z_A + z_B) / 2 on merged units, z_A on A-only, z_B on B-only]`` — with the weights from
   A-only inputs to B-only outputs (and B to A) held at zero.

Departure: the reference minimises the summed per-layer MSE with Adam (lr 5e-4, cosine, ~400
steps) from the initial weights; each layer's problem is linear least squares, so here it is
solved in closed form (float64, a small ridge ``ridge · mean diagonal`` for stability), one
output block at a time with its allowed inputs. That is the exact minimiser Adam approaches.
Only MLPs (``trunk.fc<i>`` and one ``head``) are supported.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor, nn

from .._checks import check_choice, check_range
from ..params import StateDict, check_state_dict

Block = tuple[Tensor, Tensor, Tensor, Tensor]  # merged A, merged B, A-only, B-only indices


@dataclass
class PleasResult:
    """A PLeaS merge of two MLPs.

    Attributes:
        model: the merged network (an MLP of the same depth, hidden width ``width``).
        state_dict: its weights.
        width: hidden units per layer of the merged model.
        n_merged: merged units per hidden layer.
        least_squares: whether step 4 ran (else the initial partial merge).
        fit_error: per layer, relative squared error of the fitted outputs (LS objective).
    """

    model: nn.Module
    state_dict: StateDict
    width: int
    n_merged: list[int]
    least_squares: bool
    fit_error: list[float]


def _depth(sd: Mapping[str, Tensor]) -> int:
    depth = len([k for k in sd if re.fullmatch(r"trunk\.fc\d+\.weight", k)])
    if depth == 0 or "head.weight" not in sd:
        raise ValueError("PLeaS supports core.models MLPs ('trunk.fc<i>' layers and one 'head')")
    return depth


def _pre_activations(sd: Mapping[str, Tensor], x: Tensor) -> tuple[list[Tensor], list[Tensor]]:
    """Inputs (N, d_in) and pre-activations (N, d_out) of every layer, head last (float64)."""
    h = x.flatten(1).double()
    ins, outs = [], []
    names = [f"trunk.fc{i}" for i in range(_depth(sd))] + ["head"]
    for j, name in enumerate(names):
        z = h @ sd[f"{name}.weight"].double().T + sd[f"{name}.bias"].double()
        ins.append(h)
        outs.append(z)
        h = torch.relu(z) if j < len(names) - 1 else z
    return ins, outs


def _correlation(a: Tensor, b: Tensor, eps: float = 1e-8) -> Tensor:
    a = a - a.mean(0)
    b = b - b.mean(0)
    cov = a.T @ b / len(a)  # (n_A, n_B)
    return cov / torch.outer(a.std(0, unbiased=False) + eps, b.std(0, unbiased=False) + eps)


def _blocks(corr: Tensor, perm: Tensor, ratio: float) -> Block:
    """Split the matched pairs (i, perm[i]) into merged and separate by matching cost."""
    n = len(perm)
    m = int(round(ratio * n))
    cost = corr[torch.arange(n), perm]  # correlation of each matched pair
    order = torch.argsort(cost, stable=True)  # worst matched first
    sep, keep = order[:m].sort().values, order[m:].sort().values
    return keep, perm[keep], sep, perm[sep]


def _ident(n: int) -> Block:
    e = torch.empty(0, dtype=torch.int64)
    return torch.arange(n), torch.arange(n), e, e


def _initial(w_a: Tensor, w_b: Tensor, bo: Block, bi: Block) -> Tensor:
    """The reference's ``build_partial_merge_model`` for one weight matrix."""
    o1, o2, o1c, o2c = bo
    i1, i2, i1c, i2c = bi
    no, mo, ni, mi = len(o1), len(o1c), len(i1), len(i1c)
    w = torch.zeros(no + 2 * mo, ni + 2 * mi, dtype=w_a.dtype)
    so12, so1, so2 = slice(0, no), slice(no, no + mo), slice(no + mo, no + 2 * mo)
    si12, si1, si2 = slice(0, ni), slice(ni, ni + mi), slice(ni + mi, ni + 2 * mi)
    w[so12, si12] = (w_a[o1][:, i1] + w_b[o2][:, i2]) / 2
    w[so1, si1] = w_a[o1c][:, i1c]
    w[so2, si2] = w_b[o2c][:, i2c]
    w[so1, si12] = w_a[o1c][:, i1]
    w[so2, si12] = w_b[o2c][:, i2]
    w[so12, si1] = w_a[o1][:, i1c] / 2
    w[so12, si2] = w_b[o2][:, i2c] / 2
    return w


def _stack(a: Tensor, b: Tensor, blk: Block) -> Tensor:
    """[(a[merged] + b[merged]) / 2, a[A-only], b[B-only]] along dim 1."""
    i1, i2, i1c, i2c = blk
    return torch.cat([(a[:, i1] + b[:, i2]) / 2, a[:, i1c], b[:, i2c]], 1)


def _lstsq(x: Tensor, y: Tensor, ridge: float) -> Tensor:
    """argmin_W ||[x, 1] W - y||² + ridge·mean(diag) ||W||², returns (d_in + 1, d_out)."""
    xb = torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], 1)
    g = xb.T @ xb
    g = g + ridge * g.diagonal().mean() * torch.eye(len(g), dtype=g.dtype)
    return torch.linalg.solve(g, xb.T @ y)


def pleas(
    model: nn.Module,
    sd_a: Mapping[str, Tensor],
    sd_b: Mapping[str, Tensor],
    x: Tensor,
    *,
    ratio: float = 0.0,
    matcher: str = "activation matching",
    least_squares: bool = True,
    ridge: float = 1e-4,
    generator: torch.Generator | None = None,
) -> PleasResult:
    """Merge two same-shape MLPs with PLeaS: partial permutation matching, then least squares.

    Args:
        model: the architecture (a ``core.models`` MLP; never modified).
        sd_a: first model's state dict (its unit order is kept).
        sd_b: second model's state dict.
        x: (N, ...) unlabelled inputs for matching costs and the least-squares fits.
        ratio: fraction of each layer's units kept separate, in [0, 1] (0: width n, 1: 2n).
        matcher: "activation matching" or "weight matching" for the permutation.
        least_squares: run the per-layer least-squares step (False: the initial partial merge).
        ridge: relative ridge of the least-squares solves.
        generator: randomness of weight matching's layer order.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    sd_a = check_state_dict("sd_a", sd_a)
    sd_b = check_state_dict("sd_b", sd_b)
    depth = _depth(sd_a)
    if set(sd_a) != set(sd_b) or any(sd_a[k].shape != sd_b[k].shape for k in sd_a):
        raise ValueError("sd_a and sd_b must have the same keys and shapes")
    check_range("ratio", ratio, 0.0, 1.0)
    check_choice("matcher", matcher, ("activation matching", "weight matching"))
    check_range("ridge", ridge, 0.0, 1.0)
    if not isinstance(x, Tensor) or x.ndim < 2 or len(x) < 2:
        raise ValueError(f"x must be an (N, ...) tensor with N >= 2, got {getattr(x, 'shape', x)}")
    ins_a, outs_a = _pre_activations(sd_a, x)
    ins_b, outs_b = _pre_activations(sd_b, x)
    corrs = [_correlation(outs_a[i], outs_b[i]) for i in range(depth)]
    if matcher == "activation matching":
        perms = [torch.as_tensor(linear_sum_assignment(c.numpy(), maximize=True)[1]) for c in corrs]
    else:
        from .spec import spec_for
        from .weight_matching import weight_matching

        wm = weight_matching(spec_for(model), sd_a, sd_b, generator=generator)
        perms = [wm[f"P_fc{i}"] for i in range(depth)]
    hidden = [_blocks(corrs[i], perms[i], ratio) for i in range(depth)]
    blocks = [_ident(x.flatten(1).shape[1]), *hidden, _ident(sd_a["head.weight"].shape[0])]
    names = [f"trunk.fc{i}" for i in range(depth)] + ["head"]
    out: StateDict = {}
    errors: list[float] = []
    for j, name in enumerate(names):
        bi, bo = blocks[j], blocks[j + 1]
        w_a, w_b = sd_a[f"{name}.weight"].double(), sd_b[f"{name}.weight"].double()
        bias_a, bias_b = sd_a[f"{name}.bias"].double(), sd_b[f"{name}.bias"].double()
        w = _initial(w_a, w_b, bo, bi)  # (out, in)
        b = _stack(bias_a[None], bias_b[None], bo)[0]
        xin = _stack(ins_a[j], ins_b[j], bi)  # (N, in)
        target = _stack(outs_a[j], outs_b[j], bo)  # (N, out)
        if least_squares:
            w, b = _fit_layer(xin, target, bo, bi, ridge)
        fit = xin @ w.T + b
        errors.append(float(((fit - target) ** 2).sum() / (target**2).sum().clamp_min(1e-12)))
        out[f"{name}.weight"] = w.to(sd_a[f"{name}.weight"].dtype)
        out[f"{name}.bias"] = b.to(sd_a[f"{name}.bias"].dtype)
    width = int(out["trunk.fc0.weight"].shape[0])
    net = copy.deepcopy(model).cpu().eval()
    for i in range(depth):
        setattr(net.trunk, f"fc{i}", nn.Linear(*out[f"trunk.fc{i}.weight"].shape[::-1]))
    net.head = nn.Linear(width, out["head.weight"].shape[0])
    if hasattr(net, "feature_dim"):
        setattr(net, "feature_dim", width)  # noqa: B010 (the attribute is typed Tensor | Module)
    net.load_state_dict({**{k: v for k, v in sd_a.items() if k not in out}, **out})
    return PleasResult(net, out, width, [len(h[0]) for h in hidden], least_squares, errors)


def _fit_layer(xin: Tensor, target: Tensor, bo: Block, bi: Block, ridge: float):
    """Least squares per output block: A-only outputs never read B-only inputs, and back."""
    no, mo, ni, mi = len(bo[0]), len(bo[2]), len(bi[0]), len(bi[2])
    in_all = torch.arange(ni + 2 * mi)
    in_a = torch.cat([torch.arange(ni), torch.arange(ni, ni + mi)])
    in_b = torch.cat([torch.arange(ni), torch.arange(ni + mi, ni + 2 * mi)])
    w = torch.zeros(no + 2 * mo, ni + 2 * mi, dtype=xin.dtype)
    b = torch.zeros(no + 2 * mo, dtype=xin.dtype)
    for rows, cols in (
        (torch.arange(no), in_all),
        (torch.arange(no, no + mo), in_a),
        (torch.arange(no + mo, no + 2 * mo), in_b),
    ):
        if len(rows) == 0:
            continue
        sol = _lstsq(xin[:, cols], target[:, rows], ridge)  # (len(cols) + 1, len(rows))
        w[rows[:, None], cols[None, :]] = sol[:-1].T
        b[rows] = sol[-1]
    return w, b


def parameter_count(model: nn.Module) -> int:
    """Number of parameters (for accuracy-vs-size comparisons)."""
    return sum(p.numel() for p in model.parameters())


__all__ = ["PleasResult", "parameter_count", "pleas"]
