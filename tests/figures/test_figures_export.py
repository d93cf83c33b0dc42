"""Figure export: every format is valid and sized for print, the kaleido server is reused,
names cannot escape the workspace, and a missing Chromium gives a clear error."""

from __future__ import annotations

import importlib
import json
import re
import struct
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
import pytest

from core.figures import (
    FORMATS,
    PALETTE,
    SIZES,
    ExportError,
    export,
    figure_data,
    png_px,
    provenance,
    render,
    safe_name,
    size_px,
)

EXP = importlib.import_module("core.figures.export")
ROOT = Path(__file__).resolve().parents[2]


def _fig() -> go.Figure:
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=[0.0, 0.5, 1.0], y=[0.9, 0.4, 0.8], name="path A"))
    fig.add_trace(go.Scatter(x=[0.0, 0.5, 1.0], y=[0.7, 0.6, 0.75], name="path B"))
    fig.update_layout(
        title="Accuracy along the path", xaxis_title="$\\lambda$", yaxis_title="accuracy"
    )
    return fig


def png_size(png: bytes) -> tuple[int, int]:
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", png[16:24])


def png_dpi(png: bytes) -> float:
    i = png.index(b"pHYs")
    ppm_x, _, unit = struct.unpack(">IIB", png[i + 4 : i + 13])
    assert unit == 1  # metres
    return ppm_x * 0.0254


def pdf_pages(pdf: bytes) -> int:
    return len(re.findall(rb"/Type\s*/Page[^s]", pdf))


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("export")
    paths = export(
        _fig(),
        out / "fig",
        formats=FORMATS,
        size="column",
        meta={"method": "task_arithmetic", "scale": 0.4, "seed": 3, "models": ["x"]},
    )
    return {p.suffix[1:]: p for p in paths}


def test_every_format_is_written(exported: dict[str, Path]) -> None:
    assert set(exported) == set(FORMATS)


def test_pdf_is_vector_with_one_page_of_the_column_size(exported: dict[str, Path]) -> None:
    pdf = exported["pdf"].read_bytes()
    assert pdf.startswith(b"%PDF-") and pdf.rstrip().endswith(b"%%EOF")
    assert pdf_pages(pdf) == 1
    box = re.search(rb"/MediaBox\s*\[\s*0\s+0\s+([\d.]+)\s+([\d.]+)", pdf)
    assert box is not None
    w_pt, h_pt = float(box.group(1)), float(box.group(2))
    assert (w_pt / 72, h_pt / 72) == pytest.approx(SIZES["column"], abs=0.02)  # inches
    assert b"OpenSans" in pdf  # the paper font is embedded
    assert b"/Subtype /Image" not in pdf  # vector, not a screenshot


def test_svg_parses_and_has_the_layout_size(exported: dict[str, Path]) -> None:
    root = ET.fromstring(exported["svg"].read_text())
    assert root.tag.endswith("svg")
    assert (int(root.get("width", 0)), int(root.get("height", 0))) == size_px("column")
    texts = "".join(root.itertext())
    assert "Accuracy along the path" in texts


def test_png_is_300_dpi_at_print_size(exported: dict[str, Path]) -> None:
    png = exported["png"].read_bytes()
    assert png_size(png) == png_px("column") == (1050, 750)  # 3.5 x 2.5 in at 300 dpi
    assert png_dpi(png) == pytest.approx(300, abs=0.1)


def test_html_works_offline(exported: dict[str, Path]) -> None:
    html = exported["html"].read_text()
    assert "Plotly.newPlot" in html and len(html) > 1_000_000  # plotly.js is embedded
    srcs = re.findall(r"<script[^>]*\bsrc=[\"']([^\"']+)", html)
    assert srcs == [], srcs  # nothing loaded from a CDN or anywhere else
    assert "MathJax" in html  # the figure uses LaTeX, so MathJax is embedded too


def test_csv_equals_the_figure_data(exported: dict[str, Path]) -> None:
    df = pd.read_csv(exported["csv"])
    assert list(df.columns) == ["trace", "x", "y"]
    assert df[df.trace == "path A"].y.tolist() == [0.9, 0.4, 0.8]
    assert df[df.trace == "path B"].x.tolist() == [0.0, 0.5, 1.0]


def test_provenance_json(exported: dict[str, Path]) -> None:
    meta = json.loads(exported["json"].read_text())
    assert meta["method"] == "task_arithmetic" and meta["scale"] == 0.4 and meta["seed"] == 3
    assert meta["size"] == "column" and meta["size_inches"] == [3.5, 2.5]
    assert {"torch", "plotly", "kaleido", "numpy"} <= set(meta["packages"])
    assert re.fullmatch(r"[0-9a-f]{40}", meta["git_commit"] or "")


def test_provenance_expands_model_records(tiny_zoo_dir: Path) -> None:
    meta = provenance({"models": ["mlp-ft-mnist", "nope"]}, workspace=tiny_zoo_dir)
    rec = meta["model_records"]["mlp-ft-mnist"]
    assert rec["parent_id"] == "mlp-base" and rec["train_config"]["seed"] == rec["seed"]
    assert meta["model_records"]["nope"] is None


def test_warm_exports_reuse_one_server() -> None:
    fig = _fig()
    render(fig, "svg")  # warm
    starts = EXP._SERVER.starts
    t0 = time.perf_counter()
    for fmt in ("svg", "pdf", "png"):
        render(fig, fmt, size="double")
    elapsed = time.perf_counter() - t0
    assert EXP._SERVER.starts == starts  # no new browser
    assert elapsed < 6.0, elapsed  # ~0.3-1 s each warm; a browser start per call would be 3x more


def test_double_size_and_data_override() -> None:
    png = render(_fig(), "png", size="double")
    assert png_size(png) == (2100, 900)
    csv = render(_fig(), "csv", data={"lam": [0, 1], "acc": [0.5, 0.75]}).decode()
    assert csv.splitlines() == ["lam,acc", "0,0.5", "1,0.75"]


def test_input_validation(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="formats"):
        export(_fig(), tmp_path / "a", formats=("gif",))
    with pytest.raises(ValueError, match="size"):
        export(_fig(), tmp_path / "a", formats=("csv",), size="poster")
    with pytest.raises(TypeError, match="fig"):
        export({"data": []}, tmp_path / "a", formats=("csv",))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="formats"):
        export(_fig(), tmp_path / "a", formats="png")
    with pytest.raises(ValueError, match="fmt"):
        render(_fig(), "eps")
    with pytest.raises(TypeError, match="data"):
        render(_fig(), "csv", data=[1, 2])
    assert not list(tmp_path.iterdir())  # nothing half-written


def test_names_cannot_escape_the_root(tmp_path: Path) -> None:
    root = tmp_path / "ws" / "figures"
    for evil in ("../escape", "../../etc/passwd", "/tmp/elsewhere", "a/../../b"):
        with pytest.raises(ValueError, match="inside"):
            export(_fig(), evil, formats=("csv",), root=root)
    assert not (tmp_path / "escape.csv").exists()
    assert safe_name("../../etc/passwd") == "etc-passwd"
    assert safe_name("..") == "figure" and safe_name("Merge lab: λ=0.3") == "Merge-lab-0.3"
    (path,) = export(_fig(), "sub/ok", formats=("csv",), root=root)
    assert path == root.resolve() / "sub" / "ok.csv" and path.exists()


def test_palette_is_okabe_ito() -> None:
    assert PALETTE[:3] == ("#0072B2", "#E69F00", "#009E73")
    fig = figure_data(_fig())
    assert len(fig) == 6


def test_missing_chromium_gives_export_error_and_still_writes_text_formats(tmp_path: Path) -> None:
    code = f"""
import os, sys
os.environ["BROWSER_PATH"] = {str(tmp_path / "no-such-chromium")!r}
import plotly.graph_objects as go
from core.figures import ExportError, export
try:
    export(go.Figure(go.Scatter(x=[1, 2], y=[3, 4])), {str(tmp_path / "f")!r},
           formats=("pdf", "html", "csv", "json"))
except ExportError as err:
    print("EXPORT-ERROR:", err)
    sys.exit(0)
sys.exit(3)
"""
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "needs Chromium" in out.stdout and "apt-get install chromium" in out.stdout
    assert "no-such-chromium" in out.stdout
    assert {p.suffix for p in tmp_path.iterdir()} == {".html", ".csv", ".json"}
    assert not isinstance(ExportError("x"), ValueError)
