"""Benchmark: every merge method on a real pretrained backbone, tuned on validation, with
bootstrap CIs on test, beside the field's CLIP ViT-B/32 numbers."""

import pandas as pd
import streamlit as st

import ui
from core.benchmark.report import results_table, shape_checks
from core.figures.adapters import orthogonal_adaptation_data, orthogonal_adaptation_figure
from core.figures.benchmark import benchmark_figure
from core.figures.scale import METHOD_LABELS, merging_at_scale_data, merging_at_scale_figure
from core.papers.merging_at_scale import DEFAULT_METHODS as SCALE_METHODS
from core.papers.orthogonal_adaptation import VARIANT_LABELS as ORTHO_LABELS
from core.papers.orthogonal_adaptation import VARIANTS as ORTHO_VARIANTS
from ui import cache, cache_suite
from ui.errors import shown_errors
from ui.figure_panel import show_figure
from ui.widgets import progress_bar

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

st.subheader("Paper studies on a suite zoo")
suites = cache_suite.built_suites(str(settings.workspace))
tab_scale, tab_ortho = st.tabs(
    ["Merging at scale (Yadav et al., 2024)", "Orthogonal adaptation (Po et al., 2024)"]
)
with tab_scale:
    st.caption(
        "“What Matters for Model Merging at Scale?” (arXiv 2410.03617): merge 1, 2, … N experts of "
        "a suite in several random task orders; held-in = accuracy on the merged experts' tasks ÷ "
        "each expert's, held-out = accuracy on the other tasks ÷ the pretrained backbone's (their "
        "fixed heads on the merged backbone). Each method's hyperparameters are chosen on "
        "validation for every subset, then scored on test. The paper's claims: held-in falls and "
        "held-out rises as experts are added, and stronger bases merge better."
    )
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
                bar, advance = progress_bar("Merging subsets of experts…")
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
                st.dataframe(
                    merging_at_scale_data(study), hide_index=True, key="benchmark.scale_table"
                )
        else:
            st.caption(
                "Every subset of every order is merged once per grid point: with 6 tasks, 3 orders "
                "and the four methods, about a hundred merges and evaluations (minutes on 2 CPU cores)."
            )

with tab_ortho:
    st.caption(
        "“Orthogonal Adaptation for Modular Customization of Diffusion Models” (Po et al., "
        "CVPR 2024, arXiv 2312.02432), on a classification suite: one rank-r adapter per task on "
        "the pretrained backbone (its linear and pointwise-convolution layers), trained on that "
        "task alone with its fixed head; then every task's adapter added to the backbone at once, "
        "with no tuning. Orthogonal adapters keep a fixed down-projection taken from one shared "
        "orthogonal basis (disjoint rows per task), so one task's adapter is blind to what another "
        "reads; ordinary LoRA trains its down-projection; random fixed bases separate “fixed” "
        "from “orthogonal”. The paper's claim: summed orthogonal adapters keep each task's "
        "accuracy, summed ordinary LoRAs lose more."
    )
    if not suites:
        st.info(
            "No suite zoo in this workspace: the study needs a built suite (its pretrained "
            "backbone and the task heads of its fine-tunes). Build one with "
            "`python -m core zoo build --suite vision` (or `text`), then reload this page."
        )
    else:
        c1, c2, c3, c4, c5 = st.columns([1, 2, 1, 1, 1])
        o_suite = c1.selectbox("Suite", suites, key="benchmark.ortho_suite")
        variants = c2.multiselect(
            "Variants",
            list(ORTHO_VARIANTS),
            default=list(ORTHO_VARIANTS),
            format_func=lambda v: ORTHO_LABELS.get(v, v),
            key="benchmark.ortho_variants",
        )
        rank = c3.select_slider("Rank", [1, 2, 4, 8, 16], value=4, key="benchmark.ortho_rank")
        steps = c4.select_slider(
            "Steps / adapter", [10, 25, 50, 100, 200], value=100, key="benchmark.ortho_steps"
        )
        test_n = c5.select_slider(
            "Test / task", [32, 64, 128, 256, 512], value=256, key="benchmark.ortho_test"
        )
        device = str(settings.torch_device)
        o_args = (o_suite, tuple(variants), rank, steps, test_n, settings.seed, device)
        ws = str(settings.workspace)
        o_run = st.button(
            "Train and sum the adapters",
            type="primary",
            key="benchmark.ortho_run",
            disabled=not variants,
        )
        if o_run or (variants and cache_suite.orthogonal_adaptation_is_cached(ws, o_args)):
            with shown_errors("Orthogonal adaptation"):
                o_bar, o_advance = progress_bar("Training the adapters, step")
                o_study, _ = cache_suite.orthogonal_adaptation(ws, *o_args, progress=o_advance)
                o_bar.empty()
                show_figure(
                    orthogonal_adaptation_figure(o_study),
                    key="benchmark.ortho_figure",
                    stem=f"orthogonal_adaptation_{o_suite}",
                    data=orthogonal_adaptation_data(o_study),
                    recipe=(
                        "orthogonal_adaptation",
                        {
                            "suite": o_suite,
                            "variants": list(variants),
                            "rank": rank,
                            "steps": steps,
                            "test_per_task": test_n,
                            "seed": settings.seed,
                        },
                    ),
                    caption=(
                        f"Orthogonal adaptation, {o_suite} suite: mean test accuracy of each "
                        f"variant's rank-{rank} adapters alone and summed, and the share of each "
                        "task's accuracy the sum keeps."
                    ),
                )
                st.dataframe(
                    pd.DataFrame(o_study.summary()), hide_index=True, key="benchmark.ortho_summary"
                )
                st.caption(
                    f"{o_study.n_layers} adapted layers. alone / summed: mean test accuracy of a "
                    "task's own adapter / of all adapters added; kept: summed ÷ alone, averaged "
                    "over tasks; overlap: how much the tasks' down-projections share (0: "
                    "mutually orthogonal)."
                )
                st.dataframe(
                    orthogonal_adaptation_data(o_study),
                    hide_index=True,
                    key="benchmark.ortho_table",
                )
        else:
            st.caption(
                "Trains one adapter per task and variant: with 6 tasks, 3 variants and 100 steps, "
                "1,800 training steps of the backbone (tens of minutes on 2 CPU cores)."
            )
