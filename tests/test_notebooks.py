"""Notebooks: the area notebooks are stored without outputs and run top to bottom on the tiny
zoo; every figure on every page carries a recipe, and the notebook generated from it recomputes
exactly that figure's data."""

from __future__ import annotations

import ast
import io
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nbformat
import pandas as pd
import plotly.graph_objects as go
import pytest
import torch
from nbclient import NotebookClient

from core.figures import figure_data, history_figure
from core.notebook_export import (
    TEMPLATES,
    as_recipe,
    check_recipe,
    notebook_for,
    register,
    write_notebook,
)
from core.recipes import RECIPES, build_figure, load_recipes
from core.zoo import Zoo

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
PAGES = sorted((ROOT / "pages").glob("*.py"))
AREAS = ("merging", "connectivity", "mixup", "geometry", "clustering")


def execute(nb: nbformat.NotebookNode, cwd: Path, timeout: int = 600) -> nbformat.NotebookNode:
    client = NotebookClient(
        nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(cwd)}}
    )
    client.execute()
    return nb


def csv_of_fig_cell(path: Path) -> str:
    """A cell that writes the notebook's ``fig`` data to ``path`` (appended by the tests only)."""
    return (
        f"from core.figures import figure_data as _fd\n_fd(fig).to_csv({str(path)!r}, index=False)"
    )


def _traces(fig: go.Figure) -> list[Any]:
    """The figure's traces as JSON (images included, which ``figure_data`` leaves out)."""
    return json.loads(fig.to_json())["data"]


def assert_reproduces(nb: nbformat.NotebookNode, fig: go.Figure, tmp_path: Path) -> None:
    """Run ``nb`` and check its ``fig`` has exactly the data of ``fig`` (through CSV both; a
    figure of images, which has no table, through its traces' JSON)."""
    out, out_json = tmp_path / "fig.csv", tmp_path / "fig.json"
    nb.cells.append(
        nbformat.v4.new_code_cell(csv_of_fig_cell(out) + f"\nfig.write_json({str(out_json)!r})")
    )
    execute(nb, tmp_path, timeout=300)
    if figure_data(fig).empty:
        assert json.loads(out_json.read_text())["data"] == _traces(fig)
        return
    want = pd.read_csv(io.StringIO(figure_data(fig).to_csv(index=False)))  # type: ignore[arg-type]
    pd.testing.assert_frame_equal(pd.read_csv(out), want)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_stored_without_outputs(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"{path.name} has outputs"
    src = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    assert "streamlit" not in src and "import ui" not in src  # the public core API only


def test_every_area_has_a_notebook() -> None:
    assert {p.stem for p in NOTEBOOKS} >= set(AREAS)


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs(path: Path, workspace_env: Path, tmp_path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    out = tmp_path / "fig.csv"
    nb.cells.append(nbformat.v4.new_code_cell(csv_of_fig_cell(out)))
    execute(nb, path.parent)
    errors = [
        o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"
    ]
    assert not errors
    assert len(pd.read_csv(out)) > 0  # the main figure has data


def test_recipe_validation() -> None:
    assert "training_history" in load_recipes()
    with pytest.raises(TypeError, match="recipe"):
        check_recipe(["training_history"])
    with pytest.raises(ValueError, match="kind"):
        check_recipe({"kind": "no_such_kind", "args": {}})
    with pytest.raises(ValueError, match="missing"):
        check_recipe({"kind": "training_history", "args": {}})
    with pytest.raises(TypeError, match="JSON"):
        check_recipe({"kind": "training_history", "args": {"models": [object()]}})
    with pytest.raises(ValueError, match="kind"):
        register("not a name", description="x")


def test_generated_notebook_reproduces_training_history(tiny_zoo_dir: Path, tmp_path: Path) -> None:
    ids = ["mlp-ft-mnist", "cnn-mnist-s1"]
    zoo = Zoo(tiny_zoo_dir)
    fig = history_figure({i: zoo.get(i).metrics["history"] for i in ids}, title="Training")
    recipe = {"kind": "training_history", "args": {"models": ids, "title": "Training"}}
    path = write_notebook(recipe, tmp_path / "history", workspace=tiny_zoo_dir, title="History")
    assert path.suffix == ".ipynb"
    nb = nbformat.read(path, as_version=4)
    assert nb.metadata["mixmerge"]["recipe"] == recipe
    assert all(c.get("outputs", []) == [] for c in nb.cells)
    out = tmp_path / "fig.csv"
    nb.cells.append(nbformat.v4.new_code_cell(csv_of_fig_cell(out)))
    execute(nb, tmp_path, timeout=300)
    got = pd.read_csv(out)
    want = pd.read_csv(io.StringIO(figure_data(fig).to_csv(index=False)))
    pd.testing.assert_frame_equal(got, want)


def test_notebook_for_points_at_the_workspace(tmp_path: Path) -> None:
    nb = notebook_for({"kind": "training_history", "args": {"models": ["a"]}}, workspace=tmp_path)
    src = "\n".join(c.source for c in nb.cells)
    assert repr(str(tmp_path.resolve())) in src and "ARGS = {'models': ['a']}" in src
    assert json.loads(nbformat.writes(nb))["nbformat"] == 4


def test_generated_notebook_reproduces_a_merge_figure(tiny_zoo_dir: Path, tmp_path: Path) -> None:
    from core.figures.merge import task_accuracy_figure
    from core.merge_eval import lab_from_zoo

    args = {
        "models": ["mlp-ft-mnist", "mlp-ft-digits"],
        "base": "mlp-base",
        "method": "task_arithmetic",
        "hyperparameters": {"scale": 0.7},
        "seed": 3,
        "n_per_task": 60,
        "random_state": 5,
    }
    lab = lab_from_zoo(
        Zoo(tiny_zoo_dir), args["models"], base_id="mlp-base", n_per_task=60, random_state=5
    )
    fig = task_accuracy_figure(lab.run("task_arithmetic", {"scale": 0.7}, seed=3))
    nb = notebook_for({"kind": "merge_accuracy", "args": args}, workspace=tiny_zoo_dir)
    assert_reproduces(nb, fig, tmp_path)
    other = task_accuracy_figure(lab.run("task_arithmetic", {"scale": 0.1}, seed=3))
    assert not figure_data(other).equals(figure_data(fig))  # the check can fail


def test_generated_notebook_reproduces_a_mixup_gallery(tmp_path: Path) -> None:
    import torch

    from core.data import load_photos
    from core.figures.mixup import gallery_figure
    from core.mixup.gallery import gallery

    args = {
        "method": "mixup",
        "images": ["astronaut", "chelsea", "coffee"],
        "alpha": 0.4,
        "seed": 11,
    }
    photos = load_photos(96)
    images = torch.stack([photos[n] for n in args["images"]])
    fig = gallery_figure(gallery("mixup", images, args["images"], alpha=0.4, seed=11))
    nb = notebook_for({"kind": "mixup_gallery", "args": args}, workspace=tmp_path)
    assert_reproduces(nb, fig, tmp_path)
    other = gallery_figure(gallery("mixup", images, args["images"], alpha=0.4, seed=12))
    assert not figure_data(other).equals(figure_data(fig))  # a different seed gives other data


# ------------------------------------------------------------------ recipes passed by the pages
# Each page is run with AppTest; ``show_figure`` is wrapped so that the figure the page draws and
# the recipe it passes are recorded. The notebook generated from that recipe must recompute
# exactly the page's figure data, and the same computation with another seed or hyperparameter
# must give other data (so the comparison can fail).


@pytest.fixture
def shown(monkeypatch: pytest.MonkeyPatch) -> dict[str, tuple[go.Figure, Any]]:
    """``key -> (figure, recipe)`` of every ``show_figure`` call made by a page run."""
    import ui.figure_panel as panel

    seen: dict[str, tuple[go.Figure, Any]] = {}
    original = panel.show_figure

    def record(fig: go.Figure, *, key: str, **kwargs: Any) -> None:
        recipe = kwargs.get("recipe")
        seen[key] = (fig, None if recipe is None else as_recipe(recipe))
        original(fig, key=key, **kwargs)

    monkeypatch.setattr(panel, "show_figure", record)
    return seen


def _run_page(page: str, setup: Callable[[Any], None] | None = None) -> Any:
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=300).run()
    at.switch_page(page).run()
    if setup is not None:
        setup(at)
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    return at


def _page_recipe(shown: dict, key: str, kind: str) -> tuple[go.Figure, dict[str, Any]]:
    assert key in shown, f"the page drew no figure {key!r} (drew {sorted(shown)})"
    fig, recipe = shown[key]
    assert recipe is not None, f"{key} is shown without a recipe"
    assert recipe["kind"] == kind
    json.dumps(recipe)  # JSON only
    return fig, recipe


def _reproduce(recipe: dict, fig: go.Figure, workspace: Path, tmp_path: Path) -> None:
    tmp_path.mkdir(parents=True, exist_ok=True)
    nb = notebook_for(recipe, workspace=workspace)
    src = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    assert "streamlit" not in src and "import ui" not in src
    assert_reproduces(nb, fig, tmp_path)


def _differs(fig: go.Figure, other: go.Figure) -> None:
    a, b = figure_data(fig), figure_data(other)
    if a.empty and b.empty:  # figures of images
        assert _traces(fig) != _traces(other), "another seed / hyperparameter gave the same images"
        return
    assert not (a.shape == b.shape and a.equals(b)), (
        "another seed / hyperparameter gave the same data"
    )


def test_new_templates_validate_their_args() -> None:
    bad = [
        ("interpolation_paths", {"models": ["mlp-mnist-s1"], "task": "mnist"}, "models"),
        ("interpolation_paths", {"models": ["a", "b"], "task": "mnist", "methods": []}, "methods"),
        ("geometry_projection", {"model": "a", "task": "digits", "n": 0}, "'n'"),
        ("geometry_projection", {"model": "a", "task": "digits", "n": 9, "method": "x"}, "method"),
        ("geometry_etf", {"model": "a", "task": "digits", "n": 9, "split": "val"}, "split"),
        ("cluster_k_selection", {"source": "labels", "task": "digits", "n": 9}, "source"),
        ("cluster_k_selection", {"source": "features", "task": "digits", "n": 9}, "model"),
        ("mixup_gallery", {"method": "mixup", "images": [], "source": "web"}, "source"),
        ("mixup_gallery", {"method": "mixup", "images": [], "source": "dataset"}, "task"),
        ("merge_accuracy", {"models": ["a"], "method": "average", "chart": "pie"}, "chart"),
    ]
    for kind, args, name in bad:
        with pytest.raises(ValueError, match=name):
            notebook_for({"kind": kind, "args": args})
    nb = notebook_for(
        {
            "kind": "cluster_k_selection",
            "args": {"source": "pixels", "model": None, "task": "digits", "n": 300},
        }
    )
    assert "ppp_k_figure" in "\n".join(c.source for c in nb.cells)


def test_model_zoo_history_notebook(workspace_env: Path, shown: dict, tmp_path: Path) -> None:
    def setup(at: Any) -> None:
        at.selectbox(key="zoo.detail_id").set_value("mlp-ft-mnist").run()

    _run_page("pages/1_Model_Zoo.py", setup)
    fig, recipe = _page_recipe(shown, "zoo.history", "training_history")
    assert recipe["args"]["models"] == ["mlp-ft-mnist"]
    _reproduce(recipe, fig, workspace_env, tmp_path)


def test_merge_lab_notebook(workspace_env: Path, shown: dict, tmp_path: Path) -> None:
    from core.figures.merge import task_accuracy_figure
    from core.merge_eval import lab_from_zoo

    def setup(at: Any) -> None:
        at.slider(key="merge.scale").set_value(0.6).run()

    _run_page("pages/2_Merge_Lab.py", setup)
    fig, recipe = _page_recipe(shown, "merge.live", "merge_accuracy")
    args = recipe["args"]
    assert args["method"] == "task_arithmetic"
    assert args["hyperparameters"]["scale"] == pytest.approx(0.6)
    assert args["base"] == "mlp-base" and args["n_per_task"] == 250
    _reproduce(recipe, fig, workspace_env, tmp_path)
    lab = lab_from_zoo(
        Zoo(workspace_env),
        args["models"],
        base_id=args["base"],
        n_per_task=args["n_per_task"],
        random_state=args["random_state"],
    )
    _differs(
        fig, task_accuracy_figure(lab.run("task_arithmetic", {"scale": 0.2}, seed=args["seed"]))
    )


def test_interpolation_notebook(workspace_env: Path, shown: dict, tmp_path: Path) -> None:
    import torch

    from core.data import get_task
    from core.figures.landscape import path_figure
    from core.landscape import compare_paths

    def setup(at: Any) -> None:
        at.multiselect(key="interp.methods").set_value(["naive", "weight matching"])
        at.slider(key="interp.n_points").set_value(5).run()
        next(b for b in at.button if b.key == "interp.run_paths").click().run()

    _run_page("pages/3_Interpolation.py", setup)
    fig, recipe = _page_recipe(shown, "interp.paths", "interpolation_paths")
    args = recipe["args"]
    assert args["models"] == ["mlp-mnist-s1", "mlp-mnist-s2"] and args["n_points"] == 5
    assert args["methods"] == ["naive", "weight matching"] and args["max_examples"] == 5000
    _reproduce(recipe, fig, workspace_env, tmp_path)
    zoo = Zoo(workspace_env)
    other = compare_paths(
        zoo.load_model("mlp-mnist-s1"),
        zoo.state_dict("mlp-mnist-s1"),
        zoo.state_dict("mlp-mnist-s2"),
        get_task(args["task"]),
        methods=args["methods"],
        n_points=5,
        max_examples=1000,
        generator=torch.Generator().manual_seed(args["seed"]),
    )
    _differs(fig, path_figure(other))


def test_mixup_gallery_notebook(workspace_env: Path, shown: dict, tmp_path: Path) -> None:
    from core.data import denormalize, get_task
    from core.figures.mixup import gallery_figure
    from core.mixup.gallery import gallery

    def setup(at: Any) -> None:
        at.radio(key="mixup_gallery.source").set_value("dataset").run()
        at.slider(key="mixup_gallery.n").set_value(4).run()

    _run_page("pages/4_Mixup_Gallery.py", setup)
    fig, recipe = _page_recipe(shown, "mixup_gallery.gallery", "mixup_gallery")
    args = recipe["args"]
    assert args["source"] == "dataset" and args["n_images"] == 4
    _reproduce(recipe, fig, workspace_env, tmp_path)
    ds = get_task(args["task"])
    other = gallery(
        args["method"],
        denormalize(ds.x_test[:4]),
        [str(i) for i in range(4)],
        alpha=args["alpha"],
        seed=args["seed"] + 1,
    )
    _differs(fig, gallery_figure(other))


@pytest.mark.slow
def test_feature_geometry_notebooks(workspace_env: Path, shown: dict, tmp_path: Path) -> None:
    from core.data import get_task
    from core.figures.geometry import etf_figure, projection_figure
    from core.geometry import feature_report, projection_report, sample_rows

    def setup(at: Any) -> None:
        at.select_slider(key="geometry.n").set_value(500).run()

    _run_page("pages/6_Feature_Geometry.py", setup)
    fig, recipe = _page_recipe(shown, "geometry.projection", "geometry_projection")
    args = recipe["args"]
    assert args["model"] == "mlp-mnist-s1" and args["n"] == 500 and args["method"] == "pca"
    _reproduce(recipe, fig, workspace_env, tmp_path / "projection")
    etf, etf_recipe = _page_recipe(shown, "geometry.etf", "geometry_etf")
    _reproduce(etf_recipe, etf, workspace_env, tmp_path / "etf")
    ds = get_task(args["task"])
    xs, ys = sample_rows(ds.x_train, ds.y_train, 500, random_state=args["seed"] + 1)
    rep = feature_report(Zoo(workspace_env).load_model(args["model"]), xs, ys)
    proj = projection_report(rep, "pca", random_state=args["seed"] + 1)
    names = list(ds.class_names)
    _differs(
        fig,
        projection_figure(
            proj["coords"],
            rep["labels"],
            class_names=names,
            anchors=proj["anchors"],
            anchor_classes=rep["classes"].tolist(),
        ),
    )
    _differs(
        etf, etf_figure(rep["gram"], rep["ideal"], class_names=[names[c] for c in rep["classes"]])
    )


@pytest.mark.slow
def test_clustering_notebooks(workspace_env: Path, shown: dict, tmp_path: Path) -> None:
    from core.cluster import ppp
    from core.data import get_task
    from core.figures.cluster import cluster_scatter_figure, contingency_figure, k_selection_figure
    from core.geometry import project, sample_rows

    def setup(at: Any) -> None:
        at.radio(key="cluster.source").set_value("pixels")
        at.select_slider(key="cluster.n").set_value(300)
        at.slider(key="cluster.k_max").set_value(5)
        at.slider(key="cluster.n_seeds").set_value(2)
        at.button[0].click().run()

    _run_page("pages/7_Clustering.py", setup)
    fig, recipe = _page_recipe(shown, "cluster.k", "cluster_k_selection")
    args = recipe["args"]
    assert (args["source"], args["n"], args["k_max"], args["n_seeds"]) == ("pixels", 300, 5, 2)
    _reproduce(recipe, fig, workspace_env, tmp_path / "k")
    table, table_recipe = _page_recipe(shown, "cluster.table", "cluster_contingency")
    scatter, scatter_recipe = _page_recipe(shown, "cluster.scatter", "cluster_scatter")
    assert table_recipe["args"] == scatter_recipe["args"] == args  # the same clustering
    _reproduce(table_recipe, table, workspace_env, tmp_path / "table")
    _reproduce(scatter_recipe, scatter, workspace_env, tmp_path / "scatter")
    ds = get_task(args["task"])
    xs, ys = sample_rows(ds.x_train, ds.y_train, 300, random_state=args["seed"] + 1)
    res = ppp(xs.flatten(1), k_max=5, random_state=args["seed"] + 1, n_seeds=2)
    _differs(fig, k_selection_figure(res.ks, res.scores, chosen=res.k))
    _differs(table, contingency_figure(ys.numpy(), res.labels))
    coords = project(xs.flatten(1).float(), "pca").coords
    _differs(scatter, cluster_scatter_figure(coords, res.labels, confidence=res.posterior))


# ------------------------------------------------------------------ every figure of every page
def _button(at: Any, key: str) -> Any:
    return next(b for b in at.button if b.key == key)


# ------------------------------------------------------------------ static checks
def _show_figure_calls(path: Path) -> list[ast.Call]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    return [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and (getattr(node.func, "id", None) or getattr(node.func, "attr", None)) == "show_figure"
    ]


def test_pages_have_figures() -> None:
    assert sum(len(_show_figure_calls(p)) for p in PAGES) >= 25  # the check below sees them all


@pytest.mark.parametrize("path", PAGES, ids=lambda p: p.stem)
def test_every_figure_on_a_page_passes_a_recipe(path: Path) -> None:
    from core.notebook_export import _load_providers

    _load_providers()  # kinds registered by core.figures modules too
    for call in _show_figure_calls(path):
        recipe = next((k.value for k in call.keywords if k.arg == "recipe"), None)
        where = f"{path.name}:{call.lineno}"
        assert recipe is not None, f"show_figure at {where} passes no recipe="
        assert not (isinstance(recipe, ast.Constant) and recipe.value is None), where
        if isinstance(recipe, ast.Tuple):  # (kind, args) names a core.recipes kind
            kind = recipe.elts[0]
            if isinstance(kind, ast.Constant):
                assert kind.value in RECIPES, where
        if isinstance(recipe, ast.Dict):  # a literal recipe names a registered kind
            kind = dict(
                zip([ast.literal_eval(k) for k in recipe.keys if k], recipe.values, strict=False)
            )
            if isinstance(kind.get("kind"), ast.Constant):
                assert kind["kind"].value in TEMPLATES, where


def test_panel_templates_validate_their_args() -> None:
    lab = {"models": ["a", "b"], "base": "base"}
    bad = [
        ("merge_landscape", lab | {"pair": ["a", "a"], "low": 0, "high": 1, "n_points": 3}, "pair"),
        ("merge_landscape", lab | {"pair": ["a", "c"], "low": 0, "high": 1, "n_points": 3}, "pair"),
        ("merge_landscape", lab | {"pair": ["a", "b"], "low": 1, "high": 0, "n_points": 3}, "low"),
        (
            "merge_landscape",
            lab | {"pair": ["a", "b"], "low": 0, "high": 1, "n_points": 1},
            "n_points",
        ),
        (
            "merge_landscape",
            lab | {"base": None, "pair": ["a", "b"], "low": 0, "high": 1, "n_points": 3},
            "base",
        ),
        ("merge_sweep", lab | {"method": "ties", "param": "", "n_points": 3}, "param"),
        (
            "merge_sweep",
            {"models": [], "method": "ties", "param": "scale", "n_points": 3},
            "models",
        ),
        ("merge_comparison", lab | {"methods": []}, "methods"),
        (
            "merge_comparison",
            lab | {"methods": ["ties"], "hyperparameters": {"ties": 1}},
            "hyperparameters",
        ),
        ("merge_comparison", lab | {"methods": ["ties"], "chart": "pie"}, "chart"),
        (
            "interpolation_barriers",
            {"models": ["a", "b"], "task": "mnist", "column": "x"},
            "column",
        ),
        ("interpolation_plane", {"models": ["a", "b"], "third": "", "task": "mnist"}, "third"),
        (
            "interpolation_plane",
            {"models": ["a", "b"], "third": "c", "task": "mnist", "metric": "x"},
            "metric",
        ),
        (
            "interpolation_plane",
            {"models": ["a", "b"], "third": "c", "task": "mnist", "resolution": 1},
            "resolution",
        ),
        ("interpolation_bezier", {"models": ["a", "b"], "task": "mnist", "steps": 0}, "steps"),
        ("interpolation_bezier", {"models": ["a", "b"], "task": "mnist", "lr": "fast"}, "lr"),
        (
            "geometry_mixup",
            {"model": "a", "task": "digits", "mixer": "mixup", "classes": [-1]},
            "classes",
        ),
        ("geometry_nc_epochs", {"run": ""}, "run"),
        (
            "geometry_mixup",
            {"model": "a", "task": "digits", "mixer": "mixup", "alpha": 0.0},
            "alpha",
        ),
        ("mixup_accuracy", {"run": 3}, "run"),
        ("mixup_reliability", {"run": None}, "run"),
        ("mixup_lam_grid", {"method": "mixup", "images": ["a", "b"], "lams": []}, "lams"),
        (
            "mixup_methods",
            {"method": "mixup", "images": [], "source": "dataset", "task": "digits"},
            "n_images",
        ),
        ("cluster_contingency", {"source": "pixels", "task": "digits", "n": 0}, "'n'"),
        ("cluster_scatter", {"source": "pixels", "task": "digits", "n": 9, "k_max": 1}, "k_max"),
    ]
    for kind, args, name in bad:
        with pytest.raises(ValueError, match=name):
            notebook_for({"kind": kind, "args": args})
    with pytest.raises(ValueError, match="missing"):
        check_recipe({"kind": "interpolation_plane", "args": {"models": ["a", "b"]}})


# ------------------------------------------------------------------ Merge Lab (page 2)
@pytest.mark.slow
def test_merge_lab_panel_notebooks(workspace_env: Path, shown: dict, tmp_path: Path) -> None:
    from core.figures.merge import (
        comparison_figure,
        comparison_task_figure,
        landscape_figure,
        sweep_figure,
    )
    from core.merge_eval import (
        coefficient_landscape,
        compare_methods,
        lab_from_zoo,
        linear_grid,
        sweep,
    )

    def setup(at: Any) -> None:
        at.slider(key="merge.scale").set_value(0.6).run()
        at.slider(key="merge.land_res").set_value(3)
        at.button(key="merge.land_go").click().run()
        at.slider(key="merge.sweep_n").set_value(3)
        at.button(key="merge.sweep_go").click().run()
        at.multiselect(key="merge.cmp_methods").set_value(["task_arithmetic", "ties"])
        at.checkbox(key="merge.cmp_full").uncheck()
        at.button(key="merge.cmp_go").click().run()

    _run_page("pages/2_Merge_Lab.py", setup)
    land, land_recipe = _page_recipe(shown, "merge.land", "merge_landscape")
    args = land_recipe["args"]
    assert args["pair"] == args["models"][:2] and args["n_points"] == 3
    assert (args["low"], args["high"], args["base"]) == (0.0, 1.0, "mlp-base")
    assert args["hyperparameters"]["scale"] == pytest.approx(0.6)  # the ✕ of the sliders
    _reproduce(land_recipe, land, workspace_env, tmp_path / "landscape")
    sw, sw_recipe = _page_recipe(shown, "merge.sweep", "merge_sweep")
    assert (sw_recipe["args"]["method"], sw_recipe["args"]["n_points"]) == ("task_arithmetic", 3)
    _reproduce(sw_recipe, sw, workspace_env, tmp_path / "sweep")
    cmp_fig, cmp_recipe = _page_recipe(shown, "merge.cmp", "merge_comparison")
    assert cmp_recipe["args"]["methods"] == ["task_arithmetic", "ties"]
    assert cmp_recipe["args"]["full"] is False and cmp_recipe["args"]["chart"] == "methods"
    _reproduce(cmp_recipe, cmp_fig, workspace_env, tmp_path / "comparison")
    tasks_fig, tasks_recipe = _page_recipe(shown, "merge.cmp_tasks", "merge_comparison")
    assert tasks_recipe["args"]["chart"] == "tasks"
    _reproduce(tasks_recipe, tasks_fig, workspace_env, tmp_path / "comparison_tasks")

    lab = lab_from_zoo(
        Zoo(workspace_env),
        args["models"],
        base_id=args["base"],
        n_per_task=args["n_per_task"],
        random_state=args["random_state"],
    )
    _differs(
        land, landscape_figure(coefficient_landscape(lab, (0, 1), lams=linear_grid(0.0, 0.5, 3)))
    )
    _differs(sw, sweep_figure(sweep(lab, "task_arithmetic", "scale", [0.0, 0.5, 1.0, 1.5])))
    other = compare_methods(
        lab, ["task_arithmetic", "ties"], full=False, random_state=args["random_state"] + 1
    )
    _differs(cmp_fig, comparison_figure(other))  # other bootstrap resamples
    _differs(tasks_fig, comparison_task_figure(compare_methods(lab, ["ties"], full=False)))


# ------------------------------------------------------------------ Interpolation (page 3)
@pytest.mark.slow
def test_interpolation_panel_notebooks(workspace_env: Path, shown: dict, tmp_path: Path) -> None:
    from core.data import get_task
    from core.figures.landscape import barrier_figure, curve_figure, plane_figure
    from core.landscape import align, barrier, bezier_curve, compare_paths, plane

    def setup(at: Any) -> None:
        at.multiselect(key="interp.methods").set_value(["naive", "weight matching"])
        at.slider(key="interp.n_points").set_value(5).run()
        _button(at, "interp.run_paths").click().run()
        at.radio(key="interp.barrier_column").set_value("accuracy_barrier").run()
        at.slider(key="interp.resolution").set_value(5).run()
        _button(at, "interp.run_plane").click().run()
        at.select_slider(key="interp.curve_steps").set_value(100).run()
        _button(at, "interp.run_curve").click().run()

    _run_page("pages/3_Interpolation.py", setup)
    bars, bars_recipe = _page_recipe(shown, "interp.barrier_fig", "interpolation_barriers")
    args = bars_recipe["args"]
    assert args["column"] == "accuracy_barrier" and args["methods"] == ["naive", "weight matching"]
    _reproduce(bars_recipe, bars, workspace_env, tmp_path / "barriers")
    pl, pl_recipe = _page_recipe(shown, "interp.plane", "interpolation_plane")
    assert pl_recipe["args"]["third"] == "wm:mlp-mnist-s2" and pl_recipe["args"]["resolution"] == 5
    assert pl_recipe["args"]["max_examples"] == 500
    _reproduce(pl_recipe, pl, workspace_env, tmp_path / "plane")
    cv, cv_recipe = _page_recipe(shown, "interp.curve", "interpolation_bezier")
    assert (cv_recipe["args"]["steps"], cv_recipe["args"]["n_points"]) == (100, 5)
    _reproduce(cv_recipe, cv, workspace_env, tmp_path / "curve")

    zoo, ds, seed = Zoo(workspace_env), get_task(args["task"]), args["seed"]
    model = zoo.load_model("mlp-mnist-s1")
    sd_a, sd_b = zoo.state_dict("mlp-mnist-s1"), zoo.state_dict("mlp-mnist-s2")
    paths = compare_paths(
        model,
        sd_a,
        sd_b,
        ds,
        methods=args["methods"],
        n_points=5,
        max_examples=1000,
        generator=torch.Generator().manual_seed(seed),
    )
    _differs(bars, barrier_figure([barrier(p) for p in paths.values()], column="accuracy_barrier"))
    wm_b = align(
        model, sd_a, sd_b, "weight matching", generator=torch.Generator().manual_seed(seed)
    )
    _differs(pl, plane_figure(plane(model, [sd_a, sd_b, wm_b], ds, resolution=3)))
    other = bezier_curve(
        model,
        sd_a,
        sd_b,
        ds,
        steps=100,
        n_points=5,
        generator=torch.Generator().manual_seed(seed + 1),
    )
    _differs(cv, curve_figure(other))


# ------------------------------------------------------------------ Mixup Gallery (page 4)
@pytest.mark.slow
def test_mixup_gallery_panel_notebooks(workspace_env: Path, shown: dict, tmp_path: Path) -> None:
    from core.data import load_photos
    from core.figures.mixup import lam_grid_figure, methods_figure
    from core.mixup.gallery import lam_grid, methods_side_by_side

    def setup(at: Any) -> None:
        at.selectbox(key="mixup_gallery.method").set_value("cutmix").run()

    _run_page("pages/4_Mixup_Gallery.py", setup)
    grid, grid_recipe = _page_recipe(shown, "mixup_gallery.grid", "mixup_lam_grid")
    args = grid_recipe["args"]
    assert args["method"] == "cutmix" and args["source"] == "photos"
    assert args["lams"] == [0.0, 0.2, 0.4, 0.5, 0.6, 0.8, 1.0]
    _reproduce(grid_recipe, grid, workspace_env, tmp_path / "grid")
    meth, meth_recipe = _page_recipe(shown, "mixup_gallery.methods", "mixup_methods")
    _reproduce(meth_recipe, meth, workspace_env, tmp_path / "methods")
    photos = load_photos(96)
    pair = torch.stack([photos[n] for n in args["images"][:2]])
    _differs(grid, lam_grid_figure(lam_grid("cutmix", pair, [0.1, 0.3], seed=args["seed"])))
    _differs(meth, methods_figure(methods_side_by_side(pair, lam=0.3, seed=args["seed"])))


# ------------------------------------------------------------------ Mixup Training (page 5)
def _tiny_run(workspace: Path, seed: int) -> dict[str, Any]:
    """ERM, mixup and mixup switched off after epoch 1 on 100 digits for 2 epochs."""
    from core.mixup.training import MixMethod, train_mixers
    from core.train import TrainConfig

    hyper = {"alpha": 1.0, "prob": 1.0}
    methods = [MixMethod(), MixMethod("mixup", hyper), MixMethod("mixup", hyper, mix_until_epoch=1)]
    return train_mixers(
        Zoo(workspace),
        task="digits",
        methods=methods,
        arch="mlp",
        arch_kwargs={"width": 16},
        config=TrainConfig(epochs=2, lr=1e-2, seed=seed),
        n_train=100,
        device="cpu",
    )


@pytest.mark.slow
def test_mixup_training_notebooks(empty_workspace: Path, shown: dict, tmp_path: Path) -> None:
    """The page draws its figures from the stored run record; the notebooks load that record
    (and not another run of the workspace)."""
    from core.figures import mixup as mf

    first = _tiny_run(empty_workspace, seed=0)
    latest = _tiny_run(empty_workspace, seed=1)
    _run_page("pages/5_Mixup_Training.py")  # shows the latest run
    rels = {k: v["reliability"] for k, v in first["methods"].items()}
    others = {
        "accuracy": mf.accuracy_figure(first),
        "curves": mf.curves_figure(first),
        "early": mf.early_stopping_figure(first),
        "reliability": mf.reliability_figure(rels),
    }
    for key, kind in [
        ("accuracy", "mixup_accuracy"),
        ("curves", "mixup_curves"),
        ("early", "mixup_early_stopping"),
        ("reliability", "mixup_reliability"),
    ]:
        fig, recipe = _page_recipe(shown, f"mixup_training.{key}", kind)
        assert recipe["args"] == {"run": latest["run_id"]}
        _reproduce(recipe, fig, empty_workspace, tmp_path / key)
        _differs(fig, others[key])


# ------------------------------------------------------------------ Feature Geometry (page 6)
@pytest.mark.slow
def test_feature_geometry_panel_notebooks(
    tiny_zoo_dir: Path, monkeypatch: pytest.MonkeyPatch, shown: dict, tmp_path: Path
) -> None:
    from core.data import get_task
    from core.figures.geometry import mixup_lambda_figure, nc_epochs_figure
    from core.geometry import mixup_report, nc_histories, train_nc_comparison

    ws = tmp_path / "ws"
    shutil.copytree(tiny_zoo_dir, ws)  # NC runs are trained into a private copy of the tiny zoo
    monkeypatch.setenv("MIXMERGE_WORKSPACE", str(ws))
    zoo = Zoo(ws)
    first = train_nc_comparison(
        zoo, task="digits", epochs=2, n_train=200, n_track=100, seed=0, device="cpu"
    )
    train_nc_comparison(
        zoo, task="digits", epochs=2, n_train=200, n_track=100, seed=1, device="cpu"
    )

    def setup(at: Any) -> None:
        at.select_slider(key="geometry.n").set_value(500).run()
        next(b for b in at.button if b.label == "Show mixed features").click()
        at.run()

    _run_page("pages/6_Feature_Geometry.py", setup)
    nc, nc_recipe = _page_recipe(shown, "geometry.epochs", "geometry_nc_epochs")
    assert nc_recipe["args"]["run"] != first["run_id"]  # the latest run is shown first
    _reproduce(nc_recipe, nc, ws, tmp_path / "nc")
    _differs(nc, nc_epochs_figure(nc_histories(first)))
    mix, mix_recipe = _page_recipe(shown, "geometry.mixup", "geometry_mixup")
    args = mix_recipe["args"]
    assert args["classes"] == [0, 1, 2] and args["n"] == 600 and args["model"] == "mlp-mnist-s1"
    _reproduce(mix_recipe, mix, ws, tmp_path / "mixup")
    ds = get_task(args["task"])
    mr = mixup_report(
        zoo.load_model(args["model"]),
        ds.x_train,
        ds.y_train,
        mixer=args["mixer"],
        alpha=args["alpha"],
        classes=[0, 1, 2],
        n=600,
        random_state=args["seed"] + 1,
    )
    _differs(
        mix, mixup_lambda_figure(mr["coords"], mr["lam"], mr["same_class"], anchors=mr["anchors"])
    )


def test_geometry_recipes_stored_before_the_registry_still_export() -> None:
    """Figures added to the Figures page before the registry keep their recipes: the notebook
    of each (as the old page wrote them, titles included) is generated with the same title."""
    features = {"model": "m", "task": "digits", "split": "train", "n": 500, "seed": 0}
    stored = [
        ("geometry_projection", features | {"device": "cpu", "method": "pca", "title": "P"}),
        ("geometry_etf", features | {"device": "cpu"}),
        (
            "geometry_mixup",
            {"model": "m", "task": "digits", "n": 600, "seed": 0, "mixer": "mixup"}
            | {"alpha": 1.0, "classes": [0, 1], "device": "cpu", "title": "M"},
        ),
        ("geometry_nc_epochs", {"run": "r", "title": "Neural collapse per epoch · digits · mlp"}),
    ]
    for kind, args in stored:
        src = "\n".join(c.source for c in notebook_for({"kind": kind, "args": args}).cells)
        assert f"from core.recipes.geometry import {RECIPES[kind].compute.__name__}" in src
        if "title" in args:
            assert f"FIGURE_ARGS = {{'title': {args['title']!r}}}" in src, kind


# ------------------------------------------------------------------ every registered recipe
# Args of every ``core.recipes`` kind on a copy of the tiny zoo, and a change of them that must
# give other data (so the comparison can fail). A kind registered without an example fails
# ``test_every_recipe_has_an_example``.
_LAB = {"models": ["mlp-ft-mnist", "mlp-ft-digits"], "base": "mlp-base", "n_per_task": 60}
_LAB |= {"random_state": 5}
_TA = {"method": "task_arithmetic", "hyperparameters": {"scale": 0.7}}
_PAIR = {"models": ["mlp-mnist-s1", "mlp-mnist-s2"], "task": "mnist", "max_examples": 300}
_PATHS = _PAIR | {"methods": ["naive", "weight matching"], "n_points": 5, "seed": 1}
_PIXELS = {"source": "pixels", "model": None, "task": "digits", "n": 300, "k_max": 4}
_PPP = (_PIXELS | {"n_seeds": 2, "seed": 1}, {"seed": 2})
_RUNS = ({"run": "$run0"}, {"run": "$run1"})  # the two tiny mixup runs of ``recipe_workspace``
_FEATURES = {"model": "mlp-mnist-s1", "task": "digits", "n": 200, "split": "train", "seed": 1}
_GALLERY = (
    {"method": "cutmix", "images": ["astronaut", "chelsea", "coffee"], "alpha": 0.4, "seed": 11},
    {"seed": 12},
)
RECIPE_EXAMPLES: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "merge_accuracy": (_LAB | _TA | {"seed": 3}, {"hyperparameters": {"scale": 0.1}}),
    "merge_landscape": (
        _LAB | _TA | {"pair": _LAB["models"], "low": 0.0, "high": 1.0, "n_points": 3},
        {"high": 0.5},
    ),
    "merge_sweep": (_LAB | _TA | {"param": "scale", "n_points": 3}, {"n_points": 4}),
    "merge_comparison": (
        _LAB | {"methods": ["task_arithmetic", "ties"], "full": False, "seed": 1},
        {"n_per_task": 40},  # the seed moves only the CIs, which figure_data leaves out
    ),
    "merge_interference": (
        _LAB | {"density": 0.3, "chart": "keep", "method": "ties"},
        {"density": 0.6},
    ),
    "interpolation_paths": (_PATHS | {"title": "T"}, {"max_examples": 200}),
    "interpolation_barriers": (_PATHS | {"column": "accuracy_barrier"}, {"max_examples": 200}),
    "interpolation_plane": (
        _PAIR | {"third": "wm:mlp-mnist-s2", "resolution": 3, "metric": "accuracy"},
        {"max_examples": 200},
    ),
    "interpolation_bezier": (_PAIR | {"steps": 20, "n_points": 5, "seed": 1}, {"seed": 2}),
    "training_history": ({"models": ["mlp-ft-mnist"], "title": "T"}, {"models": ["mlp-base"]}),
    "cluster_k_selection": _PPP,
    "cluster_contingency": _PPP,
    "cluster_scatter": _PPP,
    "mixup_accuracy": _RUNS,
    "mixup_curves": _RUNS,
    "mixup_early_stopping": _RUNS,
    "mixup_reliability": _RUNS,
    "mixup_gallery": _GALLERY,
    "geometry_etf": (_FEATURES, {"seed": 2}),
    "geometry_projection": (_FEATURES | {"method": "pca"}, {"seed": 2}),
    "geometry_mixup": (
        {"model": "mlp-mnist-s1", "task": "digits", "mixer": "mixup", "classes": [0, 1, 2]}
        | {"n": 200, "seed": 1},
        {"seed": 2},
    ),
    "geometry_nc_epochs": ({"run": "$run2"}, {"run": "$run3"}),
    "mixup_lam_grid": _GALLERY,
    "mixup_methods": _GALLERY,
    "merging_at_scale": (
        {"suite": "vision", "methods": ["average", "task_arithmetic"], "n_orders": 1},
        {"seed": 3},
    ),
    "orthogonal_adaptation": (
        {"suite": "vision", "variants": ["orthogonal", "lora"], "rank": 2, "steps": 2},
        {"seed": 1},
    ),
    "search_progress": ({"search": "s0"}, {"search": "s1"}),  # two tiny searches
    "mc_smoe_study": (  # the tiny MoE of ``recipe_workspace``
        {"model": "moe-digits", "task": "digits", "group_counts": [4, 1], "n_examples": 200}
        | {"random_draws": 2, "seed": 0, "title": "T"},
        {"group_counts": [2, 1]},
    ),
}
# these run on ``suite_recipe_workspace``
SUITE_KINDS = {"merging_at_scale", "orthogonal_adaptation"}


@pytest.fixture(scope="module")
def recipe_workspace(tiny_zoo_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the tiny zoo with two tiny mixup runs, then two tiny ERM-vs-mixup runs with NC
    tracked per epoch (ids in ``runs.json``), two tiny merge searches ("s0", "s1") and a sparse
    MoE trained for one epoch on digits ("moe-digits", seconds)."""
    from core.geometry import train_nc_comparison
    from core.search import run_search
    from core.zoo import train_custom

    ws = tmp_path_factory.mktemp("recipes") / "ws"
    shutil.copytree(tiny_zoo_dir, ws)
    runs = [_tiny_run(ws, seed=s)["run_id"] for s in (0, 1)]
    runs += [
        train_nc_comparison(
            Zoo(ws), task="digits", epochs=2, n_train=200, n_track=100, seed=s, device="cpu"
        )["run_id"]
        for s in (0, 1)
    ]
    (ws / "runs.json").write_text(json.dumps(runs))
    fts = ["mlp-ft-mnist", "mlp-ft-mnist_inverted"]
    for seed in (0, 1):
        spec = {"name": f"s{seed}", "models": fts, "base": "mlp-base", "seed": seed}
        spec |= {"method": "task_arithmetic", "search": {"weights": {"low": 0.0, "high": 1.0}}}
        run_search(spec | {"budget": 4, "popsize": 2, "n_val": 30, "n_test": 60}, Zoo(ws))
    train_custom(
        Zoo(ws), arch="moe", task="digits", epochs=1, lr=1e-3, name="moe-digits", device="cpu"
    )
    return ws


@pytest.fixture(scope="module")
def suite_recipe_workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A workspace holding a tiny three-task vision suite zoo."""
    from core.benchmark.zoo_build import build_suite_zoo
    from core.zoo import Zoo
    from tests.helpers.suites import TINY_VISION_3

    ws = tmp_path_factory.mktemp("suite_recipes") / "ws"
    build_suite_zoo(Zoo(ws), TINY_VISION_3, device="cpu")
    (ws / "runs.json").write_text("[]")
    return ws


def _resolve(args: dict[str, Any], workspace: Path) -> dict[str, Any]:
    """``args`` with the ``"$runN"`` placeholders replaced by the stored run ids."""
    runs = json.loads((workspace / "runs.json").read_text())
    return {k: runs[int(v[4:])] if str(v).startswith("$run") else v for k, v in args.items()}


def test_every_recipe_has_an_example() -> None:
    assert set(RECIPE_EXAMPLES) == set(load_recipes())


@pytest.mark.parametrize(
    "kind",
    [  # one kernel each (3-10 s idle): the quickest stays in the fast run
        k if k == "training_history" else pytest.param(k, marks=pytest.mark.slow)
        for k in sorted(RECIPE_EXAMPLES)
    ],
)
def test_recipe_notebook_reproduces_the_page_figure(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """The figure as a page draws it (``ui.cache.recipe_result``, then ``build_figure``) is what
    the generic notebook of ``(kind, args)`` recomputes."""
    from ui import cache

    fixture = "suite_recipe_workspace" if kind in SUITE_KINDS else "recipe_workspace"
    recipe_workspace: Path = request.getfixturevalue(fixture)

    example, change = RECIPE_EXAMPLES[kind]
    args = _resolve(example, recipe_workspace)
    ws = str(recipe_workspace)
    fig = build_figure(kind, cache.recipe_result(ws, kind, args), args)
    nb = notebook_for((kind, args), workspace=recipe_workspace)
    src = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    entry = RECIPES[kind]
    assert f"from {entry.compute.__module__} import {entry.compute.__name__}" in src
    assert "streamlit" not in src and "import ui" not in src
    assert_reproduces(nb, fig, tmp_path)
    other = args | _resolve(change, recipe_workspace)
    _differs(fig, build_figure(kind, cache.recipe_result(ws, kind, other), other))


def test_merge_lab_aligned_notebook(workspace_env: Path, shown: dict, tmp_path: Path) -> None:
    """The notebook of an "align, then merge" figure aligns too (not the plain merge)."""

    def setup(at: Any) -> None:
        at.radio(key="merge.setting").set_value("independent").run()

    _run_page("pages/2_Merge_Lab.py", setup)
    fig, recipe = _page_recipe(shown, "merge.live", "merge_accuracy")
    assert recipe["args"]["align"] == "weight" and recipe["args"]["base"] is None
    _reproduce(recipe, fig, workspace_env, tmp_path)


def test_merge_search_notebook(
    tiny_zoo_dir: Path, monkeypatch: pytest.MonkeyPatch, shown: dict, tmp_path: Path
) -> None:
    ws = tmp_path / "ws"  # a copy: the search writes its records into the workspace
    shutil.copytree(tiny_zoo_dir, ws)
    monkeypatch.setenv("MIXMERGE_WORKSPACE", str(ws))

    def setup(at: Any) -> None:
        at.number_input(key="search.budget").set_value(4)
        at.number_input(key="search.popsize").set_value(2)
        at.select_slider(key="search.n_val").set_value(20)
        at.select_slider(key="search.n_test").set_value(100)
        at.text_input(key="search.name").set_value("nb").run()
        next(b for b in at.button if b.key == "search.run").click().run()

    _run_page("pages/12_Merge_Search.py", setup)
    fig, recipe = _page_recipe(shown, "search.curve", "search_progress")
    assert recipe["args"] == {"search": "nb"}
    _reproduce(recipe, fig, ws, tmp_path / "nb")
