"""Benchmark: every merge method on a real pretrained backbone, tuned on validation, with
bootstrap CIs on test, beside the field's CLIP ViT-B/32 numbers."""

import streamlit as st

import ui
from core.benchmark.report import results_table, shape_checks
from core.figures.benchmark import benchmark_figure
from ui import cache
from ui.errors import shown_errors
from ui.figure_panel import show_figure

settings = ui.frame("Benchmark", icon=":material/leaderboard:")
stored = cache.benchmark_results(str(settings.workspace))

st.caption(
    "The task-vector protocol (Ilharco et al. 2023): one pretrained backbone per suite "
    "(EfficientNet-Lite0 ImageNet-1k for images, all-MiniLM-L6-v2 for text), task heads fixed "
    "before fine-tuning, every merge scored with each task's own head; hyperparameters chosen on "
    "validation, accuracy on test with 95 % bootstrap CIs and McNemar's test against task "
    "arithmetic."
)
if not stored:
    st.info(
        "No benchmark results in this workspace yet. Build a suite zoo and run the benchmark:\n\n"
        "```\npython -m core zoo build --suite vision\n"
        "python -m core benchmark vision --out results.json\n```\n"
        "(`--quick` for small grids; `text` for the text suite)."
    )
    for suite in ("vision", "text"):
        with shown_errors("Checking the suite's data"):
            missing = [s for s in cache.suite_sources(suite) if not s["ok"]]
            if missing:
                st.warning(f"{suite} suite: " + "; ".join(s["message"] for s in missing))
    st.stop()

key = st.selectbox("Results", sorted(stored), key="benchmark.results")
res = stored[key]
with shown_errors("Showing the results"):
    table = results_table(res)
    fig = benchmark_figure(res)
    show_figure(
        fig,
        key="benchmark.figure",
        stem=f"benchmark_{key}",
        data=table,
        meta={"suite": res["suite"], "quick": res.get("quick", False), "date": res.get("date")},
        recipe={
            "kind": "benchmark_results",
            "args": {"suite": res["suite"], "quick": bool(res.get("quick"))},
        },
        caption=f"Merging benchmark, {res['suite']} suite: average test accuracy with 95% bootstrap CIs.",
    )
    st.dataframe(table, hide_index=True, key="benchmark.table")
    checks = shape_checks(res)
    st.markdown(
        "**The field's ordering** — "
        + " · ".join(
            f"{k}: {'—' if v is None else ('yes' if v else 'no')}" for k, v in checks.items()
        )
    )
    if res.get("skipped"):
        st.caption("Not run: " + "; ".join(f"{m} ({why})" for m, why in res["skipped"].items()))
