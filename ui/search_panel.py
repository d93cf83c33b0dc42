"""Merge Search page panels: the search setup, a run with progress and Cancel, a stored search.

The setup widgets build a search file's mapping (``core.search.load_search_spec`` checks it);
runs go through ``core.search.run_search``, which stores every evaluation, so a rerun of the
same named search resumes and a cancelled one keeps what it finished.
"""

from __future__ import annotations

from typing import Any

import streamlit as st

from core.merge import METHODS
from core.search import (
    OBJECTIVES,
    RECORD_KIND,
    SearchSpec,
    best_point_table,
    run_search,
    searchable_methods,
)
from core.zoo import Zoo

from .widgets import hyperparameter_form, method_description

CANCEL = "search.cancel"
SHOWN = "search.shown"  # the name of the search shown below the setup
N_VAL = [20, 50, 100, 250, 500, 1000]
N_TEST: list[int | str] = [100, 250, 500, 1000, "all"]


def _range_inputs(key: str, low: float, high: float, init: float) -> dict[str, float]:
    c1, c2, c3 = st.columns(3)
    return {
        "low": float(c1.number_input("low", value=float(low), key=f"{key}.low", format="%.4g")),
        "high": float(c2.number_input("high", value=float(high), key=f"{key}.high", format="%.4g")),
        "init": float(c3.number_input("init", value=float(init), key=f"{key}.init", format="%.4g")),
    }


def setup(zoo: Zoo, seed: int) -> dict[str, Any] | None:
    """Draw the setup widgets; the search file's mapping they define (None: nothing to search)."""
    records = zoo.list()
    by_id = {r.id: r for r in records}
    bases = [r.id for r in records if r.role == "base"]
    c1, c2 = st.columns([1, 3])
    base = c1.selectbox("Base model θ₀", bases + ["(none)"], key="search.base")
    base_id = None if base == "(none)" else base
    if base_id is not None:
        pool = [r.id for r in records if base_id in (r.base_id, r.parent_id) and r.role != "merged"]
    else:
        pool = [r.id for r in records if r.role != "merged"]
    pool = pool or [i for i in by_id if i != base_id]
    models = c2.multiselect(
        "Models to merge (zoo ids)", pool, default=pool[:4], key="search.models"
    )
    if not models:
        st.info("Pick at least one model to merge.")
        return None
    methods = searchable_methods(base_id is not None, len(models))
    if not methods:
        st.warning("No data-free merge method fits these models; pick a base or other models.")
        return None
    preferred = "task_arithmetic" if "task_arithmetic" in methods else methods[0]
    c1, c2 = st.columns([1, 2])
    method = c1.selectbox(
        "Merge method",
        methods,
        index=methods.index(preferred),
        format_func=lambda m: METHODS[m].title,
        key="search.method",
    )
    entry = METHODS[method]
    c2.caption(
        f"**{entry.title}** — {method_description(entry)}"
        + (f" · [paper]({entry.paper})" if entry.paper else "")
    )
    search = _searched(entry, base_id is not None)
    if not search:
        st.info("Choose what to search: per-model weights, per-layer coefficients or parameters.")
        return None
    exclude = list(search.get("params", {})) + (["weights"] if "weights" in search else [])
    st.markdown("**Fixed hyperparameters**")
    fixed = hyperparameter_form(entry, "search.fixed", len(models), labels=models, exclude=exclude)
    fixed = {k: v for k, v in fixed.items() if v is not None}
    st.markdown("**Budget**")
    c = st.columns(4)
    budget = c[0].number_input("Evaluations", 1, 10_000, 64, key="search.budget")
    popsize = c[1].number_input("Population", 2, 256, 8, key="search.popsize")
    sigma0 = c[2].number_input(
        "σ₀", 0.01, 1.0, 0.2, step=0.05, key="search.sigma0", help="initial step, in [0, 1] units"
    )
    search_seed = c[3].number_input("Seed", 0, 2**31 - 1, seed, key="search.seed")
    c3 = st.columns(3)
    objective = c3[0].radio("Objective", OBJECTIVES, horizontal=True, key="search.objective")
    n_val = c3[1].select_slider("Validation / task", N_VAL, value=250, key="search.n_val")
    n_test = c3[2].select_slider(
        "Test / task (best point)", N_TEST, value=1000, key="search.n_test"
    )
    name = st.text_input(
        "Search name",
        value="merge-search",
        key="search.name",
        help="a search of this name continues where it stopped (same definition)",
    )
    return {
        "name": name.strip(),
        "models": list(models),
        "base": base_id,
        "method": method,
        "params": fixed,
        "search": search,
        "objective": objective,
        "n_val": int(n_val),
        "n_test": n_test if isinstance(n_test, int) else None,
        "budget": int(budget),
        "popsize": int(popsize),
        "sigma0": float(sigma0),
        "seed": int(search_seed),
    }


def _searched(entry: Any, has_base: bool) -> dict[str, Any]:
    """The ``search`` entry of the mapping: what is searched, each with low / high / init."""
    st.markdown("**What to search**")
    hyper = {p.name: p for p in entry.params}
    out: dict[str, Any] = {}
    c1, c2 = st.columns(2)
    with c1:
        if "weights" in hyper and st.checkbox(
            "Per-model weights", value=True, key="search.weights"
        ):
            out["weights"] = _range_inputs("search.weights", 0.0, 1.0, 0.3)
    with c2:
        if has_base and st.checkbox(
            "Per-layer coefficients",
            value=False,
            key="search.layers",
            help="θₗ = θ₀ₗ + cₗ (θ_merged,ₗ − θ₀ₗ), one c per layer",
        ):
            out["layers"] = _range_inputs("search.layers", 0.0, 1.5, 1.0)
    floats = [n for n, p in hyper.items() if p.kind == "float"]
    if floats:
        chosen = st.multiselect("Hyperparameters to search", floats, key="search.params")
        params = {}
        for n in chosen:
            p = hyper[n]
            st.caption(n)
            params[n] = _range_inputs(f"search.param.{n}", p.low, p.high, p.default)
        if params:
            out["params"] = params
    return out


def run(zoo: Zoo, spec: SearchSpec, *, backend: str, device: str) -> dict[str, Any]:
    """Run (or resume) ``spec`` with a progress bar and a Cancel button; the summary."""
    bar = st.progress(0.0, text=f"Search {spec.name}: preparing…")
    # a click reruns the page, which stops this run at its next progress update; every
    # finished evaluation is already stored, so a later run resumes from there
    st.button("Cancel", key=CANCEL, icon=":material/cancel:")
    replayed = {"n": 0}

    def on_progress(info: dict[str, Any]) -> None:
        replayed["n"] += bool(info["replayed"])
        bar.progress(
            min(info["done"] / max(info["total"], 1), 1.0),
            text=f"generation {info['generation'] + 1} · evaluation {info['done']}/"
            f"{info['total']} · best validation accuracy {info['best_mean_val_accuracy']:.4f}"
            + (" · replaying stored" if info["replayed"] else ""),
        )

    summary = run_search(
        spec,
        zoo,
        backend=backend,
        device=device,
        progress=on_progress,
        should_stop=lambda: bool(st.session_state.get(CANCEL)),
    )
    bar.empty()
    summary = dict(summary, resumed=replayed["n"])
    return summary


def stored_searches(zoo: Zoo) -> dict[str, dict[str, Any]]:
    """Name -> summary of every search stored in the workspace."""
    return zoo.get_records(RECORD_KIND)


def describe(summary: dict[str, Any]) -> str:
    """One line about a stored search (for the picker)."""
    spec = summary.get("spec", {})
    return (
        f"{summary['search']} — {spec.get('method')} · {summary.get('n_evals', 0)}/"
        f"{spec.get('budget')} evaluations · {summary.get('status')}"
    )


def best_table(summary: dict[str, Any]) -> None:
    """The best point (weights / layer coefficients / parameters) and its scores."""
    table = best_point_table(summary)
    if table.empty:
        st.info("No finished evaluation yet.")
        return
    st.dataframe(
        table,
        hide_index=True,
        key="search.best_table",
        column_config={"value": st.column_config.NumberColumn(format="%.4f")},
    )
