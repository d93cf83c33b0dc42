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

from core.recipes._args import need_str as _need_str

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
