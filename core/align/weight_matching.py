"""Weight matching (Ainsworth, Hayase, Srinivasa, "Git Re-Basin", arXiv 2209.04836, Alg. 1).

Find the permutation ``pi`` of model B's hidden units that maximises the weight inner product
``sum_l <W_l^A, P_l W_l^B P_{l-1}^T>`` (equivalently minimises ``||theta_A - pi(theta_B)||^2``).
Jointly this is NP-hard; fixing all permutations but one turns it into a linear assignment
problem, solved exactly with ``scipy.optimize.linear_sum_assignment``. Coordinate descent visits
the permutations in a random order (from the explicit generator) and stops after the first full
sweep in which no permutation improves the objective.

BatchNorm running statistics are permuted with their layer but left out of the objective
(they are estimates, not weights).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor

from .._checks import check_int
from ..params import check_state_dict
from .permute import Permutation, check_permutation, identity_permutation, permute_tensor
from .spec import PermutationSpec

_RUNNING = ("running_mean", "running_var")


@dataclass
class MatchingInfo:
    """What a weight-matching run did.

    Attributes:
        sweeps: full passes over the permutations.
        objective: the weight inner product after each sweep (non-decreasing).
        converged: True when the last sweep improved nothing (False: stopped at ``max_iter``).
    """

    sweeps: int = 0
    objective: list[float] = field(default_factory=list)
    converged: bool = False


def weight_matching(
    spec: PermutationSpec,
    sd_a: Mapping[str, Tensor],
    sd_b: Mapping[str, Tensor],
    *,
    generator: torch.Generator | None = None,
    max_iter: int = 100,
    init_perm: Mapping[str, Tensor] | None = None,
    info: MatchingInfo | None = None,
) -> Permutation:
    """Permutation of model B's units that best aligns its weights with model A's.

    Args:
        spec: the architecture's permutation spec (:func:`core.align.spec_for`).
        sd_a: reference state dict (not modified).
        sd_b: state dict to align to ``sd_a`` (not modified).
        generator: orders the permutations in each sweep; None uses a generator seeded with 0.
        max_iter: most sweeps.
        init_perm: starting permutation (default identity).
        info: filled with the number of sweeps and the objective after each (computing the
            objective costs time, so it is only done when ``info`` is given).

    Returns:
        ``perm`` such that ``apply_permutation(spec, perm, sd_b)`` is as close to ``sd_a`` as
        coordinate descent finds.
    """
    sd_a = check_state_dict("sd_a", sd_a)
    sd_b = check_state_dict("sd_b", sd_b)
    spec.check(sd_a, "sd_a")
    spec.check(sd_b, "sd_b")
    check_int("max_iter", max_iter, 1, 100_000)
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(
            f"generator must be a torch.Generator or None, got {type(generator).__name__}"
        )
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    perm = (
        identity_permutation(spec)
        if init_perm is None
        else {p: v.clone() for p, v in check_permutation(spec, init_perm, "init_perm").items()}
    )
    # Weights taking part in the objective, float32 on CPU: (key, axis) -> (n, rest) of A.
    a_rows: dict[tuple[str, int], Tensor] = {}
    b_w: dict[str, Tensor] = {}
    for pairs in spec.perm_to_axes.values():
        for key, axis in pairs:
            if key.endswith(_RUNNING):
                continue
            a_rows[(key, axis)] = _rows(sd_a[key].detach().float().cpu(), axis)  # (n, rest)
            b_w[key] = sd_b[key].detach().float().cpu()
    names = spec.names
    # p's cost matrix depends only on the permutations sharing a tensor with it: when none of
    # them changed since p was last solved, its LAP would return the same answer, so skip it.
    neighbours = {
        p: {q for key, _ in pairs for q in spec.axes_to_perm[key] if q not in (None, p)}
        for p, pairs in spec.perm_to_axes.items()
    }
    changed_at: dict[str, int] = {}
    solved_at: dict[str, int] = {}
    clock = 0
    for _ in range(max_iter):
        improved = False
        for i in torch.randperm(len(names), generator=gen).tolist():
            p = names[i]
            n = spec.sizes[p]
            clock += 1
            if p in solved_at and all(changed_at.get(q, -1) < solved_at[p] for q in neighbours[p]):
                continue
            solved_at[p] = clock
            cost = torch.zeros(n, n)  # (n_A, n_B) similarity of unit i of A and unit j of B
            for key, axis in spec.perm_to_axes[p]:
                if (key, axis) not in a_rows:
                    continue
                w_b = _rows(permute_tensor(spec, perm, key, b_w[key], except_axis=axis), axis)
                cost += a_rows[(key, axis)] @ w_b.T  # (n, rest) @ (rest, n)
            c = cost.double().numpy()
            _, col = linear_sum_assignment(c, maximize=True)
            old = float(c[np.arange(n), perm[p].numpy()].sum())
            new = float(c[np.arange(n), col].sum())
            if new > old + 1e-12 * max(1.0, abs(old)):
                perm[p] = torch.as_tensor(col, dtype=torch.int64)
                changed_at[p] = clock
                improved = True
        if info is not None:
            info.sweeps += 1
            info.objective.append(_objective(spec, perm, a_rows, b_w))
        if not improved:
            if info is not None:
                info.converged = True
            break
    return perm


def _rows(t: Tensor, axis: int) -> Tensor:
    """(n, rest): ``axis`` moved to the front, the others flattened."""
    return t.movedim(axis, 0).reshape(t.shape[axis], -1)


def _objective(
    spec: PermutationSpec,
    perm: Permutation,
    a_rows: Mapping[tuple[str, int], Tensor],
    b_w: Mapping[str, Tensor],
) -> float:
    """sum over matched tensors of <W_A, pi(W_B)>, each tensor counted once."""
    seen: set[str] = set()
    total = 0.0
    for key, axis in a_rows:
        if key in seen:
            continue
        seen.add(key)
        a = a_rows[(key, axis)].reshape(-1)  # (numel,) in the (axis, rest) layout
        b = _rows(permute_tensor(spec, perm, key, b_w[key]), axis).reshape(-1)
        total += float(torch.dot(a.double(), b.double()))
    return total
