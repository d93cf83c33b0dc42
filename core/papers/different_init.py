"""Merging models trained from different initialisations: ZipIt! (Stoica et al., ICLR 2024,
arXiv 2305.03053) and PLeaS (Nasery et al., CVPR 2025, arXiv 2407.02447) against
permutation-only merging, at each merged model's size.

The study merges two same-shape MLPs A and B (different seeds; the same task, or disjoint
class splits as in ZipIt!) with every method and reports test accuracy (95% bootstrap CI over
test samples) against the merged model's parameter count relative to one model:

* endpoints A and B (size 1) and their output ensemble (size 2, the upper reference);
* naive averaging, weight matching and activation matching followed by averaging (size 1:
  permutation-only merging);
* ZipIt! full (size 1) and partially zipped (first layer shared, later layers separate);
* PLeaS at each ``ratio`` of separate units (size between 1 and 2), with and without the
  least-squares step (the latter is the reference's initial partial merge).

Headline claims checked: ZipIt! beats permutation-only merging of different-init models, most
clearly on disjoint tasks; PLeaS beats permutation-only merging at equal size (ratio 0) and
closes the gap to the ensemble as the width grows.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from .._checks import check_int, check_range
from ..align import activation_matching, apply_permutation, spec_for, weight_matching
from ..align.pleas import parameter_count, pleas
from ..align.zipit import zipit
from ..data import Dataset
from ..data.subset import stratified_subset
from ..params import check_state_dict
from ..stats import bootstrap_ci
from ..train import evaluate

Progress = Callable[[int, int], None] | None


class _Ensemble(nn.Module):
    def __init__(self, a: nn.Module, b: nn.Module):
        super().__init__()
        self.a, self.b = a, b

    def forward(self, x: Tensor) -> Tensor:
        return (self.a(x) + self.b(x)) / 2


@dataclass
class DifferentInitStudy:
    """Rows: method, family, ratio, size (parameters / one model), accuracy, low, high."""

    rows: list[dict] = field(default_factory=list)
    task: str = ""


def different_init_study(
    model: nn.Module,
    sd_a: Mapping[str, Tensor],
    sd_b: Mapping[str, Tensor],
    data: Dataset,
    *,
    ratios: Sequence[float] = (0.0, 0.25, 0.5, 1.0),
    n_examples: int = 2000,
    seed: int = 0,
    progress: Progress = None,
) -> DifferentInitStudy:
    """Merge A and B with every method; accuracy on ``data``'s test split vs relative size.

    Args:
        model: the MLP architecture (never modified).
        sd_a: first model (different initialisation from B).
        sd_b: second model.
        data: evaluation task (training inputs feed matching, ZipIt! and PLeaS; no labels).
        ratios: PLeaS fractions of separate units.
        n_examples: training inputs used by the data-dependent methods.
        seed: weight-matching order and bootstrap seed.
        progress: called as ``(done, total)`` after each method.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    sd_a = check_state_dict("sd_a", sd_a)
    sd_b = check_state_dict("sd_b", sd_b)
    if not ratios:
        raise ValueError("ratios must list at least one PLeaS ratio, got none")
    for r in ratios:
        check_range("ratios", r, 0.0, 1.0)
    check_int("n_examples", n_examples, 2)
    check_int("seed", seed, 0)
    # the training sets are sorted by class: a stratified sample, not the first rows
    x = data.x_train[stratified_subset(data.y_train, n_examples, random_state=seed, key="match")]
    one = parameter_count(model)
    study = DifferentInitStudy(task=data.name)
    total = 8 + 2 * len(ratios)
    done = 0

    def net(sd: Mapping[str, Tensor]) -> nn.Module:
        m = copy.deepcopy(model).cpu().eval()
        m.load_state_dict(sd)
        return m

    def add(method: str, family: str, m: nn.Module, ratio: float | None = None) -> None:
        nonlocal done
        res = evaluate(m, data.x_test, data.y_test, device="cpu")
        ci = bootstrap_ci(res.correct, n_boot=1000, random_state=seed)
        study.rows.append(
            {
                "method": method,
                "family": family,
                "ratio": ratio,
                "size": parameter_count(m) / one,
                "accuracy": ci.estimate,
                "low": ci.low,
                "high": ci.high,
            }
        )
        done += 1
        if progress is not None:
            progress(done, total)

    net_a, net_b = net(sd_a), net(sd_b)
    add("model A", "endpoint", net_a)
    add("model B", "endpoint", net_b)
    ens = _Ensemble(net_a, net_b)
    add("ensemble", "endpoint", ens)
    spec = spec_for(model)
    mean = {k: (sd_a[k].float() + sd_b[k].float()).div(2).to(sd_a[k].dtype) for k in sd_a}
    add("naive average", "permutation", net(mean))
    for name, perm in (
        (
            "weight matching",
            weight_matching(spec, sd_a, sd_b, generator=torch.Generator().manual_seed(seed)),
        ),
        ("activation matching", activation_matching(model, sd_a, sd_b, x)),
    ):
        pb = apply_permutation(spec, perm, sd_b)
        avg = {k: (sd_a[k].float() + pb[k].float()).div(2).to(sd_a[k].dtype) for k in sd_a}
        add(name, "permutation", net(avg))
    add("ZipIt!", "ZipIt!", zipit(model, sd_a, sd_b, x).model)
    depth = len([k for k in sd_a if k.startswith("trunk.fc") and k.endswith("weight")])
    if depth > 1:
        add("ZipIt! (partial, 1 layer)", "ZipIt!", zipit(model, sd_a, sd_b, x, stop_at=1).model)
    else:
        done += 1
    for r in ratios:
        add("PLeaS", "PLeaS", pleas(model, sd_a, sd_b, x, ratio=r).model, r)
        add(
            "partial permutation (no LS)",
            "PLeaS",
            pleas(model, sd_a, sd_b, x, ratio=r, least_squares=False).model,
            r,
        )
    return study


__all__ = ["DifferentInitStudy", "different_init_study"]
