"""BatchNorm re-estimation after merging (or interpolating) weights.

Merged weights make the stored running statistics stale (Jordan et al., "REPAIR:
REnormalizing Permuted Activations for Interpolation Repair", ICLR 2023, arXiv:2211.08403).
:func:`recompute_batchnorm` resets them and re-estimates them as a cumulative average
(momentum=None) over data, in train mode without gradients, on a copy of the model.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping

import torch
from torch import Tensor, nn

from .._checks import check_choice, check_int, check_tensor
from ..params import StateDict, check_state_dict

_BN = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


BN_METHODS = ("cumulative", "unmixed")


def recompute_batchnorm(
    model: nn.Module,
    sd: Mapping[str, Tensor],
    x: Tensor,
    *,
    batch_size: int = 256,
    method: str = "cumulative",
) -> StateDict:
    """Re-estimate every BatchNorm's running mean/var for the weights ``sd`` on inputs ``x``.

    Args:
        model: the architecture (not modified; a copy is used).
        sd: the (merged) state dict to load.
        x: (N, ...) inputs, e.g. training images.
        batch_size: examples per forward pass.
        method: "cumulative" (the default above: one train-mode pass, average of batch
            statistics) or "unmixed" (order-independent pooled statistics, layer by layer, for
            label-correlated calibration streams; see :mod:`core.papers.unmix_bn`).

    Returns:
        A new state dict: ``sd`` with running statistics and ``num_batches_tracked`` replaced
        (unchanged copy of ``sd`` when the model has no BatchNorm).
    """
    sd = check_state_dict("sd", sd)
    check_tensor("x", x, floating=True, finite=True, min_len=1)
    check_int("batch_size", batch_size, 1)
    check_choice("method", method, BN_METHODS)
    if method == "unmixed":
        from ..papers.unmix_bn import recompute_batchnorm_unmixed

        return recompute_batchnorm_unmixed(model, sd, x, batch_size=batch_size)
    work = copy.deepcopy(model)
    work.load_state_dict(sd)
    bns = [m for m in work.modules() if isinstance(m, _BN)]
    if not bns:
        return {k: v.detach().clone() for k, v in sd.items()}
    work.eval()
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average over all batches
        m.train()
    with torch.no_grad():
        for start in range(0, x.shape[0], batch_size):
            work(x[start : start + batch_size])
    new = work.state_dict()
    return {k: new[k].detach().clone() for k in sd}
