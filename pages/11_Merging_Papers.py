"""Merging papers: the studies behind the workbench, each runnable on the zoo with its key
figure — Sparse Model Soups (Zimmer et al.), BatchNorm re-estimation from label-correlated
streams (after UnMix-TNS, Tomar et al.), ZipIt! / PLeaS for different-init models, and MC-SMoE
(Li et al.) for the experts of a sparse mixture-of-experts model."""

import streamlit as st

import ui
from core.figures.papers import (
    bn_stream_data,
    bn_stream_figure,
    different_init_data,
    different_init_figure,
    mc_smoe_data,
    mc_smoe_figure,
    sparse_soup_data,
    sparse_soup_figure,
)
from core.zoo import train_custom
from ui import cache, cache_papers
from ui.errors import shown_errors
from ui.figure_panel import show_figure
from ui.widgets import progress_bar

settings = ui.frame("Merging Papers", icon=":material/menu_book:")
zoo = cache.zoo(settings.workspace)
records = zoo.list()
if not records:
    st.info("The studies start from zoo models: build the default zoo on the Home page.")
    st.stop()
by_id = {r.id: r for r in records}
ids = [r.id for r in records if r.arch in ("mlp", "cnn", "resnet20")]
if not ids:
    st.info("No built-in-architecture model (mlp, cnn, resnet20) in the zoo yet.")
    st.stop()
tasks = cache.tasks_available()
ss = st.session_state
device = str(settings.torch_device)


tab_sms, tab_bn, tab_zip, tab_moe = st.tabs(
    [
        "Sparse Model Soups",
        "BN re-estimation (UnMix-TNS)",
        "Different inits (ZipIt!, PLeaS)",
        "MoE experts (MC-SMoE)",
    ]
)

with tab_sms:
    st.caption(
        "Zimmer et al., ICLR 2024 (arXiv 2306.16788): prune by magnitude, retrain several copies "
        "of the pruned model with different seeds under the same mask, average them, and start "
        "the next prune-retrain cycle from the average. Claim: the soup beats each of its "
        "ingredients and stays exactly as sparse."
    )
    c1, c2 = st.columns(2)
    default = ids.index("mlp-mnist-s1") if "mlp-mnist-s1" in ids else 0
    model_id = c1.selectbox("Dense model", ids, index=default, key="papers.sms_model")
    rec = by_id[model_id]
    task_name = c2.selectbox(
        "Task",
        tasks,
        index=tasks.index(rec.task) if rec.task in tasks else 0,
        key="papers.sms_task",
    )
    d1, d2, d3, d4, d5 = st.columns(5)
    cycles = d1.slider("Cycles", 1, 5, 3, key="papers.sms_cycles")
    prune = d2.select_slider(
        "Pruned per cycle", [0.2, 0.3, 0.4, 0.5, 0.6, 0.7], value=0.5, key="papers.sms_prune"
    )
    n_ingredients = d3.slider("Ingredients", 2, 6, 3, key="papers.sms_ingredients")
    epochs = d4.slider("Retraining epochs", 1, 10, 2, key="papers.sms_epochs")
    lr = d5.select_slider(
        "Learning rate (Adam)", [3e-4, 1e-3, 3e-3, 1e-2], value=1e-3, key="papers.sms_lr"
    )
    request = (model_id, task_name, cycles, prune, n_ingredients, epochs, lr, settings.seed)
    if st.button("Run Sparse Model Soups", type="primary", key="papers.run_sms"):
        ss["papers.sms_request"] = request
    if ss.get("papers.sms_request") == request:
        with shown_errors("Sparse Model Soups"):
            bar, cb = progress_bar("Retraining ingredients…")
            res = cache_papers.sparse_model_soup(
                settings.workspace,
                model_id,
                rec.sha256,
                task_name,
                cycles,
                prune,
                n_ingredients,
                epochs,
                lr,
                settings.seed,
                device,
                progress=cb,
            )
            bar.empty()
            show_figure(
                sparse_soup_figure(res),
                key="papers.sms",
                stem=f"sparse_model_soup_{model_id}_{task_name}",
                data=sparse_soup_data(res),
                meta={"models": [model_id], "task": task_name, "seed": settings.seed},
                recipe={
                    "kind": "sparse_model_soup",
                    "args": {
                        "model": model_id,
                        "task": task_name,
                        "cycles": cycles,
                        "prune_fraction": prune,
                        "n_ingredients": n_ingredients,
                        "epochs": epochs,
                        "lr": lr,
                        "seed": settings.seed,
                    },
                },
            )
            st.dataframe(sparse_soup_data(res), hide_index=True, key="papers.sms_table")
    else:
        st.caption(
            "Each ingredient is a short retraining run: cycles × ingredients runs in all "
            "(about a second per epoch for the default MLP on 2 CPU cores)."
        )

with tab_bn:
    st.caption(
        "After UnMix-TNS (Tomar et al., ICLR 2024, arXiv 2401.08328): BatchNorm statistics "
        "re-estimated after merging are wrong when the calibration batches are sorted by label "
        "(each batch holds one or two classes). The unmixed option pools every sample's moments "
        "layer by layer, so the order of the stream no longer matters."
    )
    bn_ids = [r.id for r in records if r.arch in ("cnn", "resnet20")]
    if len(bn_ids) < 2:
        st.info("This study needs two BatchNorm models (cnn or resnet20) of the same shape.")
    else:
        b1, b2, b3 = st.columns(3)
        first = bn_ids.index("cnn-mnist-s1") if "cnn-mnist-s1" in bn_ids else 0
        bn_a = b1.selectbox("Model A", bn_ids, index=first, key="papers.bn_a")
        rec_a = by_id[bn_a]
        partners = [
            i
            for i in bn_ids
            if i != bn_a
            and by_id[i].arch == rec_a.arch
            and by_id[i].arch_kwargs == rec_a.arch_kwargs
        ]
        if not partners:
            st.warning(f"No other model in the zoo has {bn_a}'s architecture.")
        else:
            guess = bn_a.replace("-s1", "-s2")
            bn_b = b2.selectbox(
                "Model B",
                partners,
                index=partners.index(guess) if guess in partners else 0,
                key="papers.bn_b",
            )
            bn_task = b3.selectbox(
                "Task",
                tasks,
                index=tasks.index(rec_a.task) if rec_a.task in tasks else 0,
                key="papers.bn_task",
            )
            e1, e2, e3 = st.columns(3)
            align = e1.radio(
                "Merge", ["weight matching", "naive"], horizontal=True, key="papers.bn_align"
            )
            levels = e2.multiselect(
                "Classes per batch in the sorted streams",
                [1, 2, 5],
                default=[1, 2],
                key="papers.bn_levels",
            )
            n_examples = e3.select_slider(
                "Calibration examples", [500, 1000, 2000, 4000], value=2000, key="papers.bn_n"
            )
            request = (bn_a, bn_b, bn_task, align, tuple(levels), n_examples, settings.seed)
            if st.button(
                "Run BN re-estimation study",
                type="primary",
                key="papers.run_bn",
                disabled=not levels,
            ):
                ss["papers.bn_request"] = request
            if ss.get("papers.bn_request") == request:
                with shown_errors("The BN re-estimation study"):
                    with st.spinner("Merging and re-estimating BatchNorm statistics…"):
                        study = cache_papers.bn_stream_study(
                            settings.workspace,
                            bn_a,
                            rec_a.sha256,
                            bn_b,
                            by_id[bn_b].sha256,
                            bn_task,
                            align,
                            tuple(levels),
                            n_examples,
                            128,
                            settings.seed,
                        )
                    show_figure(
                        bn_stream_figure(study),
                        key="papers.bn",
                        stem=f"bn_streams_{bn_a}_{bn_b}",
                        data=bn_stream_data(study),
                        meta={"models": [bn_a, bn_b], "task": bn_task, "seed": settings.seed},
                        recipe={
                            "kind": "bn_stream_study",
                            "args": {
                                "models": [bn_a, bn_b],
                                "task": bn_task,
                                "align": align,
                                "classes_per_batch": list(levels),
                                "n_examples": n_examples,
                                "batch_size": 128,
                                "seed": settings.seed,
                            },
                        },
                    )
                    st.dataframe(bn_stream_data(study), hide_index=True, key="papers.bn_table")
            else:
                st.caption("Press **Run BN re-estimation study** (seconds for the default CNN).")

with tab_zip:
    st.caption(
        "ZipIt! (Stoica et al., ICLR 2024, arXiv 2305.03053) merges features within and across "
        "two models, optionally keeping later layers separate (partial zipping). PLeaS (Nasery et "
        "al., CVPR 2025, arXiv 2407.02447) keeps the worst-matched units of each layer separate "
        "and fits every merged layer by least squares to the models' features; its width lies "
        "between one model and the concatenation. Claim: both beat permutation-only merging of "
        "models from different initialisations, PLeaS at equal size."
    )
    mlp_ids = [r.id for r in records if r.arch == "mlp"]
    if len(mlp_ids) < 2:
        st.info("This study needs two MLPs of the same shape in the zoo.")
    else:
        z1, z2, z3 = st.columns(3)
        first = mlp_ids.index("mlp-mnist-s1") if "mlp-mnist-s1" in mlp_ids else 0
        zip_a = z1.selectbox("Model A", mlp_ids, index=first, key="papers.zip_a")
        rec_za = by_id[zip_a]
        zip_partners = [
            i for i in mlp_ids if i != zip_a and by_id[i].arch_kwargs == rec_za.arch_kwargs
        ]
        if not zip_partners:
            st.warning(f"No other MLP in the zoo has {zip_a}'s shape.")
        else:
            guess = zip_a.replace("-s1", "-s2")
            zip_b = z2.selectbox(
                "Model B",
                zip_partners,
                index=zip_partners.index(guess) if guess in zip_partners else 0,
                key="papers.zip_b",
            )
            zip_task = z3.selectbox(
                "Task",
                tasks,
                index=tasks.index(rec_za.task) if rec_za.task in tasks else 0,
                key="papers.zip_task",
            )
            y1, y2 = st.columns(2)
            ratios = y1.multiselect(
                "PLeaS: fraction of units kept separate",
                [0.0, 0.25, 0.5, 0.75, 1.0],
                default=[0.0, 0.25, 0.5, 1.0],
                key="papers.zip_ratios",
            )
            zip_n = y2.select_slider(
                "Unlabelled examples", [500, 1000, 2000, 4000], value=2000, key="papers.zip_n"
            )
            request = (zip_a, zip_b, zip_task, tuple(sorted(ratios)), zip_n, settings.seed)
            if st.button(
                "Run different-init study",
                type="primary",
                key="papers.run_zip",
                disabled=not ratios,
            ):
                ss["papers.zip_request"] = request
            if ss.get("papers.zip_request") == request:
                with shown_errors("The different-init merging study"):
                    bar, cb = progress_bar("Merging…")
                    study = cache_papers.different_init_study(
                        settings.workspace,
                        zip_a,
                        rec_za.sha256,
                        zip_b,
                        by_id[zip_b].sha256,
                        zip_task,
                        tuple(sorted(ratios)),
                        zip_n,
                        settings.seed,
                        progress=cb,
                    )
                    bar.empty()
                    show_figure(
                        different_init_figure(study),
                        key="papers.zip",
                        stem=f"different_init_{zip_a}_{zip_b}",
                        data=different_init_data(study),
                        meta={"models": [zip_a, zip_b], "task": zip_task, "seed": settings.seed},
                        recipe={
                            "kind": "different_init_study",
                            "args": {
                                "models": [zip_a, zip_b],
                                "task": zip_task,
                                "ratios": sorted(ratios),
                                "n_examples": zip_n,
                                "seed": settings.seed,
                            },
                        },
                    )
                    st.dataframe(
                        different_init_data(study), hide_index=True, key="papers.zip_table"
                    )
            else:
                st.caption("Press **Run different-init study** (seconds for the default MLP).")

with tab_moe:
    st.caption(
        "MC-SMoE (Li et al., ICLR 2024, arXiv 2310.01334): group a sparse MoE's experts by routing "
        "statistics (the most used experts lead the groups, the rest join the one whose router "
        "logits they resemble), permute each member onto its group's leader and average with "
        "activation-frequency weights (M-SMoE), then store the merged experts as low-rank + "
        "sparse (MC-SMoE). Claim: at equal expert count this keeps accuracy better than uniform "
        "averaging or random groups. No fine-tuning after merging here (the paper distils)."
    )
    moe_ids = [r.id for r in records if r.arch == "moe"]
    if ss.get("papers.moe_trained") in moe_ids:  # just trained: select it (before the widget)
        ss["papers.moe_model"] = ss.pop("papers.moe_trained")
    m1, m2 = st.columns(2)
    moe_id = m1.selectbox("Sparse MoE model", moe_ids, key="papers.moe_model") if moe_ids else None
    moe_rec = by_id[moe_id] if moe_id else None
    default_task = moe_rec.task if moe_rec is not None else "fashion"
    moe_task = m2.selectbox(
        "Task",
        tasks,
        index=tasks.index(default_task) if default_task in tasks else 0,
        key="papers.moe_task",
    )
    if moe_rec is None:
        st.info(
            "No sparse MoE (architecture `moe`) in the zoo yet: train one for this task here, "
            "or on the Model Zoo page."
        )
    t1, t2 = st.columns([1, 2])
    train_epochs = t1.slider("Training epochs", 1, 10, 3, key="papers.moe_train_epochs")
    if t2.button("Train a sparse MoE (8 experts, top-2)", key="papers.moe_train", type="secondary"):
        bar, cb = progress_bar("Training the MoE…")
        with shown_errors("Training the sparse MoE"):
            new = train_custom(
                zoo,
                arch="moe",
                task=moe_task,
                epochs=int(train_epochs),
                seed=settings.seed,
                lr=1e-3,
                name=f"moe-{moe_task}-s{settings.seed}",
                device=settings.device,
                progress=lambda info: cb(info["step"], info["steps"]),
            )
            bar.empty()
            ss["papers.moe_trained"] = new.id
            st.rerun()
    if moe_rec is not None:
        n_experts = int(moe_rec.arch_kwargs.get("n_experts", 8))
        g1, g2, g3, g4 = st.columns(4)
        counts_offered = [g for g in (1, 2, 3, 4, 6, 8, 12, 16) if g < n_experts]
        group_counts = g1.multiselect(
            "Experts kept per block",
            counts_offered,
            default=[g for g in (6, 4, 2, 1) if g in counts_offered],
            key="papers.moe_groups",
        )
        rank_fraction = g2.select_slider(
            "Low-rank share", [0.05, 0.1, 0.15, 0.25, 0.4], value=0.15, key="papers.moe_rank"
        )
        sparse_density = g3.select_slider(
            "Sparse residual kept", [0.0, 0.05, 0.1, 0.2], value=0.1, key="papers.moe_sparse"
        )
        moe_n = g4.select_slider(
            "Routing examples", [500, 1000, 2000, 4000], value=2000, key="papers.moe_n"
        )
        counts = sorted(group_counts, reverse=True)
        moe_args = {
            "model": moe_rec.id,
            "task": moe_task,
            "group_counts": counts,
            "rank_fraction": rank_fraction,
            "sparse_density": sparse_density,
            "n_examples": moe_n,
            "seed": settings.seed,
        }
        request = (moe_rec.sha256, repr(sorted(moe_args.items())))
        if st.button(
            "Run MC-SMoE study", type="primary", key="papers.run_moe", disabled=not counts
        ):
            ss["papers.moe_request"] = request
        if ss.get("papers.moe_request") == request:
            with shown_errors("The MC-SMoE study"):
                bar, cb = progress_bar("Merging experts…")
                study = cache.recipe_live(
                    settings.workspace, "mc_smoe_study", moe_args, progress=cb
                )
                bar.empty()
                show_figure(
                    mc_smoe_figure(study),
                    key="papers.moe",
                    stem=f"mc_smoe_{moe_rec.id}_{moe_task}",
                    data=mc_smoe_data(study),
                    recipe=("mc_smoe_study", moe_args),
                )
                st.dataframe(mc_smoe_data(study), hide_index=True, key="papers.moe_table")
        else:
            st.caption("Press **Run MC-SMoE study** (seconds for the default MoE).")
