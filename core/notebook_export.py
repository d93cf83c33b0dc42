"""From dashboard to notebook: a figure's recipe becomes a small runnable Jupyter notebook.

A recipe is ``(kind, args)`` or ``{"kind": <template name>, "args": {...}}`` that a page passes
to ``show_figure(..., recipe=...)``. A kind of the :mod:`core.recipes` registry gets one generic
notebook: import its compute and figure functions, ``result = compute(zoo, **ARGS)``, ``fig =
figure(result, **FIGURE_ARGS)`` (new figures should be added there). The older kinds still map
to a hand-written template here: a function from the args to notebook cells that recompute
exactly that figure from the workspace through the public API (same models, method,
hyperparameters and seed) and leave it in a variable ``fig``.

Areas not yet moved add their own kinds with :func:`register`::

    @register("mix_paper", description="a mixing paper's headline figure", requires=("run",))
    def _mix_paper(args):
        return [code("from core.mixup.papers import load_paper_runs\\n...\\nfig = ...")]

Templates registered in any ``core.figures.<area>`` module are found too (those modules are
imported before a lookup).
"""

from __future__ import annotations

import importlib
import inspect
import json
import pkgutil
import pprint
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.recipes._args import choice as _choice
from core.recipes._args import need_int as _need_int
from core.recipes._args import need_str as _need_str
from core.recipes._args import optional as _optional

Cell = tuple[str, str]  # ("markdown" | "code", source)
CellsFn = Callable[[Mapping[str, Any]], list[Cell]]


@dataclass(frozen=True)
class Template:
    """How one kind of figure is recomputed in a notebook."""

    kind: str
    description: str
    build: CellsFn
    requires: tuple[str, ...] = ()


TEMPLATES: dict[str, Template] = {}


def register(
    kind: str, *, description: str, requires: tuple[str, ...] = ()
) -> Callable[[CellsFn], CellsFn]:
    """Decorator: register ``fn(args) -> cells`` as the notebook template of ``kind``."""
    if not isinstance(kind, str) or not kind.isidentifier():
        raise ValueError(f"kind must be an identifier-like name, got {kind!r}")

    def deco(fn: CellsFn) -> CellsFn:
        if not callable(fn):
            raise TypeError(f"a template must be callable, got {type(fn).__name__}")
        TEMPLATES[kind] = Template(kind, description, fn, tuple(requires))
        return fn

    return deco


def code(source: str) -> Cell:
    return ("code", source.strip("\n"))


def markdown(source: str) -> Cell:
    return ("markdown", source.strip("\n"))


def literal(value: Any) -> str:
    """``value`` (JSON-like) as Python source."""
    return pprint.pformat(value, width=88, sort_dicts=False)


_loaded = False


def _load_providers() -> None:
    """Import every ``core.figures`` submodule so that area templates register themselves, and
    give every kind of the :mod:`core.recipes` registry the generic template."""
    global _loaded
    if _loaded:
        return
    from core.recipes import load_recipes

    for kind, entry in load_recipes().items():
        TEMPLATES[kind] = Template(kind, entry.description, _recipe_cells)
    import core.figures as figures_pkg

    for mod in pkgutil.iter_modules(figures_pkg.__path__):
        if not mod.name.startswith("_") and mod.name != "vendor":
            try:
                importlib.import_module(f"core.figures.{mod.name}")
            except ImportError:  # an area module that is still being written must not break this
                continue
    _loaded = True


def as_recipe(recipe: Any) -> dict[str, Any]:
    """A recipe as ``{"kind": ..., "args": {...}}``; pages may pass ``(kind, args)``."""
    if isinstance(recipe, tuple) and len(recipe) == 2:
        return {"kind": recipe[0], "args": recipe[1]}
    if not isinstance(recipe, Mapping):
        raise TypeError(
            "recipe must be a (kind, args) pair or a mapping with 'kind' and 'args', "
            f"got {type(recipe).__name__}"
        )
    return dict(recipe)


def check_recipe(recipe: Any) -> tuple[Template, dict[str, Any]]:
    """Validate a recipe; return its template and its args.

    Raises:
        TypeError: not a mapping, or args not a mapping / not JSON-serialisable.
        ValueError: unknown kind or missing required args.
    """
    recipe = as_recipe(recipe)
    _load_providers()
    kind = recipe.get("kind")
    if kind not in TEMPLATES:
        raise ValueError(f"recipe kind must be one of {sorted(TEMPLATES)}, got {kind!r}")
    args = recipe.get("args", {})
    if not isinstance(args, Mapping):
        raise TypeError(f"recipe args must be a mapping, got {type(args).__name__}")
    try:
        json.dumps(args)
    except (TypeError, ValueError) as err:
        raise TypeError(
            f"recipe args must be JSON-serialisable (ids and numbers, never tensors): {err}"
        ) from err
    tpl = TEMPLATES[kind]
    if tpl.build is _recipe_cells:
        from core.recipes import check_args

        return tpl, check_args(kind, args)
    missing = [a for a in tpl.requires if a not in args]
    if missing:
        raise ValueError(
            f"recipe of kind {kind!r} needs args {list(tpl.requires)}, missing {missing}"
        )
    return tpl, dict(args)


def notebook_for(
    recipe: Mapping[str, Any], *, workspace: str | Path | None = None, title: str | None = None
) -> Any:
    """The notebook (an ``nbformat`` v4 node, no outputs) that recomputes the recipe's figure.

    Args:
        recipe: ``{"kind": ..., "args": {...}}``.
        workspace: the workspace holding the models (default: ``core.zoo.default_workspace()``
            at run time).
        title: first heading of the notebook (e.g. the figure's caption).
    """
    import nbformat

    tpl, args = check_recipe(recipe)
    recipe = as_recipe(recipe)
    ws = literal(str(Path(workspace).expanduser().resolve())) if workspace is not None else None
    heading = title or tpl.description
    figure_args: dict[str, Any] = {}
    if tpl.build is _recipe_cells:
        from core.recipes import get_recipe

        args, figure_args = get_recipe(tpl.kind).split(args)
    cells: list[Cell] = [
        markdown(
            f"# {heading}\n\nGenerated by Mixmerge Workbench from the recipe below: it recomputes "
            "the figure from the workspace through the public `core` API (same models, method, "
            f"hyperparameters and seed).\n\n```json\n{json.dumps(dict(recipe), indent=2)}\n```"
        ),
        code(
            "from core.device import configure_threads\nfrom core.zoo import Zoo"
            + ("" if ws else ", default_workspace")
            + f"\n\nconfigure_threads()\nWORKSPACE = {ws or 'default_workspace()'}\n"
            f"zoo = Zoo(WORKSPACE)\nARGS = {literal(args)}"
            + (f"\nFIGURE_ARGS = {literal(figure_args)}" if figure_args else "")
        ),
        *(
            _recipe_cells(args, kind=tpl.kind, figure_args=figure_args)
            if tpl.build is _recipe_cells
            else tpl.build(args)
        ),
        code("from core.figures import figure_data\n\nfig.show()\nfigure_data(fig).head()"),
    ]
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nb.metadata["mixmerge"] = {"recipe": dict(recipe)}
    for kind, src in cells:
        nb.cells.append(
            nbformat.v4.new_code_cell(src) if kind == "code" else nbformat.v4.new_markdown_cell(src)
        )
    nbformat.validate(nb)
    return nb


def notebook_bytes(recipe: Mapping[str, Any], **kwargs: Any) -> bytes:
    """:func:`notebook_for` serialised as ``.ipynb`` bytes (for download buttons)."""
    import nbformat

    return str(nbformat.writes(notebook_for(recipe, **kwargs))).encode()


def write_notebook(recipe: Mapping[str, Any], path: str | Path, **kwargs: Any) -> Path:
    """Write :func:`notebook_for` to ``path`` (``.ipynb`` added if missing); return the path."""
    from core.zoo import atomic_write_bytes

    p = Path(path)
    if p.suffix != ".ipynb":
        p = p.with_name(p.name + ".ipynb")
    p.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(p, notebook_bytes(recipe, **kwargs))
    return p


# ---------------------------------------------------------------------------- argument checks
def _device_cell() -> Cell:
    """``DEVICE``: the page's device, or the CPU where the notebook runs without that GPU."""
    return code(
        "import torch\n\n"
        'DEVICE = ARGS.get("device", "cpu")\n'
        'if DEVICE.startswith("cuda") and not torch.cuda.is_available():\n'
        '    DEVICE = "cpu"  # computed on a GPU: numbers may differ in the last digits'
    )


# ---------------------------------------------------------------------------- mixup gallery
def _mixup_images_cells(args: Mapping[str, Any], what: str) -> list[Cell]:
    """``images`` and ``labels`` as the Mixup Gallery loads them, after checking the args."""
    _need_str(args, "method")
    _optional(args, seed=0)
    source = _choice(args, "source", ("photos", "dataset"), "photos")
    if source == "photos":
        load = (
            "from core.data import photo_batch\n\n"
            'images, labels = photo_batch(list(ARGS["images"]), size=ARGS.get("size", 96))  # (N, 3, H, W)'
        )
    else:
        _need_str(args, "task")
        _need_int(args, "n_images", 2)
        load = (
            "from core.data import denormalize, get_task, stratified_subset\n\n"
            'ds = get_task(ARGS["task"])\n'
            'idx = stratified_subset(ds.y_test, ARGS["n_images"], key=ARGS["task"])\n'
            "images = denormalize(ds.x_test[idx])  # (N, 1, 28, 28) in [0, 1]\n"
            'labels = [f"{i}:{ds.class_names[int(c)]}" for i, c in enumerate(ds.y_test[idx])]'
        )
    return [markdown(f"{what} Same images, seed and λ as the Mixup Gallery."), code(load)]


@register(
    "mixup_gallery",
    description="Mixed images with their label weights",
    requires=("method", "images"),
)
def _mixup_gallery(args: Mapping[str, Any]) -> list[Cell]:
    """args: ``method`` (a pixel mixer), ``images`` (photo names from ``core.data.load_photos``;
    with ``source="dataset"`` only a record of the labels), ``alpha``, ``lam`` (None: drawn
    from Beta(α, α)), ``per_sample``, ``seed``, ``size``; ``source`` ("photos", the default, or
    "dataset": the first ``n_images`` test images of ``task``, as on the page)."""
    return [
        *_mixup_images_cells(args, "Mix the images with the recipe's mixer and α / λ."),
        code(
            "from core.figures.mixup import gallery_figure\n"
            "from core.mixup.gallery import gallery\n\n"
            'data = gallery(ARGS["method"], images, labels, alpha=ARGS.get("alpha", 1.0),\n'
            '               lam=ARGS.get("lam"), per_sample=ARGS.get("per_sample", True), seed=ARGS.get("seed", 0))\n'
            "fig = gallery_figure(data)"
        ),
    ]


@register(
    "mixup_lam_grid",
    description="One pair of images mixed at each λ of a grid",
    requires=("method", "images", "lams"),
)
def _mixup_lam_grid(args: Mapping[str, Any]) -> list[Cell]:
    """args: as ``mixup_gallery`` (the first two images are the pair) plus ``lams`` (the
    requested λ values)."""
    lams = args.get("lams")
    if not isinstance(lams, (list, tuple)) or not lams:
        raise ValueError(f"recipe args['lams'] must be a non-empty list of λ values, got {lams!r}")
    return [
        *_mixup_images_cells(args, "Mix the first two images at each λ (same seed for all)."),
        code(
            "from core.figures.mixup import lam_grid_figure\n"
            "from core.mixup.gallery import lam_grid\n\n"
            'data = lam_grid(ARGS["method"], images[:2], ARGS["lams"], seed=ARGS.get("seed", 0))\n'
            "fig = lam_grid_figure(data)"
        ),
    ]


@register(
    "mixup_methods",
    description="One pair of images mixed by every pixel mixer",
    requires=("method", "images"),
)
def _mixup_methods(args: Mapping[str, Any]) -> list[Cell]:
    """args: as ``mixup_gallery``; ``lam`` is the requested λ (None: each mixer's default)."""
    return [
        *_mixup_images_cells(args, "Mix the first two images with every pixel mixer."),
        code(
            "from core.figures.mixup import methods_figure\n"
            "from core.mixup.gallery import methods_side_by_side\n\n"
            'lam = {} if ARGS.get("lam") is None else {"lam": ARGS["lam"]}\n'
            'data = methods_side_by_side(images[:2], seed=ARGS.get("seed", 0), **lam)\n'
            "fig = methods_figure(data)"
        ),
    ]


# ---------------------------------------------------------------------------- feature geometry
def _geometry_report_cells(args: Mapping[str, Any]) -> list[Cell]:
    _need_str(args, "model")
    _need_str(args, "task")
    _need_int(args, "n", 1)
    _choice(args, "split", ("train", "test"), "train")
    return [
        markdown(
            "Features of the model on the same seeded rows of the split as the Feature Geometry "
            "page, with their neural-collapse metrics (`report['nc']`)."
        ),
        _device_cell(),
        code(
            "from core.data import get_task\n"
            "from core.geometry import feature_report, projection_report, sample_rows\n\n"
            'ds = get_task(ARGS["task"])\n'
            'x, y = (ds.x_train, ds.y_train) if ARGS.get("split", "train") == "train" else (ds.x_test, ds.y_test)\n'
            'xs, ys = sample_rows(x, y, ARGS["n"], random_state=ARGS.get("seed", 0))\n'
            'model = zoo.load_model(ARGS["model"], device=DEVICE)\n'
            "report = feature_report(model, xs, ys, device=DEVICE)\n"
            'report["nc"]'
        ),
    ]


@register(
    "geometry_projection",
    description="2-D projection of a model's features with class means and classifier directions",
    requires=("model", "task", "n"),
)
def _geometry_projection(args: Mapping[str, Any]) -> list[Cell]:
    """args: ``model`` (zoo id), ``task``, ``split`` ("test" or "train"), ``n`` (rows),
    ``seed`` (rows and projection), ``method`` ("pca", "class_plane", "umap", "tsne"),
    ``device``, ``title``."""
    method = _choice(args, "method", ("pca", "class_plane", "umap", "tsne"), "pca")
    title = args.get("title", f"{args.get('model')} features on {args.get('task')} ({method})")
    return [
        *_geometry_report_cells(args),
        code(
            "from core.figures.geometry import projection_figure\n\n"
            'proj = projection_report(report, ARGS.get("method", "pca"), random_state=ARGS.get("seed", 0))\n'
            'fig = projection_figure(proj["coords"], report["labels"], class_names=list(ds.class_names),\n'
            '                        anchors=proj["anchors"], anchor_classes=report["classes"].tolist(),\n'
            f"                        title={title!r})"
        ),
    ]


@register(
    "geometry_etf",
    description="Class-mean geometry of a model's features vs the simplex ETF",
    requires=("model", "task", "n"),
)
def _geometry_etf(args: Mapping[str, Any]) -> list[Cell]:
    """args: as ``geometry_projection`` without ``method``."""
    return [
        *_geometry_report_cells(args),
        code(
            "from core.figures.geometry import etf_figure\n\n"
            'fig = etf_figure(report["gram"], report["ideal"],\n'
            '                 class_names=[ds.class_names[c] for c in report["classes"]])'
        ),
    ]


@register(
    "geometry_mixup",
    description="Features of mixed samples on the class-mean plane, coloured by λ",
    requires=("model", "task", "mixer"),
)
def _geometry_mixup(args: Mapping[str, Any]) -> list[Cell]:
    """args: ``model`` (zoo id), ``task``, ``mixer``, ``alpha``, ``classes`` (class indices;
    empty: all), ``n`` (mixed training samples), ``seed``, ``device``, ``title``."""
    _need_str(args, "model")
    _need_str(args, "task")
    _need_str(args, "mixer")
    _optional(args, n=1, seed=0)
    classes = args.get("classes", [])
    if not isinstance(classes, (list, tuple)) or not all(
        isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in classes
    ):
        raise ValueError(f"recipe args['classes'] must be a list of class indices, got {classes!r}")
    title = args.get("title", f"{args['mixer']} features of {args['model']} (class-mean plane)")
    return [
        markdown(
            "Mix training samples of the chosen classes with the page's mixer, α and seed, and "
            "project their features on the plane of the clean class means."
        ),
        _device_cell(),
        code(
            "from core.data import get_task\n"
            "from core.figures.geometry import mixup_lambda_figure\n"
            "from core.geometry import mixup_report\n\n"
            'ds = get_task(ARGS["task"])\n'
            'model = zoo.load_model(ARGS["model"], device=DEVICE)\n'
            'mr = mixup_report(model, ds.x_train, ds.y_train, mixer=ARGS["mixer"], alpha=ARGS.get("alpha", 1.0),\n'
            '                  classes=list(ARGS.get("classes", [])) or None, n=ARGS.get("n", 600),\n'
            '                  random_state=ARGS.get("seed", 0), device=DEVICE)\n'
            'fig = mixup_lambda_figure(mr["coords"], mr["lam"], mr["same_class"], anchors=mr["anchors"],\n'
            '                          class_names=list(ds.class_names), anchor_classes=mr["classes"].tolist(),\n'
            f"                          title={title!r})"
        ),
    ]


@register(
    "geometry_nc_epochs",
    description="Neural-collapse metrics per epoch, ERM vs mixup",
    requires=("run",),
)
def _geometry_nc_epochs(args: Mapping[str, Any]) -> list[Cell]:
    """args: ``run`` (a stored ``mixup_run`` record trained with NC tracking), ``title``."""
    _need_str(args, "run")
    title = args.get("title", "Neural collapse per epoch")
    return [
        markdown(
            "NC metrics were tracked every epoch while the methods trained, and stored with the "
            "run in the workspace; the notebook loads that record as the Feature Geometry page does."
        ),
        code(
            "from core.figures.geometry import nc_epochs_figure\n"
            "from core.geometry import nc_histories, runs_with_nc\n\n"
            "runs = runs_with_nc(zoo)\n"
            'if ARGS["run"] not in runs:\n'
            "    raise KeyError(f\"no run with NC metrics {ARGS['run']!r} in {WORKSPACE}; stored: {list(runs)}\")\n"
            'run = runs[ARGS["run"]]\n'
            'print({k: run[k] for k in ("task", "arch", "seed", "config", "n_train")})\n'
            f"fig = nc_epochs_figure(nc_histories(run), title={title!r})"
        ),
    ]


# ---------------------------------------------------------------------------- mixing papers
@register(
    "mix_paper",
    description="A mixing paper's headline figure from its stored study record",
    requires=("run",),
)
def _mix_paper(args: Mapping[str, Any]) -> list[Cell]:
    """args: ``run`` (a stored ``mix_paper_run`` record id), optional ``rerun`` (bool)."""
    _need_str(args, "run")
    rerun = bool(args.get("rerun", False))
    return [
        markdown(
            "The Mixup Papers page draws this figure from the study record stored in the "
            "workspace (config, seeds, per-seed curves and the headline numbers with CIs). "
            "Set `RERUN = True` to train the study again from the stored config and seeds."
        ),
        code(
            "from core.figures.mix_papers import FIGURES\n"
            "from core.mixup.papers import load_paper_runs, rerun\n\n"
            "runs = load_paper_runs(zoo)\n"
            'if ARGS["run"] not in runs:\n'
            "    raise KeyError(f\"no mixing-paper run {ARGS['run']!r} in {WORKSPACE}; stored: {list(runs)}\")\n"
            'record = runs[ARGS["run"]]\n'
            f"RERUN = {rerun}\n"
            "if RERUN:\n"
            "    record = rerun(record)\n"
            'print(record["study"], record["config"], record.get("seeds"))\n'
            'fig = FIGURES[record["study"]](record)'
        ),
    ]


# ---------------------------------------------------------------------------- registered recipes
def _recipe_cells(
    args: Mapping[str, Any], kind: str = "", figure_args: Mapping[str, Any] | None = None
) -> list[Cell]:
    """The one template of every :mod:`core.recipes` kind: import its compute and figure
    functions, call the first with ``ARGS`` and the second with its result."""
    from core.recipes import get_recipe

    entry = get_recipe(kind)
    compute, figure = entry.compute, entry.figure
    doc = " ".join((inspect.getdoc(compute) or entry.description).split("\n\n")[0].split())
    device = (
        'if ARGS.get("device", "cpu").startswith("cuda") and not torch.cuda.is_available():\n'
        '    ARGS["device"] = "cpu"  # computed on a GPU: numbers may differ in the last digits\n'
        if "device" in args
        else ""
    )
    return [
        markdown(f"`{compute.__name__}`: {doc}"),
        code(
            ("import torch\n\n" if device else "")
            + f"from {compute.__module__} import {compute.__name__}\n"
            f"from {figure.__module__} import {figure.__name__}\n\n{device}"
            f"result = {compute.__name__}(zoo, **ARGS)\n"
            f"fig = {figure.__name__}(result" + (", **FIGURE_ARGS)" if figure_args else ")")
        ),
    ]
