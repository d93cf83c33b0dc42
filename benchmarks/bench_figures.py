"""Figure export timings: core.figures.export (one persistent kaleido server) against plain
``fig.write_image`` in kaleido's default one-shot mode (a Chromium start per image), measured
in the same run on the same figure.

    python benchmarks/bench_figures.py [--repeats 5]

Prints a markdown table (median seconds per export and the ratio one-shot / ours).
"""

from __future__ import annotations

import argparse
import importlib
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import plotly.graph_objects as go

from core.figures import apply_paper, export, size_px

EXP = importlib.import_module("core.figures.export")


def sample_figure() -> go.Figure:
    """A typical workbench figure: two lines of 25 points with markers, a LaTeX axis title."""
    t = np.linspace(0, 1, 25)
    fig = go.Figure()
    fig.add_trace(
        go.Scatter(x=t, y=0.9 - 0.3 * np.sin(np.pi * t), name="naive", mode="lines+markers")
    )
    fig.add_trace(
        go.Scatter(
            x=t, y=0.9 - 0.05 * np.sin(np.pi * t), name="weight matching", mode="lines+markers"
        )
    )
    fig.update_layout(title="Accuracy along the path", xaxis_title="$t$", yaxis_title="accuracy")
    return apply_paper(fig)


def timed(fn) -> float:  # type: ignore[no-untyped-def]
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    fig = sample_figure()
    w, h = size_px("column")
    out = Path(tempfile.mkdtemp(prefix="bench-figures-"))
    EXP.stop_server()
    first = timed(
        lambda: export(fig, out / "first", formats=("pdf",))
    )  # includes the browser start
    rows = []
    for fmt in ("png", "svg", "pdf"):
        ours = [
            timed(lambda fmt=fmt: export(fig, out / f"ours-{fmt}", formats=(fmt,)))
            for _ in range(args.repeats)
        ]
        rows.append((fmt, statistics.median(ours)))
    text = {
        fmt: statistics.median(
            [
                timed(lambda fmt=fmt: export(fig, out / f"t-{fmt}", formats=(fmt,)))
                for _ in range(args.repeats)
            ]
        )
        for fmt in ("html", "csv", "json")
    }
    EXP.stop_server()  # plotly now runs kaleido one-shot: a new Chromium per image
    peer = {}
    for fmt in ("png", "svg", "pdf"):
        scale = 300 / 96 if fmt == "png" else 1
        times = [
            timed(
                lambda fmt=fmt, scale=scale: fig.write_image(
                    out / f"peer.{fmt}", format=fmt, width=w, height=h, scale=scale
                )
            )
            for _ in range(max(2, args.repeats // 2))
        ]
        peer[fmt] = statistics.median(times)
    print(
        f"machine: {platform.node()} · {platform.processor() or platform.machine()} · python {platform.python_version()}"
    )
    print(f"first static export in a fresh process (starts Chromium): {first:.2f} s\n")
    print("| format | core.figures.export, warm (s) | fig.write_image one-shot (s) | ratio |")
    print("|---|---|---|---|")
    for fmt, ours_s in rows:
        print(f"| {fmt} | {ours_s:.3f} | {peer[fmt]:.3f} | {peer[fmt] / ours_s:.1f}x |")
    for fmt, s in text.items():
        print(f"| {fmt} | {s:.3f} | – | – |")


if __name__ == "__main__":
    main()
