"""Activation matching (Ainsworth et al., "Git Re-Basin", arXiv 2209.04836, Sec. 3.1; Li et al.
2015 "Convergent learning").

Run both models on the same inputs, record the activations that each permutation acts on
(pre-ReLU outputs listed in ``PermutationSpec.activations``; conv outputs count every spatial
position as a sample), and pair unit ``i`` of A with the unit of B whose activations correlate
best (Pearson correlation, streamed in float64). Every permutation is an independent linear
assignment problem; residual streams pool the activations of every layer that writes to them.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping

import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor, nn

from ..device import resolve_device
from ..params import check_state_dict
from .permute import Permutation
from .spec import PermutationSpec, spec_for


class _Moments:
    """Streaming first and second moments of paired activations (float64)."""

    def __init__(self, n: int):
        self.count = 0
        self.sum_a = torch.zeros(n, dtype=torch.float64)
        self.sum_b = torch.zeros(n, dtype=torch.float64)
        self.sq_a = torch.zeros(n, dtype=torch.float64)
        self.sq_b = torch.zeros(n, dtype=torch.float64)
        self.cross = torch.zeros(n, n, dtype=torch.float64)  # (n_A, n_B)

    def add(self, a: Tensor, b: Tensor) -> None:
        a, b = a.double().cpu(), b.double().cpu()  # (samples, n)
        self.count += a.shape[0]
        self.sum_a += a.sum(0)
        self.sum_b += b.sum(0)
        self.sq_a += (a * a).sum(0)
        self.sq_b += (b * b).sum(0)
        self.cross += a.T @ b

    def correlation(self, eps: float = 1e-8) -> Tensor:
        m = max(self.count, 1)
        mu_a, mu_b = self.sum_a / m, self.sum_b / m
        var_a = (self.sq_a / m - mu_a**2).clamp_min(0)
        var_b = (self.sq_b / m - mu_b**2).clamp_min(0)
        cov = self.cross / m - torch.outer(mu_a, mu_b)  # (n_A, n_B)
        return cov / torch.sqrt(torch.outer(var_a + eps, var_b + eps))


def _channels_last(out: Tensor) -> Tensor:
    """(N, C, ...) -> (N * spatial, C)."""
    return out.movedim(1, -1).reshape(-1, out.shape[1])


def _batches(batches: Tensor | Iterable) -> Iterable[Tensor]:
    if isinstance(batches, Tensor):
        yield from batches.split(512)
        return
    for item in batches:
        x = item[0] if isinstance(item, tuple | list) else item
        if not isinstance(x, Tensor):
            raise TypeError(f"batches must yield Tensors or (x, y) tuples, got {type(x).__name__}")
        yield x


@torch.no_grad()
def activation_matching(
    model: nn.Module,
    sd_a: Mapping[str, Tensor],
    sd_b: Mapping[str, Tensor],
    batches: Tensor | Iterable,
    *,
    spec: PermutationSpec | None = None,
    device: str | torch.device = "cpu",
) -> Permutation:
    """Permutation of model B's units whose activations best correlate with model A's.

    Args:
        model: the architecture (never modified; private copies run the forward passes).
        sd_a: reference state dict.
        sd_b: state dict to align.
        batches: (N, ...) inputs, or an iterable of input batches / (x, y) tuples.
        spec: permutation spec (default :func:`spec_for` of ``model``).
        device: where the forward passes run.

    Returns:
        ``perm`` for :func:`core.align.apply_permutation` on ``sd_b``.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    sd_a = check_state_dict("sd_a", sd_a)
    sd_b = check_state_dict("sd_b", sd_b)
    spec = spec if spec is not None else spec_for(model)
    spec.check(sd_a, "sd_a")
    spec.check(sd_b, "sd_b")
    if set(spec.activations) != set(spec.sizes):
        raise ValueError(f"spec.activations must name modules for every permutation {spec.names}")
    dev = resolve_device(device)
    nets = []
    for sd in (sd_a, sd_b):
        net = copy.deepcopy(model).to(dev).eval()
        net.load_state_dict(sd)
        nets.append(net)
    moments = {p: _Moments(n) for p, n in spec.sizes.items()}
    records: list[dict[str, Tensor]] = [{}, {}]
    handles = []
    modules_of = [dict(net.named_modules()) for net in nets]
    for p, mods in spec.activations.items():
        for name in mods:
            for side in (0, 1):
                if name not in modules_of[side]:
                    raise ValueError(
                        f"spec.activations[{p!r}] names {name!r}, not a module of model"
                    )

                def hook(
                    _m: nn.Module, _i: object, out: Tensor, side: int = side, name: str = name
                ) -> None:
                    records[side][name] = _channels_last(out)

                handles.append(modules_of[side][name].register_forward_hook(hook))
    seen = 0
    try:
        for x in _batches(batches):
            x = x.to(dev)
            for side in (0, 1):
                records[side].clear()
                nets[side](x)
            for p, mods in spec.activations.items():
                for name in mods:
                    moments[p].add(records[0][name], records[1][name])
            seen += len(x)
    finally:
        for h in handles:
            h.remove()
    if seen == 0:
        raise ValueError("batches must hold at least one input, got none")
    perm: Permutation = {}
    for p, mom in moments.items():
        _, col = linear_sum_assignment(mom.correlation().numpy(), maximize=True)
        perm[p] = torch.as_tensor(col, dtype=torch.int64)
    return perm
