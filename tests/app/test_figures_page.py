"""The figure collection (core.figures.store), show_figure's export panel and the Figures page."""

from __future__ import annotations

import io
import json
import struct
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
import pytest
from streamlit.testing.v1 import AppTest

from core.figures.store import FigureStore
from core.zoo import Zoo

ROOT = Path(__file__).resolve().parents[2]
APP = str(ROOT / "app.py")
RECIPE = {"kind": "training_history", "args": {"models": ["mlp-ft-mnist"]}}


def _fig(k: float = 1.0) -> go.Figure:
    return go.Figure(go.Scatter(x=[0, 1, 2], y=[k, 2 * k, 0.5 * k], name="acc"))


def test_store_add_list_caption_delete(tmp_path: Path) -> None:
    store = FigureStore(tmp_path)
    a = store.add(
        _fig(), caption="first", stem="../../evil name", meta={"seed": 4}, recipe=RECIPE, page="zoo"
    )
    b = store.add(
        _fig(2.0), caption="second", stem="b", data=pd.DataFrame({"lam": [0.1], "acc": [0.9]})
    )
    assert a.folder.parent == tmp_path.resolve() / "figures" and a.stem == "evil-name"
    assert [e.id for e in store.list()] == [a.id, b.id]
    assert store.get(a.id).figure().data[0].y == (1.0, 2.0, 0.5)  # the figure round-trips
    assert store.get(b.id).data().to_dict("list") == {"lam": [0.1], "acc": [0.9]}
    meta = json.loads((a.folder / "meta.json").read_text())
    assert meta["seed"] == 4 and meta["recipe"] == RECIPE and meta["git_commit"]
    assert Zoo(tmp_path).get_records("figure")[a.id]["caption"] == "first"
    store.set_caption(a.id, "edited")
    assert store.get(a.id).caption == "edited" and [e.id for e in store.list()] == [a.id, b.id]
    assert json.loads((a.folder / "meta.json").read_text())["caption"] == "edited"
    store.delete(a.id)
    assert [e.id for e in store.list()] == [b.id] and not a.folder.exists()
    assert not list((tmp_path / "tmp").glob(".tmp-fig-*"))  # nothing half-written left behind
    with pytest.raises(KeyError, match="not in the figure collection"):
        store.get(a.id)
    with pytest.raises(ValueError, match="fig_id"):
        store.get("../models")
    with pytest.raises(ValueError, match="recipe"):
        store.add(_fig(), recipe={"args": {}})
    with pytest.raises(TypeError, match="fig"):
        store.add("not a figure")  # type: ignore[arg-type]


def test_store_zip_and_rerender(tmp_path: Path) -> None:
    store = FigureStore(tmp_path)
    e = store.add(_fig(), caption="a caption", stem="acc", recipe=RECIPE)
    store.add(_fig(3.0), caption="", stem="other")
    blob = store.zip(formats=("pdf", "svg", "csv", "ipynb"), size="double")
    zf = zipfile.ZipFile(io.BytesIO(blob))
    names = set(zf.namelist())
    assert f"{e.id}/acc.pdf" in names and f"{e.id}/acc.ipynb" in names and "captions.md" in names
    assert zf.read(f"{e.id}/acc.pdf").startswith(b"%PDF-")
    ET.fromstring(zf.read(f"{e.id}/acc.svg"))
    assert pd.read_csv(io.BytesIO(zf.read(f"{e.id}/acc.csv"))).y.tolist() == [1, 2, 0.5]
    assert json.loads(zf.read(f"{e.id}/acc.ipynb"))["metadata"]["mixmerge"]["recipe"] == RECIPE
    assert "a caption" in zf.read("captions.md").decode()
    seen: list[str] = []
    written = store.rerender(
        "double", formats=("png",), progress=lambda k, n, fid: seen.append(fid)
    )
    assert len(written) == 2 and seen[-1] == ""
    png = (e.folder / "export" / "acc.png").read_bytes()
    assert struct.unpack(">II", png[16:24]) == (2100, 900)  # 7 x 3 in at 300 dpi
    assert store.get(e.id).size == "double"


def _panel_script() -> None:
    import plotly.graph_objects as go

    from ui.figure_panel import show_figure

    fig = go.Figure(go.Scatter(x=[0, 1], y=[0.25, 0.75], name="acc"))
    show_figure(
        fig,
        key="test.fig",
        stem="panel test",
        meta={"seed": 7},
        recipe={"kind": "training_history", "args": {"models": ["mlp-base"]}},
        caption="From a test",
    )


def test_show_figure_panel_adds_to_figures(empty_workspace: Path) -> None:
    at = AppTest.from_function(_panel_script, default_timeout=60).run()
    assert not at.exception
    labels = [b.label for b in at.get("download_button")]
    assert labels == ["PNG (300 dpi)", "SVG", "PDF", "HTML", "Data (CSV)", "Provenance", "Notebook"]
    assert at.selectbox(key="test.fig.size").value == "column"
    at.text_input(key="test.fig.caption").set_value("Accuracy vs lambda")
    at.button(key="test.fig.add").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    (entry,) = FigureStore(empty_workspace).list()
    assert (
        entry.caption == "Accuracy vs lambda"
        and entry.page == "test"
        and entry.stem == "panel-test"
    )
    assert entry.recipe == {"kind": "training_history", "args": {"models": ["mlp-base"]}}
    assert entry.meta == {"seed": 7}


def test_figures_page_lists_edits_and_deletes(empty_workspace: Path) -> None:
    store = FigureStore(empty_workspace)
    a = store.add(_fig(), caption="one", stem="one", recipe=RECIPE, page="merge")
    b = store.add(_fig(2.0), caption="two", stem="two")
    at = AppTest.from_file(APP, default_timeout=60).run()
    at.switch_page("pages/8_Figures.py").run()
    assert not at.exception
    assert len(at.get("plotly_chart")) == 2
    assert any(lbl.label == "Download all 2 (zip)" for lbl in at.get("download_button"))
    at.text_area(key=f"figures.caption.{a.id}").set_value("one, edited").run()
    assert store.get(a.id).caption == "one, edited"
    at.checkbox(key=f"figures.sure.{b.id}").check().run()
    at.button(key=f"figures.delete.{b.id}").click().run()
    assert not at.exception
    assert [e.id for e in store.list()] == [a.id]
    assert len(at.get("plotly_chart")) == 1


def test_figures_page_empty(empty_workspace: Path) -> None:
    at = AppTest.from_file(APP, default_timeout=60).run()
    at.switch_page("pages/8_Figures.py").run()
    assert not at.exception
    assert "No figures yet" in at.info[0].value


def test_caption_typed_then_added_is_stored(empty_workspace: Path) -> None:
    """The caption typed in the Export panel reaches the store: caption and button are one
    form, so the click carries the typed text with it (no blur-rerun needed in between)."""
    at = AppTest.from_function(_panel_script, default_timeout=60).run()
    at.selectbox(key="test.fig.size").set_value("double").run()
    forms = [f for f in at.get("form") if f.proto.form.form_id == "test.fig.add_form"]
    assert forms, "the caption and Add to figures must be in one st.form"
    assert {w.key for w in forms[0].get("text_input")} == {"test.fig.caption"}
    at.text_input(key="test.fig.caption").set_value("Typed and added at once")
    at.button(key="test.fig.add").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    (entry,) = FigureStore(empty_workspace).list()
    assert entry.caption == "Typed and added at once" and entry.size == "double"
    assert "Typed and added at once" in at.success[0].value


def test_export_panel_edits_title_and_previews_at_size(empty_workspace: Path) -> None:
    import json as _json

    at = AppTest.from_function(_panel_script, default_timeout=60).run()
    at.text_input(key="test.fig.title").set_value("Edited title").run()
    at.toggle(key="test.fig.preview").set_value(True).run()
    assert not at.exception
    spec = _json.loads(at.get("plotly_chart")[-1].proto.spec)
    assert spec["layout"]["width"] == 336 and spec["layout"]["title"]["text"] == "Edited title"
    at.selectbox(key="test.fig.size").set_value("double").run()
    spec = _json.loads(at.get("plotly_chart")[-1].proto.spec)
    assert spec["layout"]["width"] == 672
    at.toggle(key="test.fig.show_title").set_value(False).run()
    spec = _json.loads(at.get("plotly_chart")[-1].proto.spec)
    assert not spec["layout"]["title"].get("text")
    at.button(key="test.fig.add").click().run()
    (entry,) = FigureStore(empty_workspace).list()
    assert not entry.figure().layout.title.text  # stored as exported: without the title
