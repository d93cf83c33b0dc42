"""Interpolation page recipes: paths between two models (naive, weight- and activation-matched)
with their barriers, the plane through three models and a trained Bezier curve.

``progress`` and ``on_level`` are runtime arguments (the page's progress bar and coarse-to-fine
preview), never part of the JSON args.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from core.figures.landscape import (
    BARRIER_TITLES,
    curve_figure,
    interpolation_barriers_figure,
    interpolation_paths_figure,
    plane_figure,
)

from . import register_recipe
from ._args import choice, need_ids, need_number, need_str, optional

PATH_METHODS = ("naive", "weight matching", "activation matching")
RUNTIME_ARGS = ("progress", "on_level")


def _check_common(args: Mapping[str, Any]) -> None:
    bad = [name for name in RUNTIME_ARGS if name in args]
    if bad:
        raise ValueError(f"recipe args must not name the runtime arguments {bad} (JSON only)")
    need_ids(args, "models", 2)
    need_str(args, "task")
    if args.get("device") is not None:
        need_str(args, "device")
    optional(args, max_examples=1, seed=0)


def _generator(seed: int) -> Any:
    import torch

    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------------------- paths
def check_paths_args(args: Mapping[str, Any]) -> None:
    _check_common(args)
    methods = args.get("methods", list(PATH_METHODS))
    if not isinstance(methods, (list, tuple)) or not methods:
        raise ValueError(f"recipe args['methods'] must be a non-empty list, got {methods!r}")
    optional(args, n_points=2)
    choice(args, "column", tuple(BARRIER_TITLES), "loss_barrier")


def interpolation_paths(
    zoo: Any,
    *,
    models: list[str],
    task: str,
    methods: list[str] | None = None,
    n_points: int = 25,
    recompute_bn: bool = False,
    max_examples: int | None = 5000,
    seed: int = 0,
    device: str = "cpu",
    progress: Any = None,
) -> dict[str, Any]:
    """Align model B to model A with each of ``methods`` ("naive", "weight matching",
    "activation matching"; ``seed`` orders weight matching) and evaluate the straight line from
    A to B at ``n_points`` points on a seeded subset of ``max_examples`` per split (None: all).

    Returns ``paths`` (method -> ``core.landscape.PathResult``) and ``barriers`` (their
    ``BarrierReport``, every definition)."""
    from core.data import get_task
    from core.landscape import barrier, compare_paths

    id_a, id_b = models
    paths = compare_paths(
        zoo.load_model(id_a, device=device),
        zoo.state_dict(id_a),
        zoo.state_dict(id_b),
        get_task(task),
        methods=tuple(methods or PATH_METHODS),
        n_points=n_points,
        recompute_bn=recompute_bn,
        max_examples=max_examples,
        generator=_generator(seed),
        device=device,
        progress=progress,
    )
    return {"paths": paths, "barriers": [barrier(p) for p in paths.values()]}


# ---------------------------------------------------------------------------- plane
def check_plane_args(args: Mapping[str, Any]) -> None:
    _check_common(args)
    need_str(args, "third")
    optional(args, resolution=2)
    choice(args, "metric", ("loss", "accuracy"), "loss")
    choice(args, "split", ("test", "train"), "test")


def interpolation_plane(
    zoo: Any,
    *,
    models: list[str],
    third: str,
    task: str,
    resolution: int = 21,
    recompute_bn: bool = False,
    max_examples: int | None = 500,
    seed: int = 0,
    device: str = "cpu",
    progress: Any = None,
    on_level: Any = None,
) -> Any:
    """Loss and accuracy on the plane through A, B and ``third`` (a zoo id, or ``"wm:<id>"`` /
    ``"am:<id>"``: that model weight- / activation-matched to A, seeded by ``seed``) on a
    ``resolution`` × ``resolution`` grid, a seeded subset of ``max_examples`` per split.

    Returns a ``core.landscape.PlaneResult``."""
    from core.data import get_task
    from core.landscape import align, plane

    id_a = models[0]
    ds = get_task(task)
    net = zoo.load_model(id_a, device=device)
    sds, labels = [], []
    for mid in (*models, third):
        if mid[:3] in ("wm:", "am:"):  # B permuted to align with A
            method = "weight matching" if mid.startswith("wm:") else "activation matching"
            sd_a, sd_b = zoo.state_dict(id_a), zoo.state_dict(mid[3:])
            gen = _generator(seed)
            sds.append(align(net, sd_a, sd_b, method, data=ds, generator=gen, device=device))
            labels.append(f"π({mid[3:]})")
        else:
            sds.append(zoo.state_dict(mid))
            labels.append(mid)
    return plane(
        net,
        sds,
        ds,
        resolution=resolution,
        labels=labels,
        recompute_bn=recompute_bn,
        max_examples=max_examples,
        device=device,
        progress=progress,
        on_level=on_level,
    )


def third_fingerprint(zoo: Any, args: Mapping[str, Any]) -> tuple[str, ...]:
    """The checksum of the third model (of the model a ``"wm:"`` / ``"am:"`` third aligns)."""
    third = str(args["third"])
    return (zoo.get(third[3:] if third[:3] in ("wm:", "am:") else third).sha256,)


# ---------------------------------------------------------------------------- Bezier curve
def check_bezier_args(args: Mapping[str, Any]) -> None:
    _check_common(args)
    optional(args, steps=1, n_points=2)
    if "lr" in args:
        need_number(args, "lr")


def interpolation_bezier(
    zoo: Any,
    *,
    models: list[str],
    task: str,
    aligned: bool = False,
    steps: int = 400,
    lr: float = 1e-3,
    n_points: int = 25,
    max_examples: int | None = 5000,
    seed: int = 0,
    device: str = "cpu",
    progress: Any = None,
) -> Any:
    """Train the bend θ of φ(t) = (1−t)²θ_A + 2t(1−t)θ + t²θ_B (Garipov et al. 2018) for
    ``steps`` Adam steps at ``lr`` on random t (seeded by ``seed``; B weight-matched to A first
    when ``aligned``), then evaluate the curve and the straight line at ``n_points`` points.

    Returns a ``core.landscape.CurveResult``."""
    from core.data import get_task
    from core.landscape import align, bezier_curve

    id_a, id_b = models
    net = zoo.load_model(id_a, device=device)
    sd_a, sd_b = zoo.state_dict(id_a), zoo.state_dict(id_b)
    if aligned:
        sd_b = align(net, sd_a, sd_b, "weight matching", generator=_generator(seed))
    return bezier_curve(
        net,
        sd_a,
        sd_b,
        get_task(task),
        steps=steps,
        lr=lr,
        n_points=n_points,
        generator=_generator(seed),
        max_examples=max_examples,
        device=device,
        progress=progress,
    )


_PATHS = dict(compute=interpolation_paths, check=check_paths_args, model_args=("models",))
register_recipe(
    "interpolation_paths",
    figure=interpolation_paths_figure,
    description="Loss and accuracy along the paths between two models",
    figure_args=("title",),
    **_PATHS,  # type: ignore[arg-type]
)
register_recipe(
    "interpolation_barriers",
    figure=interpolation_barriers_figure,
    description="Barriers along the paths between two models, one definition",
    figure_args=("column", "title"),  # a title: recipes stored with the paths figure's args
    **_PATHS,  # type: ignore[arg-type]
)
register_recipe(
    "interpolation_plane",
    compute=interpolation_plane,
    figure=plane_figure,
    description="Loss or accuracy on the plane through three models",
    figure_args=("metric", "split"),
    model_args=("models",),
    check=check_plane_args,
    fingerprint=third_fingerprint,
)
register_recipe(
    "interpolation_bezier",
    compute=interpolation_bezier,
    figure=curve_figure,
    description="A trained quadratic Bezier curve between two models vs the straight line",
    model_args=("models",),
    check=check_bezier_args,
)
