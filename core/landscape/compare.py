"""Naive vs weight-matched vs activation-matched interpolation of two models, in one call."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from .._checks import check_choice, check_int
from ..align import activation_matching, apply_permutation, spec_for, weight_matching
from ..data import Dataset, stratified_subset
from ..params import StateDict
from ._eval import ProgressFn
from .path import PathResult, interpolate

METHODS = ("naive", "weight matching", "activation matching")


def _train_inputs(data: Dataset | Mapping[str, tuple[Tensor, Tensor]], n: int) -> Tensor:
    if isinstance(data, Dataset):
        x, y = data.x_train, data.y_train
    else:
        x, y = data["train"] if "train" in data else next(iter(data.values()))
    return x[stratified_subset(y, n)]


def align(
    model: nn.Module,
    sd_a: Mapping[str, Tensor],
    sd_b: Mapping[str, Tensor],
    method: str,
    *,
    data: Dataset | Mapping[str, tuple[Tensor, Tensor]] | None = None,
    generator: torch.Generator | None = None,
    am_examples: int = 1000,
    device: str | torch.device = "cpu",
) -> StateDict:
    """Model B permuted to align with model A ("naive" returns B unchanged).

    Args:
        model: the architecture (its permutation spec comes from :func:`core.align.spec_for`).
        sd_a: reference model.
        sd_b: model to align.
        method: "naive", "weight matching" or "activation matching".
        data: training inputs for activation matching (a fixed subset of ``am_examples``).
        generator: permutation order for weight matching.
        am_examples: inputs used by activation matching.
        device: where activation matching runs.
    """
    check_choice("method", method, METHODS)
    check_int("am_examples", am_examples, 1)
    if method == "naive":
        return dict(sd_b)
    spec = spec_for(model)
    if method == "weight matching":
        perm = weight_matching(spec, sd_a, sd_b, generator=generator)
    else:
        if data is None:
            raise ValueError("data is required for activation matching, got None")
        perm = activation_matching(
            model, sd_a, sd_b, _train_inputs(data, am_examples).split(250), spec=spec, device=device
        )
    return apply_permutation(spec, perm, sd_b)


def compare_paths(
    model: nn.Module,
    sd_a: Mapping[str, Tensor],
    sd_b: Mapping[str, Tensor],
    data: Dataset | Mapping[str, tuple[Tensor, Tensor]],
    *,
    methods: Sequence[str] = METHODS,
    n_points: int = 25,
    recompute_bn: bool = False,
    max_examples: int | None = 5000,
    generator: torch.Generator | None = None,
    device: str | torch.device = "cpu",
    progress: ProgressFn | None = None,
) -> dict[str, PathResult]:
    """Interpolate A -> B after each alignment method.

    Args:
        model, sd_a, sd_b, data, n_points, recompute_bn, max_examples, device: as in
            :func:`core.landscape.interpolate`.
        methods: any of "naive", "weight matching", "activation matching".
        generator: permutation order for weight matching.
        progress: ``progress(done, total)`` over all methods' points.

    Returns:
        method -> PathResult (labelled with the method).
    """
    if not methods:
        raise ValueError(f"methods must name at least one of {METHODS}, got none")
    for m in methods:
        check_choice("methods", m, METHODS)
    out: dict[str, PathResult] = {}
    total = len(methods) * n_points
    for i, m in enumerate(methods):
        sd = align(model, sd_a, sd_b, m, data=data, generator=generator, device=device)

        def prog(done: int, _n: int, i: int = i) -> None:
            if progress is not None:
                progress(i * n_points + done, total)

        out[m] = interpolate(
            model,
            sd_a,
            sd,
            data,
            n_points=n_points,
            recompute_bn=recompute_bn,
            max_examples=max_examples,
            device=device,
            label=m,
            progress=prog,
        )
    return out
