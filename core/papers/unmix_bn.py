"""BatchNorm re-estimation from a label-temporally-correlated stream, un-mixed (after Tomar,
Vray, Bozorgtabar, Thiran, "Un-Mixing Test-Time Normalization Statistics: Combatting Label
Temporal Correlation", ICLR 2024, arXiv 2401.08328).

The problem UnMix-TNS names: when consecutive batches are not i.i.d. (a stream sorted or
clustered by label), statistics built from batches are wrong. For the BN recompute after
merging (REPAIR-style reset, :func:`core.merge.bn.recompute_batchnorm`), two things go wrong
when the calibration batches each hold one or two classes:

* the stored variance is the average of the *within-batch* variances, so the between-batch
  (between-class) part of the variance is lost;
* the forward pass in train mode normalises every batch with its own statistics, which removes
  the class information from the activations that reach the later BatchNorm layers.

UnMix-TNS keeps K statistics components, each fed by the samples most similar to it, and
normalises with their mixture: mean = average of component means, variance = average of
component variances + variance of component means (law of total variance). For a finite
calibration set, count-weighted components recombine to exactly the pooled moments of all
samples, whatever the assignment, so the variant implemented here ("unmixed") is that limit:

1. BatchNorm layers are estimated one at a time in network order; earlier layers already hold
   their final statistics and run in eval mode, so later layers see the inputs they will see at
   test time (no per-batch normalisation leaks into them);
2. each layer's mean and (unbiased) variance are pooled over every sample of the stream
   (float64 sums of x and x**2 per channel), which is independent of the batch order.

The cost is one pass over the calibration data per BatchNorm layer (instead of one pass).
UnMix-TNS's momentum-updated components are what an unbounded test stream needs; with a finite
calibration set the exact mixture is cheaper and has no hyperparameters.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from .._checks import check_int, check_tensor
from ..data import Dataset
from ..params import StateDict, check_state_dict
from ..train import evaluate

_BN = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


class _Moments:
    """Per-channel pooled sums of x and x**2 (float64)."""

    def __init__(self, channels: int) -> None:
        self.n = 0
        self.s = torch.zeros(channels, dtype=torch.float64)
        self.q = torch.zeros(channels, dtype=torch.float64)

    def add(self, x: Tensor) -> None:
        flat = x.detach().double().transpose(0, 1).reshape(x.shape[1], -1)  # (C, N * spatial)
        self.n += flat.shape[1]
        self.s += flat.sum(1).cpu()
        self.q += flat.square().sum(1).cpu()

    def mean_var(self) -> tuple[Tensor, Tensor]:
        mean = self.s / self.n
        var = (self.q / self.n - mean.square()).clamp_min(0) * (self.n / max(self.n - 1, 1))
        return mean, var  # unbiased variance, as BatchNorm stores it


def recompute_batchnorm_unmixed(
    model: nn.Module, sd: Mapping[str, Tensor], x: Tensor, *, batch_size: int = 256
) -> StateDict:
    """Order-independent BatchNorm statistics for ``sd`` from the stream ``x`` (see module doc).

    Args:
        model: the architecture (not modified; a copy is used).
        sd: the (merged) state dict.
        x: (N, ...) calibration inputs in stream order (any order gives the same result).
        batch_size: examples per forward pass.

    Returns:
        ``sd`` with every BatchNorm's running mean / var (and ``num_batches_tracked``) replaced.
    """
    sd = check_state_dict("sd", sd)
    check_tensor("x", x, floating=True, finite=True, min_len=2)
    check_int("batch_size", batch_size, 1)
    work = copy.deepcopy(model)
    work.load_state_dict(sd)
    work.eval()
    bns = [m for m in work.modules() if isinstance(m, _BN)]
    if not bns:
        return {k: v.detach().clone() for k, v in sd.items()}
    with torch.no_grad():
        for bn in bns:
            moments = _Moments(bn.num_features)
            handle = bn.register_forward_pre_hook(lambda _m, args, mo=moments: mo.add(args[0]))
            try:
                for start in range(0, x.shape[0], batch_size):
                    work(x[start : start + batch_size])
            finally:
                handle.remove()
            mean, var = moments.mean_var()
            assert bn.running_mean is not None and bn.running_var is not None
            bn.running_mean.copy_(mean.to(bn.running_mean.dtype))
            bn.running_var.copy_(var.to(bn.running_var.dtype))
            if bn.num_batches_tracked is not None:
                bn.num_batches_tracked.fill_(-(-x.shape[0] // batch_size))
    new = work.state_dict()
    return {k: new[k].detach().clone() for k in sd}


def label_sorted_stream(
    x: Tensor, y: Tensor, *, classes_per_batch: int = 1, batch_size: int = 256
) -> Tensor:
    """A label-temporally-correlated stream: ``x`` reordered so that consecutive batches of
    ``batch_size`` hold about ``classes_per_batch`` classes each (sorted by label, then the
    classes interleaved in groups).

    Args:
        x: (N, ...) inputs; y: (N,) labels.
        classes_per_batch: 1 = fully sorted by label.
        batch_size: the batch size the stream will be read with.
    """
    check_tensor("x", x, floating=True, min_len=1)
    check_tensor("y", y, ndim=1)
    if len(x) != len(y):
        raise ValueError(f"x and y must have the same length, got {len(x)} and {len(y)}")
    check_int("classes_per_batch", classes_per_batch, 1)
    check_int("batch_size", batch_size, 1)
    order = torch.argsort(y, stable=True)  # (N,) sorted by label
    if classes_per_batch == 1:
        return x[order]
    classes = torch.unique(y)
    groups = [classes[i : i + classes_per_batch] for i in range(0, len(classes), classes_per_batch)]
    chunks = []
    for g in groups:
        idx = order[torch.isin(y[order], g)]
        per = [idx[y[idx] == c] for c in g]  # round-robin within the group: mixed batches
        width = max(len(p) for p in per)
        inter = torch.stack(
            [torch.cat([p, p.new_full((width - len(p),), -1)]) for p in per], 1
        ).flatten()
        chunks.append(inter[inter >= 0])
    return x[torch.cat(chunks)]


@dataclass
class StreamStudy:
    """Accuracy of one merged model after BN re-estimation from each stream and method.

    Attributes:
        rows: dicts with ``stream`` ("no recompute", "shuffled", "label-sorted k/batch"),
            ``classes_per_batch``, ``method`` ("stored", "cumulative", "unmixed"), ``accuracy``.
        task: the task name.
    """

    rows: list[dict[str, Any]]
    task: str = ""


def bn_stream_study(
    model: nn.Module,
    sd: Mapping[str, Tensor],
    data: Dataset,
    *,
    classes_per_batch: Sequence[int] = (1, 2),
    n_examples: int = 2000,
    batch_size: int = 128,
    seed: int = 0,
) -> StreamStudy:
    """Where un-mixed BN re-estimation helps: the merged ``sd`` evaluated on ``data``'s test
    split with its stored statistics, and after re-estimation (cumulative and unmixed) from a
    shuffled stream and from label-sorted streams with ``classes_per_batch`` classes per batch.

    Args:
        model: the architecture (with BatchNorm, else every row equals "stored").
        sd: the merged state dict (not modified).
        data: task: ``n_examples`` training inputs form the calibration stream.
        classes_per_batch: label-correlation levels of the sorted streams.
        n_examples: calibration inputs (a seeded subset of the training split).
        batch_size: calibration batch size.
        seed: picks the subset and the shuffled order.
    """
    sd = check_state_dict("sd", sd)
    check_int("n_examples", n_examples, 2)
    check_int("batch_size", batch_size, 1)
    if not classes_per_batch:
        raise ValueError("classes_per_batch must list at least one level, got none")
    from ..merge.bn import recompute_batchnorm

    gen = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(data.x_train), generator=gen)[:n_examples]  # shuffled order
    x, y = data.x_train[idx], data.y_train[idx]
    work = copy.deepcopy(model).cpu()

    def acc(state: Mapping[str, Tensor]) -> float:
        work.load_state_dict(state)
        return evaluate(work, data.x_test, data.y_test, device="cpu").accuracy

    rows: list[dict[str, Any]] = [
        {"stream": "no recompute", "classes_per_batch": 0, "method": "stored", "accuracy": acc(sd)}
    ]
    streams = [("shuffled", 0, x)] + [
        (f"label-sorted, {k}/batch", k, label_sorted_stream(x, y, classes_per_batch=k))
        for k in classes_per_batch
    ]
    for name, k, xs in streams:
        for method in ("cumulative", "unmixed"):
            new = recompute_batchnorm(model, sd, xs, batch_size=batch_size, method=method)
            rows.append(
                {"stream": name, "classes_per_batch": k, "method": method, "accuracy": acc(new)}
            )
    return StreamStudy(rows, data.name)


def merged_pair(
    model: nn.Module,
    sd_a: Mapping[str, Tensor],
    sd_b: Mapping[str, Tensor],
    *,
    align: str = "weight matching",
    generator: torch.Generator | None = None,
) -> StateDict:
    """The midpoint of A and B (B first aligned to A by ``align``: "naive" or "weight
    matching"), with the averaged, stale BatchNorm statistics that a recompute then replaces."""
    from ..landscape.compare import align as align_fn
    from ..merge import merge

    if align not in ("naive", "weight matching"):
        raise ValueError(f"align must be 'naive' or 'weight matching', got {align!r}")
    b = align_fn(model, sd_a, sd_b, align, generator=generator)
    return merge("average", [dict(sd_a), b])


__all__ = [
    "StreamStudy",
    "bn_stream_study",
    "label_sorted_stream",
    "merged_pair",
    "recompute_batchnorm_unmixed",
]
