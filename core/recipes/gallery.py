"""Mixup Gallery page recipes: one mixing computation, three figures (gallery, λ grid of the
first pair, the first pair under every pixel mixer)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from core.figures.mixup import gallery_result_figure, lam_grid_result_figure, methods_result_figure
from core.mixup.gallery import GALLERY_MIXERS

from . import register_recipe
from ._args import choice, need_int, need_names, need_number, need_str, optional

GRID_LAMS = (0.0, 0.2, 0.4, 0.5, 0.6, 0.8, 1.0)  # the λ grid of the first pair


def check_gallery_args(args: Mapping[str, Any]) -> None:
    """The args of :func:`mixup_gallery_panels`, checked without computing."""
    choice(args, "method", GALLERY_MIXERS, None)
    if choice(args, "source", ("photos", "dataset"), "photos") == "photos":
        names = need_names(args, "images")
        if len(names) < 2:
            raise ValueError(f"recipe args['images'] must name at least 2 photos, got {names!r}")
    else:
        need_str(args, "task")
        need_int(args, "n_images", 2)
    optional(args, seed=0, size=8)
    for name in ("alpha", "lam"):
        if args.get(name) is not None:
            need_number(args, name)
    lams = args.get("lams", GRID_LAMS)
    if (
        not isinstance(lams, (list, tuple))
        or not lams
        or not all(isinstance(v, (int, float)) and 0 <= v <= 1 for v in lams)
    ):
        raise ValueError(
            f"recipe args['lams'] must be a non-empty list of λ in [0, 1], got {lams!r}"
        )


def mixup_gallery_panels(
    zoo: Any,
    *,
    method: str,
    source: str = "photos",
    images: list[str] | None = None,
    task: str = "",
    n_images: int = 6,
    alpha: float = 1.0,
    lam: float | None = None,
    per_sample: bool = True,
    seed: int = 0,
    size: int = 96,
    lams: list[float] | tuple[float, ...] = GRID_LAMS,
) -> dict[str, Any]:
    """Mix images with pixel mixer ``method``: the natural photos ``images`` (``source="photos"``,
    ``size`` pixels square) or ``n_images`` stratified test images of ``task``
    (``source="dataset"``), with λ ~ Beta(``alpha``, ``alpha``) or the fixed ``lam``.

    Returns numpy records: ``gallery`` (every image with its partner, masks and label weights),
    ``grid`` (the first pair at each λ of ``lams``) and ``methods`` (the first pair under every
    pixel mixer at ``lam``, 0.5 when λ is drawn). The zoo is not read.
    """
    from core.data import denormalize, get_task, photo_batch, stratified_subset
    from core.mixup.gallery import gallery, lam_grid, methods_side_by_side

    args = dict(method=method, source=source, images=images, task=task, n_images=n_images)
    check_gallery_args(args | dict(alpha=alpha, lam=lam, seed=seed, size=size, lams=list(lams)))
    if source == "photos":
        x, labels = photo_batch(list(images or []), size=size)  # (N, 3, size, size) in [0, 1]
    else:
        ds = get_task(task)
        idx = stratified_subset(ds.y_test, n_images, key=task)  # test sets are class-sorted
        x = denormalize(ds.x_test[idx])  # (N, C, H, W) in [0, 1]
        labels = [f"{i}:{ds.class_names[int(c)]}" for i, c in enumerate(ds.y_test[idx])]
    return {
        "gallery": gallery(
            method, x, labels, alpha=alpha, lam=lam, per_sample=per_sample, seed=seed
        ),
        "grid": lam_grid(method, x[:2], [float(v) for v in lams], seed=seed),
        "methods": methods_side_by_side(x[:2], lam=0.5 if lam is None else lam, seed=seed),
    }


_GALLERY = dict(compute=mixup_gallery_panels, check=check_gallery_args)
register_recipe(
    "mixup_gallery",
    figure=gallery_result_figure,
    description="Mixed images with their label weights",
    **_GALLERY,  # type: ignore[arg-type]
)
register_recipe(
    "mixup_lam_grid",
    figure=lam_grid_result_figure,
    description="One pair of images mixed at each λ of a grid",
    **_GALLERY,  # type: ignore[arg-type]
)
register_recipe(
    "mixup_methods",
    figure=methods_result_figure,
    description="One pair of images mixed by every pixel mixer",
    **_GALLERY,  # type: ignore[arg-type]
)
