"""Notebooks: the area notebooks are stored without outputs and run top to bottom on the tiny
zoo; a notebook generated from a figure's recipe recomputes exactly that figure's data."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nbformat
import pandas as pd
import plotly.graph_objects as go
import pytest
from nbclient import NotebookClient

from core.figures import figure_data, history_figure
from core.notebook_export import TEMPLATES, check_recipe, notebook_for, register, write_notebook
from core.zoo import Zoo

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
AREAS = ("merging", "connectivity", "mixup", "geometry", "clustering")


def execute(nb: nbformat.NotebookNode, cwd: Path, timeout: int = 600) -> nbformat.NotebookNode:
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(cwd)}})  # fmt: skip
    client.execute()
    return nb


def csv_of_fig_cell(path: Path) -> str:
    """A cell that writes the notebook's ``fig`` data to ``path`` (appended by the tests only)."""
    return (
        f"from core.figures import figure_data as _fd\n_fd(fig).to_csv({str(path)!r}, index=False)"
    )


def assert_reproduces(nb: nbformat.NotebookNode, fig: object, tmp_path: Path) -> None:
    """Run ``nb`` and check its ``fig`` has exactly the data of ``fig`` (through CSV both)."""
    out = tmp_path / "fig.csv"
    nb.cells.append(nbformat.v4.new_code_cell(csv_of_fig_cell(out)))
    execute(nb, tmp_path, timeout=300)
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
    assert "training_history" in TEMPLATES
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

    args = {"models": ["mlp-ft-mnist", "mlp-ft-digits"], "base": "mlp-base", "method": "task_arithmetic",
            "hyperparameters": {"scale": 0.7}, "seed": 3, "n_per_task": 60, "random_state": 5}  # fmt: skip
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
        seen[key] = (fig, kwargs.get("recipe"))
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
    nb = notebook_for({"kind": "cluster_k_selection",
                       "args": {"source": "pixels", "model": None, "task": "digits", "n": 300}})  # fmt: skip
    assert "k_selection_figure" in "\n".join(c.source for c in nb.cells)


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
    lab = lab_from_zoo(Zoo(workspace_env), args["models"], base_id=args["base"],
                       n_per_task=args["n_per_task"], random_state=args["random_state"])  # fmt: skip
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
    other = compare_paths(zoo.load_model("mlp-mnist-s1"), zoo.state_dict("mlp-mnist-s1"),
                          zoo.state_dict("mlp-mnist-s2"), get_task(args["task"]), methods=args["methods"],
                          n_points=5, max_examples=1000, generator=torch.Generator().manual_seed(args["seed"]))  # fmt: skip
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
    other = gallery(args["method"], denormalize(ds.x_test[:4]), list(args["images"]),
                    alpha=args["alpha"], seed=args["seed"] + 1)  # fmt: skip
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
    _differs(fig, projection_figure(proj["coords"], rep["labels"], class_names=names, anchors=proj["anchors"],
                                    anchor_classes=rep["classes"].tolist()))  # fmt: skip
    _differs(
        etf, etf_figure(rep["gram"], rep["ideal"], class_names=[names[c] for c in rep["classes"]])
    )


def test_clustering_notebook(workspace_env: Path, shown: dict, tmp_path: Path) -> None:
    from core.cluster import ppp
    from core.data import get_task
    from core.figures.cluster import k_selection_figure
    from core.geometry import sample_rows

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
    _reproduce(recipe, fig, workspace_env, tmp_path)
    ds = get_task(args["task"])
    xs, _ = sample_rows(ds.x_train, ds.y_train, 300, random_state=args["seed"] + 1)
    res = ppp(xs.flatten(1), k_max=5, random_state=args["seed"] + 1, n_seeds=2)
    _differs(fig, k_selection_figure(res.ks, res.scores, chosen=res.k))
