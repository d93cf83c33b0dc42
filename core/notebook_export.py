"""From dashboard to notebook: a figure's recipe becomes a small runnable Jupyter notebook.

A recipe is ``(kind, args)`` or ``{"kind": <template name>, "args": {...}}`` that a page passes
to ``show_figure(..., recipe=...)``. A kind of the :mod:`core.recipes` registry gets one generic
notebook: import its compute and figure functions, ``result = compute(zoo, **ARGS)``, ``fig =
figure(result, **FIGURE_ARGS)`` (new figures should be added there). The older kinds still map
to a hand-written template here: a function from the args to notebook cells that recompute
exactly that figure from the workspace through the public API (same models, method,
hyperparameters and seed) and leave it in a variable ``fig``.

Areas not yet moved add their own kinds with :func:`register`::

    @register("merge_accuracy", description="per-task accuracy of a merge", requires=("method",))
    def _merge_cells(args):
        return [code("from core.merge import merge\\n...\\nfig = ...")]

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
from core.recipes._args import need_ids as _need_ids
from core.recipes._args import need_int as _need_int
from core.recipes._args import need_names as _need_names
from core.recipes._args import need_number as _need_number
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


# ---------------------------------------------------------------------------- merge lab
def _merge_lab_cells(args: Mapping[str, Any], what: str) -> list[Cell]:
    """Check the lab args and build ``lab``: the Merge Lab's models, base and seeded subset.

    args: ``models`` (zoo ids), ``base`` (id or None), ``n_per_task``, ``random_state``,
    ``align`` ("none", "weight" or "activation": the page's "Align first")."""
    _need_names(args, "models")
    _choice(args, "align", ("none", "weight", "activation"), "none")
    if args.get("base") is not None:
        _need_str(args, "base")
    _optional(args, n_per_task=1, random_state=0)
    return [
        markdown(
            f"{what} The models and the seeded evaluation subset of each task are those of the "
            "Merge Lab; data-dependent inputs (Fisher, Gram matrices...) are computed by the lab "
            "as on the page."
        ),
        code(
            "from core.merge_eval import DEFAULT_N_PER_TASK, lab_from_zoo\n\n"
            'lab = lab_from_zoo(zoo, ARGS["models"], base_id=ARGS.get("base"),\n'
            '                   n_per_task=ARGS.get("n_per_task", DEFAULT_N_PER_TASK),\n'
            '                   random_state=ARGS.get("random_state", 0), device="cpu",\n'
            '                   align=ARGS.get("align", "none"))'
        ),
    ]


@register(
    "merge_accuracy",
    description="Per-task accuracy of a merged model",
    requires=("models", "method"),
)
def _merge_accuracy(args: Mapping[str, Any]) -> list[Cell]:
    """args: ``models`` (zoo ids), ``base`` (id or None), ``method``, ``hyperparameters``,
    ``seed``, ``n_per_task``, ``random_state``, ``full``, ``recompute_bn``, ``title``,
    ``chart`` ("bars", the default, or "radar")."""
    title = args.get("title", "Per-task accuracy")
    chart = _choice(args, "chart", ("bars", "radar"), "bars")
    figure_fn = "task_radar_figure" if chart == "radar" else "task_accuracy_figure"
    return [
        *_merge_lab_cells(args, "Merge the models with the recipe's method and hyperparameters."),
        code(
            f"from core.figures.merge import {figure_fn}\n\n"
            'result = lab.run(ARGS["method"], ARGS.get("hyperparameters", {}), full=ARGS.get("full", False),\n'
            '                 seed=ARGS.get("seed", 0), recompute_bn=ARGS.get("recompute_bn", False))\n'
            f"fig = {figure_fn}(result, title={title!r})"
        ),
    ]


@register(
    "merge_landscape",
    description="Accuracy over the λ1 × λ2 grid of two task vectors",
    requires=("models", "base", "pair", "low", "high", "n_points"),
)
def _merge_landscape(args: Mapping[str, Any]) -> list[Cell]:
    """args: the lab's (``models``, ``base``, ``n_per_task``, ``random_state``), ``pair`` (the
    two model ids on the λ1 and λ2 axes), ``low``, ``high``, ``n_points`` (the grid of both
    axes), ``full``, ``metric`` ("average", "normalized" or a task name); ``method`` and
    ``hyperparameters`` mark the sliders' point for task arithmetic."""
    cells = _merge_lab_cells(args, "Evaluate θ₀ + λ1·τ_i + λ2·τ_j over the grid.")
    _need_str(args, "base")
    pair = _need_ids(args, "pair", 2)
    if pair[0] == pair[1] or not set(pair) <= set(args["models"]):
        raise ValueError(
            f"recipe args['pair'] must be two different ids of args['models'], got {pair!r}"
        )
    if not _need_number(args, "low") < _need_number(args, "high"):
        raise ValueError(
            f"recipe args['low'] must be below args['high'], got {args['low']!r}, {args['high']!r}"
        )
    _need_int(args, "n_points", 2)
    return [
        *cells,
        code(
            "from core.figures.merge import landscape_figure\n"
            "from core.merge_eval import coefficient_landscape, effective_coefficients, linear_grid\n\n"
            'pair = tuple(ARGS["models"].index(m) for m in ARGS["pair"])\n'
            'lams = linear_grid(ARGS["low"], ARGS["high"], ARGS["n_points"])\n'
            'land = coefficient_landscape(lab, pair, lams=lams, full=ARGS.get("full", False))\n'
            'coeffs = effective_coefficients(ARGS.get("method", ""), ARGS.get("hyperparameters", {}), len(ARGS["models"]))\n'
            "point = None if coeffs is None else (coeffs[pair[0]], coeffs[pair[1]])\n"
            'print("best grid point (λ1, λ2, average accuracy):", land.best())\n'
            'fig = landscape_figure(land, point=point, metric=ARGS.get("metric", "average"))'
        ),
    ]


@register(
    "merge_sweep",
    description="Accuracy of a merge as one hyperparameter varies",
    requires=("models", "method", "param", "n_points"),
)
def _merge_sweep(args: Mapping[str, Any]) -> list[Cell]:
    """args: the lab's, ``method``, ``param`` (the swept hyperparameter), ``n_points`` (over
    its slider range), ``hyperparameters`` (the others; ``param``'s value is the marked
    current one), ``seed``, ``recompute_bn``."""
    cells = _merge_lab_cells(args, "Sweep one hyperparameter over its slider range.")
    _need_str(args, "method")
    _need_str(args, "param")
    _need_int(args, "n_points", 2)
    _optional(args, seed=0)
    return [
        *cells,
        code(
            "from core.figures.merge import sweep_figure\n"
            "from core.merge_eval import sweep, sweep_values\n\n"
            'hyper = ARGS.get("hyperparameters", {})\n'
            'values = sweep_values(ARGS["method"], ARGS["param"], ARGS["n_points"],\n'
            '                      current=hyper.get(ARGS["param"]))\n'
            'result = sweep(lab, ARGS["method"], ARGS["param"], values, hyper, seed=ARGS.get("seed", 0),\n'
            '               recompute_bn=ARGS.get("recompute_bn", False))\n'
            'fig = sweep_figure(result, current=hyper.get(ARGS["param"]))'
        ),
    ]


@register(
    "merge_comparison",
    description="Merge methods compared: accuracy with bootstrap CI and McNemar p-values",
    requires=("models", "methods"),
)
def _merge_comparison(args: Mapping[str, Any]) -> list[Cell]:
    """args: the lab's, ``methods``, ``hyperparameters`` (method -> its hyperparameters; the
    others use their defaults), ``full`` (full test sets, the default), ``seed`` (merge seed
    and bootstrap), ``chart`` ("methods": averages with CIs, the default; "tasks": per task)."""
    cells = _merge_lab_cells(args, "Run every method on the same models and samples.")
    _need_names(args, "methods")
    hyper = args.get("hyperparameters", {})
    if not isinstance(hyper, Mapping) or not all(isinstance(h, Mapping) for h in hyper.values()):
        raise ValueError(
            f"recipe args['hyperparameters'] must map method names to dicts, got {hyper!r}"
        )
    _optional(args, seed=0)
    chart = _choice(args, "chart", ("methods", "tasks"), "methods")
    figure_fn = "comparison_task_figure" if chart == "tasks" else "comparison_figure"
    return [
        *cells,
        code(
            "import pandas as pd\n\n"
            f"from core.figures.merge import {figure_fn}\n"
            "from core.merge_eval import compare_methods\n\n"
            'cmp = compare_methods(lab, ARGS["methods"], hyperparameters=ARGS.get("hyperparameters", {}),\n'
            '                      full=ARGS.get("full", True), random_state=ARGS.get("seed", 0))\n'
            f"fig = {figure_fn}(cmp)\n"
            "pd.DataFrame(cmp.table())"
        ),
    ]


# ---------------------------------------------------------------------------- interpolation
def _paths_cells(args: Mapping[str, Any]) -> list[Cell]:
    """``paths``: B aligned to A by each method, evaluated along the line (as on the page)."""
    _need_ids(args, "models", 2)
    _need_str(args, "task")
    methods = args.get("methods", ["naive", "weight matching", "activation matching"])
    if not isinstance(methods, (list, tuple)) or not methods:
        raise ValueError(f"recipe args['methods'] must be a non-empty list, got {methods!r}")
    _optional(args, n_points=2, max_examples=1, seed=0)
    return [
        markdown(
            "Align B to A with each method and evaluate the straight line from A to B on the same "
            "seeded subset of each split as the Interpolation page (or all examples)."
        ),
        _device_cell(),
        code(
            "from core.data import get_task\n"
            "from core.landscape import compare_paths\n\n"
            'id_a, id_b = ARGS["models"]\n'
            "model = zoo.load_model(id_a, device=DEVICE)\n"
            "paths = compare_paths(\n"
            '    model, zoo.state_dict(id_a), zoo.state_dict(id_b), get_task(ARGS["task"]),\n'
            '    methods=tuple(ARGS.get("methods", ("naive", "weight matching", "activation matching"))),\n'
            '    n_points=ARGS.get("n_points", 25), recompute_bn=ARGS.get("recompute_bn", False),\n'
            '    max_examples=ARGS.get("max_examples", 5000),\n'
            '    generator=torch.Generator().manual_seed(ARGS.get("seed", 0)), device=DEVICE,\n'
            ")"
        ),
    ]


@register(
    "interpolation_paths",
    description="Loss and accuracy along the paths between two models",
    requires=("models", "task"),
)
def _interpolation_paths(args: Mapping[str, Any]) -> list[Cell]:
    """args: ``models`` ([A, B] zoo ids), ``task``, ``methods`` (any of "naive", "weight
    matching", "activation matching"), ``n_points``, ``recompute_bn``, ``max_examples``
    (None: all examples), ``seed`` (weight-matching order), ``device``, ``title``."""
    cells = _paths_cells(args)
    a, b = args["models"]
    title = args.get("title", f"{a} → {b} on {args['task']}")
    return [
        *cells,
        code(
            f"from core.figures.landscape import path_figure\n\nfig = path_figure(paths, title={title!r})"
        ),
    ]


@register(
    "interpolation_barriers",
    description="Barriers along the paths between two models, one definition",
    requires=("models", "task"),
)
def _interpolation_barriers(args: Mapping[str, Any]) -> list[Cell]:
    """args: as ``interpolation_paths`` plus ``column`` (the barrier definition shown, a key
    of ``core.figures.landscape.BARRIER_TITLES``)."""
    from core.figures.landscape import BARRIER_TITLES

    cells = _paths_cells(args)
    _choice(args, "column", tuple(BARRIER_TITLES), "loss_barrier")
    return [
        *cells,
        code(
            "from core.figures.landscape import barrier_figure, barrier_table\n"
            "from core.landscape import barrier\n\n"
            "reports = [barrier(p) for p in paths.values()]\n"
            'fig = barrier_figure(reports, column=ARGS.get("column", "loss_barrier"))\n'
            "barrier_table(reports)  # every definition"
        ),
    ]


@register(
    "interpolation_plane",
    description="Loss or accuracy on the plane through three models",
    requires=("models", "third", "task"),
)
def _interpolation_plane(args: Mapping[str, Any]) -> list[Cell]:
    """args: ``models`` ([A, B]), ``third`` (a zoo id, or "wm:<id>" / "am:<id>": that model
    weight- / activation-matched to A), ``task``, ``resolution``, ``recompute_bn``,
    ``max_examples`` (None: all), ``seed`` (alignment), ``device``, ``metric`` ("loss" or
    "accuracy"), ``split`` ("test" or "train")."""
    _need_ids(args, "models", 2)
    _need_str(args, "third")
    _need_str(args, "task")
    _optional(args, resolution=2, max_examples=1, seed=0)
    _choice(args, "metric", ("loss", "accuracy"), "loss")
    _choice(args, "split", ("test", "train"), "test")
    return [
        markdown(
            "The plane through A, B and a third model (a zoo model, or B aligned to A), on the same "
            "seeded subset of each split as the Interpolation page (or all examples)."
        ),
        _device_cell(),
        code(
            "from core.data import get_task\n"
            "from core.figures.landscape import plane_figure\n"
            "from core.landscape import align, plane\n\n"
            'ds = get_task(ARGS["task"])\n'
            'id_a, id_b = ARGS["models"]\n'
            "model = zoo.load_model(id_a, device=DEVICE)\n"
            "sds, labels = [], []\n"
            'for mid in (id_a, id_b, ARGS["third"]):\n'
            '    if mid[:3] in ("wm:", "am:"):  # B permuted to align with A\n'
            '        method = "weight matching" if mid.startswith("wm:") else "activation matching"\n'
            "        sds.append(align(model, zoo.state_dict(id_a), zoo.state_dict(mid[3:]), method, data=ds,\n"
            '                         generator=torch.Generator().manual_seed(ARGS.get("seed", 0)), device=DEVICE))\n'
            '        labels.append(f"π({mid[3:]})")\n'
            "    else:\n"
            "        sds.append(zoo.state_dict(mid))\n"
            "        labels.append(mid)\n"
            'res = plane(model, sds, ds, resolution=ARGS.get("resolution", 21), labels=labels,\n'
            '            recompute_bn=ARGS.get("recompute_bn", False), max_examples=ARGS.get("max_examples", 500),\n'
            "            device=DEVICE)\n"
            'fig = plane_figure(res, metric=ARGS.get("metric", "loss"), split=ARGS.get("split", "test"))'
        ),
    ]


@register(
    "interpolation_bezier",
    description="A trained quadratic Bezier curve between two models vs the straight line",
    requires=("models", "task"),
)
def _interpolation_bezier(args: Mapping[str, Any]) -> list[Cell]:
    """args: ``models`` ([A, B]), ``task``, ``aligned`` (weight-match B first), ``steps``,
    ``lr``, ``n_points``, ``max_examples`` (None: all), ``seed`` (alignment, t and batches),
    ``device``."""
    _need_ids(args, "models", 2)
    _need_str(args, "task")
    _optional(args, steps=1, n_points=2, max_examples=1, seed=0)
    if "lr" in args:
        _need_number(args, "lr")
    return [
        markdown(
            "Train the bend of φ(t) = (1−t)²θ_A + 2t(1−t)θ + t²θ_B with the page's steps, "
            "learning rate and seed (seeded: the same curve on the same device), then evaluate "
            "it and the straight line."
        ),
        _device_cell(),
        code(
            "from core.data import get_task\n"
            "from core.figures.landscape import curve_figure\n"
            "from core.landscape import align, bezier_curve\n\n"
            'id_a, id_b = ARGS["models"]\n'
            "model = zoo.load_model(id_a, device=DEVICE)\n"
            "sd_a, sd_b = zoo.state_dict(id_a), zoo.state_dict(id_b)\n"
            'if ARGS.get("aligned", False):\n'
            '    sd_b = align(model, sd_a, sd_b, "weight matching",\n'
            '                 generator=torch.Generator().manual_seed(ARGS.get("seed", 0)))\n'
            'curve = bezier_curve(model, sd_a, sd_b, get_task(ARGS["task"]), steps=ARGS.get("steps", 400),\n'
            '                     lr=ARGS.get("lr", 1e-3), n_points=ARGS.get("n_points", 25),\n'
            '                     generator=torch.Generator().manual_seed(ARGS.get("seed", 0)),\n'
            '                     max_examples=ARGS.get("max_examples", 5000), device=DEVICE)\n'
            "fig = curve_figure(curve)"
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


# ---------------------------------------------------------------------------- merge interference
@register(
    "merge_interference",
    description="Interference between task vectors: cosine, sign conflicts, what TIES/DARE keep",
    requires=("models", "base"),
)
def _merge_interference(args: Mapping[str, Any]) -> list[Cell]:
    """args: the lab's (``models``, ``base``, ...), ``density``, ``drop``, ``trim``, ``seed``
    (of the DARE draws), ``chart`` ("cosine", the default; "layers"; "keep") and ``method``
    (what "keep" shows: "ties", the default, "dare" or "dare_ties")."""
    cells = _merge_lab_cells(args, "Diagnose the interference between the task vectors.")
    _need_str(args, "base")
    for name in ("density", "drop"):
        if args.get(name) is not None:
            _need_number(args, name)
    _choice(args, "trim", ("global", "tensor"), "global")
    _choice(args, "chart", ("cosine", "layers", "keep"), "cosine")
    _choice(args, "method", ("ties", "dare", "dare_ties"), "ties")
    _optional(args, seed=0)
    return [
        *cells,
        code(
            "from core.figures.interference import interference_figure\n"
            "from core.merge.diagnostics import interference\n\n"
            "report = interference(list(lab.task_vectors), names=lab.model_ids,\n"
            '                      density=ARGS.get("density", 0.2), drop=ARGS.get("drop", 0.5),\n'
            '                      trim=ARGS.get("trim", "global"), seed=ARGS.get("seed", 0))\n'
            'fig = interference_figure(report, chart=ARGS.get("chart", "cosine"),\n'
            '                          method=ARGS.get("method", "ties"))'
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
