"""The pages on a suite model set (tiny vision suite: two tasks, 32 px, two fine-tuning steps):
Merge Lab (live merge, progress, per-task heads, validation-tuned comparison), Interpolation
(BatchNorm recomputed), Feature Geometry (NC across fine-tuning), Clustering, and the
notebooks of their figures."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from core.benchmark.zoo_build import build_suite_zoo
from core.figures import figure_data
from core.notebook_export import notebook_for
from core.suite_lab import SuiteLab
from core.zoo import Zoo
from tests.test_suite_lab import TINY

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow  # the tiny suite zoo takes ~20 s on 2 cores


@pytest.fixture(scope="module")
def suite_ws(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("suite_pages_ws")
    build_suite_zoo(Zoo(root), TINY, device="cpu")
    return root


@pytest.fixture
def seen(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Figures the suite panels show: key -> (figure, recipe)."""
    import ui.suite_panels as panels
    from tests.helpers.app import record_figures

    return record_figures(monkeypatch, panels)


def _page(ws: Path, page: str, monkeypatch: pytest.MonkeyPatch, key: str) -> Any:
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("MIXMERGE_WORKSPACE", str(ws))
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=240).run()
    at.switch_page(page).run()
    assert not at.exception, at.exception
    assert at.radio(key=key).value == "vision"  # only suite models: the suite is the default
    assert not at.error, [e.value for e in at.error]
    return at


def _notebook_figure(recipe: dict[str, Any], ws: Path) -> Any:
    nb = notebook_for(recipe, workspace=ws)
    src = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    assert "streamlit" not in src
    ns: dict[str, Any] = {}
    for cell in nb.cells[1:-1]:
        if cell.cell_type == "code":
            exec(cell.source, ns)  # noqa: S102 - our own generated notebook
    return ns["fig"]


def _metrics(at: Any) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def test_merge_lab_on_a_suite(
    suite_ws: Path, monkeypatch: pytest.MonkeyPatch, seen: dict[str, Any]
) -> None:
    at = _page(suite_ws, "pages/2_Merge_Lab.py", monkeypatch, "merge.model_set")
    fig, recipe = seen["merge.suite_live"]
    assert recipe["kind"] == "suite_merge_accuracy" and recipe["args"]["device"] == "cpu"
    hyper = recipe["args"]["hyperparameters"]
    assert recipe["args"]["method"] == "task_arithmetic" and set(hyper) == {"scale", "weights"}
    lab = SuiteLab(Zoo(suite_ws), "vision", n_per_task=64, seed=0)
    want = lab.run("task_arithmetic", hyper).per_task
    got = _metrics(at)
    for task, acc in want.items():
        assert got[f"acc · {task}"] == f"{acc:.3f}"
    bars = [e.proto for e in at.get("progress")]  # the progress indicator, filled
    assert bars and bars[0].value == 100 and "merged and scored in" in bars[0].text
    assert list(fig.data[1].y[:2]) == pytest.approx(list(want.values()))
    assert figure_data(_notebook_figure(recipe, suite_ws)).equals(figure_data(fig))
    # a slider move: the merged model changes, and with it the per-task accuracy
    at.slider(key="merge.suite.scale").set_value(0.0).run()
    assert not at.exception and not at.error
    zero = lab.run("task_arithmetic", {**hyper, "scale": 0.0})
    assert zero.per_task == pytest.approx(zero.pretrained)
    got = _metrics(at)
    for task, acc in zero.per_task.items():
        assert got[f"acc · {task}"] == f"{acc:.3f}"
    # the comparison tab uses the validation-tuned protocol
    at.multiselect(key="merge.suite_cmp_methods").set_value(["task_arithmetic", "average"]).run()
    at.button(key="merge.suite_cmp_go").click().run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    table = at.dataframe[0].value
    assert set(table["method"]) == {"pretrained", "individual", "task_arithmetic", "average"}
    ta = table[table["method"] == "task_arithmetic"].iloc[0]
    assert ta["tuned on validation"].startswith("scale=")
    fig, recipe = seen["merge.suite_cmp"]
    assert recipe["kind"] == "suite_comparison"
    from core.benchmark.report import stored_results

    assert "vision-quick" in stored_results(Zoo(suite_ws))  # the Benchmark page shows it


def test_interpolation_geometry_and_clustering_on_a_suite(
    suite_ws: Path, monkeypatch: pytest.MonkeyPatch, seen: dict[str, Any]
) -> None:
    from core.suite_views import nc_across_finetuning, suite_interpolation

    zoo = Zoo(suite_ws)
    at = _page(suite_ws, "pages/3_Interpolation.py", monkeypatch, "interp.model_set")
    assert at.toggle(key="interp.suite_bn").value  # Lite0: BN recomputed by default
    at.slider(key="interp.suite_n_points").set_value(3)
    at.select_slider(key="interp.suite_n").set_value(16).run()
    at.button(key="interp.suite_go").click().run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    fig, recipe = seen["interp.suite_path"]
    want = suite_interpolation(zoo, "vision", "pretrained", "faces", n_points=3, n_examples=16)
    assert want.recompute_bn and recipe["args"]["recompute_bn"]
    loss_val, acc_val = [t for t in fig.data if (t.name or "").endswith(" · val")]
    assert list(loss_val.y) == pytest.approx(want.loss["val"], rel=1e-5)
    assert list(acc_val.y) == pytest.approx(want.accuracy["val"])
    assert figure_data(_notebook_figure(recipe, suite_ws)).equals(figure_data(fig))

    at = _page(suite_ws, "pages/6_Feature_Geometry.py", monkeypatch, "geometry.model_set")
    at.select_slider(key="geometry.suite_n").set_value(32).run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    across = nc_across_finetuning(zoo, "vision", "faces", split="train", n_examples=32)
    assert _metrics(at)["NC1"] == f"{across['pretrained']['nc1']:.3g}"
    fig, recipe = seen["geometry.suite_nc"]
    assert [t.name for t in fig.data] == ["pretrained", "faces"]
    assert fig.data[1].y[0] == pytest.approx(across["faces"]["nc1"])
    assert figure_data(_notebook_figure(recipe, suite_ws)).equals(figure_data(fig))
    proj_fig, proj_recipe = seen["geometry.suite_projection"]
    assert figure_data(_notebook_figure(proj_recipe, suite_ws)).equals(figure_data(proj_fig))

    at = _page(suite_ws, "pages/7_Clustering.py", monkeypatch, "cluster.model_set")
    at.select_slider(key="cluster.suite_n").set_value(32)
    at.slider(key="cluster.suite_k_max").set_value(3)
    at.slider(key="cluster.suite_n_seeds").set_value(2)
    at.button[0].click().run()  # the form's Run PPP
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    k = int(_metrics(at)["Chosen k"])
    assert 2 <= k <= 3
    fig, recipe = seen["cluster.suite_k"]
    assert recipe["kind"] == "suite_cluster"
    assert figure_data(_notebook_figure(recipe, suite_ws)).equals(figure_data(fig))


def test_pages_without_a_suite_show_how_to_build_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("MIXMERGE_WORKSPACE", str(tmp_path / "ws"))
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60).run()
    at.switch_page("pages/2_Merge_Lab.py").run()
    assert not at.exception
    assert any("zoo build --suite vision" in c.value for c in at.caption)
    assert not [r for r in at.radio if r.key == "merge.model_set"]
