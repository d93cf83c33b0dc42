"""Benchmark: every merge method on a real pretrained backbone, tuned on validation, with
bootstrap CIs on test, beside the field's CLIP ViT-B/32 numbers."""

import streamlit as st

import ui
from core.benchmark.report import results_table, shape_checks
from core.figures.benchmark import benchmark_figure
from core.figures.scale import METHOD_LABELS, merging_at_scale_data, merging_at_scale_figure
from core.papers.merging_at_scale import DEFAULT_METHODS as SCALE_METHODS
from ui import cache, cache_suite
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

else:
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

st.subheader("Merging at scale (Yadav et al., 2024)")
st.caption(
    "“What Matters for Model Merging at Scale?” (arXiv 2410.03617): merge 1, 2, … N experts of "
    "a suite in several random task orders; held-in = accuracy on the merged experts' tasks ÷ "
    "each expert's, held-out = accuracy on the other tasks ÷ the pretrained backbone's (their "
    "fixed heads on the merged backbone). Each method's hyperparameters are chosen on "
    "validation for every subset, then scored on test. The paper's claims: held-in falls and "
    "held-out rises as experts are added, and stronger bases merge better."
)
suites = cache_suite.built_suites(str(settings.workspace))
if not suites:
    st.info("Build a suite zoo first: `python -m core zoo build --suite vision` (or `text`).")
else:
    c1, c2, c3, c4 = st.columns([1, 2, 1, 1])
    suite = c1.selectbox("Suite", suites, key="benchmark.scale_suite")
    methods = c2.multiselect(
        "Methods",
        list(SCALE_METHODS),
        default=list(SCALE_METHODS),
        format_func=lambda m: METHOD_LABELS.get(m, m),
        key="benchmark.scale_methods",
    )
    n_orders = c3.slider("Task orders", 1, 5, 3, key="benchmark.scale_orders")
    val_n = c4.select_slider(
        "Validation / task", [32, 64, 128, 256], value=128, key="benchmark.scale_val"
    )
    args = (suite, tuple(methods), n_orders, val_n, settings.seed, str(settings.torch_device))
    ws = str(settings.workspace)
    run = st.button(
        "Run the sweep", type="primary", key="benchmark.scale_run", disabled=not methods
    )
    if run or (methods and cache_suite.merging_at_scale_is_cached(ws, args)):
        with shown_errors("Merging at scale"):
            bar = st.progress(0.0, text="Merging subsets of experts…")

            def advance(done: int, total: int) -> None:
                bar.progress(min(done / max(total, 1), 1.0), text=f"Merging… {done}/{total}")

            study, _ = cache_suite.merging_at_scale(ws, *args, progress=advance)
            bar.empty()
            show_figure(
                merging_at_scale_figure(study),
                key="benchmark.scale_figure",
                stem=f"merging_at_scale_{suite}",
                data=merging_at_scale_data(study),
                meta={"suite": suite, "seed": settings.seed},
                recipe={
                    "kind": "merging_at_scale",
                    "args": {
                        "suite": suite,
                        "methods": list(methods),
                        "n_orders": n_orders,
                        "val_per_task": val_n,
                        "seed": settings.seed,
                    },
                },
                caption=(
                    f"Merging at scale, {suite} suite: normalised held-in and held-out accuracy "
                    "vs the number of merged experts (band: min–max over task orders)."
                ),
            )
            st.dataframe(merging_at_scale_data(study), hide_index=True, key="benchmark.scale_table")
    else:
        st.caption(
            "Every subset of every order is merged once per grid point: with 6 tasks, 3 orders "
            "and the four methods, about a hundred merges and evaluations (minutes on 2 CPU cores)."
        )
