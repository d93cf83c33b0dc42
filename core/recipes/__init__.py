"""Figure recipes: each page panel is one plain core function and one figure function.

A recipe kind is registered once, here or in a ``core.recipes.<area>`` module::

    register_recipe(
        "cluster_k_selection",
        compute=ppp_clustering,          # ppp_clustering(zoo, **args) -> result (numbers, arrays)
        figure=ppp_k_selection_figure,   # ppp_k_selection_figure(result, **figure_args) -> Figure
        description="Choosing the number of clusters with PPP, BIC and AIC",
        check=check_ppp_args,            # validates args without computing anything
        model_args=("model",),           # args naming zoo models: their sha256 keys the caches
    )

Everything else is derived from that entry: ``ui.cache.recipe_result`` is the one cached caller
of every compute function, ``ui.figure_panel.show_figure(fig, recipe=(kind, args))`` records the
provenance, and ``core.notebook_export`` writes one generic notebook (import the two functions,
call them with ``ARGS``). Adding a figure costs three files: the core function (a
``core/recipes/<area>.py`` module), the figure function (``core/figures/<area>.py``) and the page.

Args are JSON (ids, numbers, strings, lists): the same dict drives the page, the cache key, the
stored figure and the notebook. ``figure_args`` (e.g. a title) go to the figure function only.
"""

from __future__ import annotations

import importlib
import inspect
import json
import pkgutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

ArgsCheck = Callable[[Mapping[str, Any]], None]
Fingerprint = Callable[[Any, Mapping[str, Any]], tuple[str, ...]]


@dataclass(frozen=True)
class Recipe:
    """One kind of figure: how its data is computed and how it is drawn."""

    kind: str
    compute: Callable[..., Any]  # compute(zoo, **compute_args) -> result
    figure: Callable[..., Any]  # figure(result, **figure_args) -> plotly Figure
    description: str
    figure_args: tuple[str, ...] = ()
    model_args: tuple[str, ...] = ()
    check: ArgsCheck | None = None
    # fingerprint(zoo, compute_args) -> strings that change when the result's inputs change, for
    # results that read models the args do not name (a whole suite zoo); keys the caches
    fingerprint: Fingerprint | None = None

    def split(self, args: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """``args`` as (compute args, figure args)."""
        compute = {k: v for k, v in args.items() if k not in self.figure_args}
        return compute, {k: v for k, v in args.items() if k in self.figure_args}

    def model_ids(self, args: Mapping[str, Any]) -> list[str]:
        """The zoo model ids named by ``args`` (in ``model_args`` order, empty values skipped)."""
        ids: list[str] = []
        for name in self.model_args:
            value = args.get(name)
            if isinstance(value, str) and value:
                ids.append(value)
            elif isinstance(value, (list, tuple)):
                ids.extend(v for v in value if isinstance(v, str) and v)
        return ids


RECIPES: dict[str, Recipe] = {}


def register_recipe(
    kind: str,
    *,
    compute: Callable[..., Any],
    figure: Callable[..., Any],
    description: str,
    figure_args: tuple[str, ...] = (),
    model_args: tuple[str, ...] = (),
    check: ArgsCheck | None = None,
    fingerprint: Fingerprint | None = None,
) -> Recipe:
    """Register the recipe ``kind``; return its entry."""
    if not isinstance(kind, str) or not kind.isidentifier():
        raise ValueError(f"kind must be an identifier-like name, got {kind!r}")
    for name, fn in (("compute", compute), ("figure", figure)):
        if not callable(fn) or "<" in getattr(fn, "__qualname__", "<"):
            raise TypeError(f"{name} must be a module-level function, got {fn!r}")
    params = list(inspect.signature(compute).parameters)
    if not params or params[0] != "zoo":
        raise ValueError(f"compute must take the zoo first, got parameters {params}")
    RECIPES[kind] = Recipe(
        kind,
        compute,
        figure,
        description,
        tuple(figure_args),
        tuple(model_args),
        check,
        fingerprint,
    )
    return RECIPES[kind]


_loaded = False


def load_recipes() -> dict[str, Recipe]:
    """Import every ``core.recipes.<area>`` module (they register their kinds); the registry."""
    global _loaded
    if not _loaded:
        for mod in pkgutil.iter_modules(__path__):
            if not mod.name.startswith("_"):
                importlib.import_module(f"{__name__}.{mod.name}")
        _loaded = True
    return RECIPES


def get_recipe(kind: Any) -> Recipe:
    """The entry of ``kind``; ``ValueError`` naming the registered kinds if there is none."""
    recipes = load_recipes()
    if kind not in recipes:
        raise ValueError(f"recipe kind must be one of {sorted(recipes)}, got {kind!r}")
    return recipes[kind]


def shared_kind(kind: str) -> str:
    """The first registered kind with the compute function of ``kind`` (kinds drawing other
    figures of one computation share it, so caches keyed by it compute once)."""
    entry = get_recipe(kind)
    return next(k for k, e in RECIPES.items() if e.compute is entry.compute)


def check_args(kind: str, args: Any) -> dict[str, Any]:
    """Validate ``args`` of ``kind`` without computing: JSON only, names the compute function
    takes, and the recipe's own value checks. Returns the args as a plain dict."""
    recipe = get_recipe(kind)
    if not isinstance(args, Mapping):
        raise TypeError(f"recipe args must be a mapping, got {type(args).__name__}")
    try:
        plain = json.loads(json.dumps(dict(args)))
    except (TypeError, ValueError) as err:
        raise TypeError(
            f"recipe args must be JSON-serialisable (ids and numbers, never tensors): {err}"
        ) from err
    compute_args, _ = recipe.split(plain)
    try:
        inspect.signature(recipe.compute).bind(None, **compute_args)
    except TypeError as err:
        raise ValueError(
            f"recipe args of {kind!r} do not fit {recipe.compute.__name__}: {err}"
        ) from err
    if recipe.check is not None:  # figure args too (a chart or metric name is checked early)
        recipe.check(plain)
    return plain


def compute(zoo: Any, kind: str, args: Mapping[str, Any]) -> Any:
    """The result of recipe ``kind`` (its compute function on the zoo, figure args left out)."""
    recipe = get_recipe(kind)
    compute_args, _ = recipe.split(check_args(kind, args))
    return recipe.compute(zoo, **compute_args)


def build_figure(kind: str, result: Any, args: Mapping[str, Any]) -> Any:
    """The figure of recipe ``kind`` from its ``result`` (the figure args taken from ``args``)."""
    recipe = get_recipe(kind)
    _, figure_args = recipe.split(args)
    return recipe.figure(result, **figure_args)


def recipe_meta(kind: str, args: Mapping[str, Any]) -> dict[str, Any]:
    """The provenance of a figure drawn from ``(kind, args)``: its kind, then the compute args."""
    recipe = get_recipe(kind)
    compute_args, _ = recipe.split(args)
    return {"kind": kind, **compute_args}
