"""Feature Geometry page recipes: a model's features on seeded rows of a task split (NC metrics,
ETF comparison, 2-D projections), features of mixed samples, and NC tracked over training."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from core.figures.geometry import (
    etf_result_figure,
    mixup_result_figure,
    nc_run_figure,
    projection_result_figure,
)

from . import register_recipe
from ._args import choice, need_int, need_number, need_str, optional

PROJECTIONS = ("pca", "class_plane", "umap", "tsne")


def check_features_args(args: Mapping[str, Any]) -> None:
    """The args of :func:`feature_geometry` / :func:`feature_projection`, checked without
    computing."""
    need_str(args, "model")
    need_str(args, "task")
    need_int(args, "n", 1)
    choice(args, "split", ("train", "test"), "train")
    optional(args, seed=0)


def check_projection_args(args: Mapping[str, Any]) -> None:
    """The args of :func:`feature_projection`, checked without computing."""
    check_features_args(args)
    choice(args, "method", PROJECTIONS, "pca")


def _report(zoo: Any, model: str, task: str, n: int, split: str, seed: int, device: str) -> Any:
    from core.data import get_task
    from core.geometry import feature_report, sample_rows

    ds = get_task(task)
    x, y = (ds.x_train, ds.y_train) if split == "train" else (ds.x_test, ds.y_test)
    xs, ys = sample_rows(x, y, n, random_state=seed)
    report = feature_report(zoo.load_model(model, device=device), xs, ys, device=device)
    return report | {"class_names": list(ds.class_names)}


def feature_geometry(
    zoo: Any,
    *,
    model: str,
    task: str,
    n: int,
    split: str = "train",
    seed: int = 0,
    device: str = "cpu",
) -> dict[str, Any]:
    """Penultimate features of zoo ``model`` on ``n`` seeded rows of ``task``'s ``split``, with
    their neural-collapse metrics (``nc``), the class-mean Gram against the simplex ETF
    (``gram``, ``ideal``), ``labels``, ``classes`` and ``class_names``."""
    check_features_args(dict(model=model, task=task, n=n, split=split, seed=seed))
    return _report(zoo, model, task, n, split, seed, device)


def feature_projection(
    zoo: Any,
    *,
    model: str,
    task: str,
    n: int,
    split: str = "train",
    seed: int = 0,
    method: str = "pca",
    device: str = "cpu",
) -> dict[str, Any]:
    """:func:`feature_geometry`'s features projected to 2-D by ``method`` ("pca",
    "class_plane", "umap", "tsne"; seeded by ``seed``) with class means and classifier
    directions: ``report`` (the features' record) and ``projection`` (``coords``, ``anchors``,
    ``explained``)."""
    from core.geometry import projection_report

    check_projection_args(dict(model=model, task=task, n=n, split=split, seed=seed, method=method))
    report = _report(zoo, model, task, n, split, seed, device)
    return {"report": report, "projection": projection_report(report, method, random_state=seed)}


def check_mixup_args(args: Mapping[str, Any]) -> None:
    """The args of :func:`mixup_features`, checked without computing."""
    need_str(args, "model")
    need_str(args, "task")
    need_str(args, "mixer")
    optional(args, n=1, seed=0)
    if "alpha" in args and not need_number(args, "alpha") > 0:
        raise ValueError(f"recipe args['alpha'] must be > 0 (Beta(α, α)), got {args['alpha']!r}")
    classes = args.get("classes", [])
    if not isinstance(classes, (list, tuple)) or not all(
        isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in classes
    ):
        raise ValueError(f"recipe args['classes'] must be a list of class indices, got {classes!r}")


def mixup_features(
    zoo: Any,
    *,
    model: str,
    task: str,
    mixer: str,
    alpha: float = 1.0,
    classes: list[int] | None = None,
    n: int = 600,
    seed: int = 0,
    device: str = "cpu",
) -> dict[str, Any]:
    """Features of ``n`` training samples of ``classes`` (empty: all) of ``task`` mixed by
    ``mixer`` with λ ~ Beta(``alpha``, ``alpha``), projected on the plane of the clean class
    means: ``coords``, ``lam``, ``same_class``, ``anchors``, ``classes``, ``class_names``."""
    from core.data import get_task
    from core.geometry import mixup_report

    args = dict(model=model, task=task, mixer=mixer, classes=list(classes or []), n=n, seed=seed)
    check_mixup_args(args | {"alpha": alpha})
    ds = get_task(task)
    report = mixup_report(
        zoo.load_model(model, device=device),
        ds.x_train,
        ds.y_train,
        mixer=mixer,
        alpha=alpha,
        classes=list(classes or []) or None,
        n=n,
        random_state=seed,
        device=device,
    )
    return report | {"class_names": list(ds.class_names)}


def check_run_args(args: Mapping[str, Any]) -> None:
    """The args of :func:`nc_run`, checked without computing."""
    need_str(args, "run")


def nc_run(zoo: Any, *, run: str) -> dict[str, Any]:
    """The neural-collapse metrics per epoch of each method of the stored ``mixup_run`` record
    ``run`` (trained with NC tracking, e.g. by ``core.geometry.train_nc_comparison``):
    ``histories`` (method -> per-epoch NC dicts), with the run's ``task`` and ``arch``."""
    from core.geometry import nc_histories, runs_with_nc

    check_run_args({"run": run})
    runs = runs_with_nc(zoo)
    if run not in runs:
        raise KeyError(
            f"run must be a stored run with NC metrics of {zoo.root}, got {run!r}; "
            f"stored: {list(runs)}"
        )
    record = runs[run]
    return {"histories": nc_histories(record), "task": record["task"], "arch": record["arch"]}


# the three panels of one model's features: cached by its checkpoint, titled by the page
_FEATURES = dict(model_args=("model",), figure_args=("title",))
register_recipe(
    "geometry_projection",
    compute=feature_projection,
    figure=projection_result_figure,
    description="2-D projection of a model's features with class means and classifier directions",
    check=check_projection_args,
    **_FEATURES,  # type: ignore[arg-type]
)
register_recipe(
    "geometry_etf",
    compute=feature_geometry,
    figure=etf_result_figure,
    description="Class-mean geometry of a model's features vs the simplex ETF",
    check=check_features_args,
    **_FEATURES,  # type: ignore[arg-type]
)
register_recipe(
    "geometry_mixup",
    compute=mixup_features,
    figure=mixup_result_figure,
    description="Features of mixed samples on the class-mean plane, coloured by λ",
    check=check_mixup_args,
    **_FEATURES,  # type: ignore[arg-type]
)
register_recipe(
    "geometry_nc_epochs",
    compute=nc_run,
    figure=nc_run_figure,
    description="Neural-collapse metrics per epoch, ERM vs mixup",
    check=check_run_args,
    figure_args=("title",),  # figures stored before the registry carry a title
)
