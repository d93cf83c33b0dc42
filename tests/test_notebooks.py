"""Notebooks: the area notebooks are stored without outputs and run top to bottom on the tiny
zoo; a notebook generated from a figure's recipe recomputes exactly that figure's data."""

from __future__ import annotations

import io
import json
from pathlib import Path

import nbformat
import pandas as pd
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
