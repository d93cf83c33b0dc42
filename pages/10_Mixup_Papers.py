"""Mixup Papers: the mixing papers' headline claims, reproduced on tiny offline settings."""

from collections.abc import Callable
from typing import Any

import streamlit as st

import ui
from ui import cache
from ui.errors import shown_errors
from ui.figure_panel import show_figure
from core.figures.mix_papers import FIGURES
from core.mixup.papers import PAPERS, headline, load_paper_runs, store_run
from core.train import TrainingCancelled

settings = ui.frame("Mixup Papers", icon=":material/science:")
zoo = cache.zoo(settings.workspace)
st.caption(
    "Each tab reproduces one paper's headline claim on a small setting with several seeds and "
    "bootstrap CIs. Runs are stored in the workspace; every figure exports with a notebook "
    "that redraws (or retrains) it."
)


def run_study(paper: str, run: Callable[..., dict[str, Any]], **kwargs: Any) -> None:
    """Run a study with a progress bar and a cancel button; store the record."""
    cancel_key = f"mixup_papers.{paper}.cancel"
    bar = st.progress(0.0, text="Training…")
    # a click reruns the page, which stops this run at its next progress update
    st.button("Cancel", key=cancel_key)

    def on_progress(info: dict) -> None:
        bits = [f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in info.items()]
        bar.progress(min(float(info.get("fraction", 0.0)), 1.0), text=" · ".join(bits[:6]))

    with shown_errors("Training"):
        try:
            record = run(
                progress=on_progress,
                should_stop=lambda: bool(st.session_state.get(cancel_key)),
                **kwargs,
            )
        except TrainingCancelled:
            st.warning("Cancelled: nothing was stored.")
            return
        rid = store_run(zoo, paper, record)
        st.session_state[f"mixup_papers.{paper}.run"] = rid
        bar.progress(1.0, text="done")
        st.success(f"Stored run **{rid}**")


def show_runs(paper: str, caption: str) -> None:
    """Pick a stored run of ``paper``; show its headline table and figure with export."""
    runs = load_paper_runs(zoo, paper)
    if not runs:
        st.info("No stored runs yet: run the study above.")
        return
    key = f"mixup_papers.{paper}.run"
    ids = list(runs)[::-1]
    if st.session_state.get(key) not in ids:
        st.session_state[key] = ids[0]
    rid = st.selectbox("Run", ids, key=key)
    record = runs[rid]
    with shown_errors("Drawing"):
        st.dataframe(headline(record), hide_index=True)
        show_figure(
            FIGURES[record["study"]](record),
            key=f"mixup_papers.{paper}",
            stem=f"mix_paper_{paper}",
            meta={"run": rid, "study": record["study"], "seeds": record.get("seeds")},
            recipe={"kind": "mix_paper", "args": {"run": rid}},
            caption=caption,
        )


tabs = st.tabs([title.split(" — ")[0] for title in PAPERS.values()])
tab = dict(zip(PAPERS, tabs, strict=True))

with tab["feature_learning"]:
    from core.mixup.papers import feature_learning as fl

    st.markdown(
        f"**{PAPERS['feature_learning']}** (arXiv 2303.08433). Feature-noise data: each class "
        "has a common feature (share 1 − ρ) and a rare one (share ρ), one patch of another "
        "class's feature and Gaussian noise patches; a two-layer CNN with ReLU² trained by "
        "full-batch GD. Claim: ERM fits the rare points by memorising noise and misses the rare "
        "feature; mixup learns it."
    )
    with st.form("mixup_papers.feature_learning.form"):
        c1, c2, c3, c4 = st.columns(4)
        rho = c1.slider("ρ (rare share)", 0.02, 0.4, 0.1, 0.02, key="mixup_papers.fl.rho")
        n_train = c2.number_input("Training points", 10, 2000, 100, 10, key="mixup_papers.fl.n")
        steps = c3.number_input("GD steps", 10, 5000, 1000, 50, key="mixup_papers.fl.steps")
        n_seeds = c4.number_input("Seeds", 1, 10, 3, key="mixup_papers.fl.seeds")
        c1, c2, c3 = st.columns(3)
        sigma_p = c1.slider("Noise σ_p", 0.0, 1.0, 0.25, 0.01, key="mixup_papers.fl.sigma")
        noise = c2.slider("Feature-noise α", 0.0, 0.9, 0.2, 0.05, key="mixup_papers.fl.alpha")
        until = c3.number_input(
            "Early-stopped mixup: ERM from step", 0, 5000, 500, 50, key="mixup_papers.fl.until"
        )
        go_fl = st.form_submit_button("Run", type="primary")
    if go_fl:
        with shown_errors("Settings"):
            cfg = fl.FeatureNoiseConfig(
                rho=float(rho),
                n_train=int(n_train),
                steps=int(steps),
                sigma_p=float(sigma_p),
                feature_noise=float(noise),
                mix_until=min(int(until), int(steps)),
                log_every=max(1, int(steps) // 20),
            )
            run_study(
                "feature_learning",
                fl.run_feature_learning,
                config=cfg,
                seeds=tuple(range(settings.seed, settings.seed + int(n_seeds))),
            )
    show_runs(
        "feature_learning",
        "Common and rare feature learning under ERM and mixup (Zou et al. 2023).",
    )

with tab["neural_collapse"]:
    from core.mixup.papers import neural_collapse as nc

    st.markdown(
        f"**{PAPERS['neural_collapse']}** (arXiv 2402.06171). ERM and mixup train the same "
        "model from the same initialisation; the features of mixed *training* samples are then "
        "measured. Claim: same-class mixes align with their classifier row whatever λ; "
        "different-class mixes line up along the decision boundary in λ order (margin "
        "z_a − z_b ≈ logit(λ), the soft-target optimum), not at convex combinations of means."
    )
    with st.form("mixup_papers.neural_collapse.form"):
        c1, c2, c3, c4 = st.columns(4)
        nc_task = c1.selectbox("Dataset", cache.tasks_available(), key="mixup_papers.nc.task")
        nc_epochs = c2.number_input("Epochs", 1, 500, 60, key="mixup_papers.nc.epochs")
        nc_width = c3.number_input("MLP width", 8, 1024, 128, 8, key="mixup_papers.nc.width")
        nc_seeds = c4.number_input("Seeds", 1, 10, 3, key="mixup_papers.nc.seeds")
        c1, c2, c3 = st.columns(3)
        nc_alpha = c1.slider("α", 0.1, 4.0, 1.0, 0.1, key="mixup_papers.nc.alpha")
        nc_wd = c2.select_slider(
            "Weight decay", [0.0, 1e-4, 5e-4, 1e-3, 5e-3], 5e-4, key="mixup_papers.nc.wd"
        )
        nc_classes = c3.text_input("Three classes drawn", "0,1,2", key="mixup_papers.nc.classes")
        go_nc = st.form_submit_button("Run", type="primary")
    if go_nc:
        with shown_errors("Settings"):
            parts = [int(p) for p in nc_classes.replace(" ", "").split(",") if p]
            if len(parts) != 3:
                raise ValueError(f"three classes are drawn, got {nc_classes!r}")
            cfg_nc = nc.CollapseConfig(
                task=nc_task,
                epochs=int(nc_epochs),
                width=int(nc_width),
                alpha=float(nc_alpha),
                weight_decay=float(nc_wd),
                figure_classes=(parts[0], parts[1], parts[2]),
            )
            run_study(
                "neural_collapse",
                nc.run_neural_collapse,
                config=cfg_nc,
                seeds=tuple(range(settings.seed, settings.seed + int(nc_seeds))),
            )
    show_runs(
        "neural_collapse",
        "Features of mixed training samples under ERM and mixup (Fisher et al. 2024, Fig. 1).",
    )

with tab["supremix"]:
    from core.mixup.papers import supremix as sr

    st.markdown(
        f"**{PAPERS['supremix']}** (arXiv 2309.16633). Regression target derived offline: the "
        "rotation angle of real MNIST digits. An MLP encoder is trained by Rank-N-Contrast "
        "(plain contrastive regression) or by SupReMix (the same loss with mixed hard negatives "
        "and hard positives per anchor); a ridge probe on frozen embeddings predicts the angle. "
        "An end-to-end L1 regressor is the reference."
    )
    with st.form("mixup_papers.supremix.form"):
        c1, c2, c3, c4 = st.columns(4)
        sr_n = c1.number_input("Training images", 64, 4000, 1500, 100, key="mixup_papers.sr.n")
        sr_epochs = c2.number_input("Epochs", 1, 200, 12, key="mixup_papers.sr.epochs")
        sr_angle = c3.slider("Max angle (°)", 10, 180, 60, 5, key="mixup_papers.sr.angle")
        sr_seeds = c4.number_input("Seeds", 1, 10, 3, key="mixup_papers.sr.seeds")
        c1, c2, c3 = st.columns(3)
        sr_mix = c1.number_input("Mixed pairs per anchor", 0, 32, 4, key="mixup_papers.sr.mix")
        sr_tau = c2.slider("Temperature τ", 0.05, 1.0, 0.2, 0.05, key="mixup_papers.sr.tau")
        sr_width = c3.number_input("MLP width", 8, 1024, 128, 8, key="mixup_papers.sr.width")
        go_sr = st.form_submit_button("Run", type="primary")
    if go_sr:
        with shown_errors("Settings"):
            cfg_sr = sr.SupReMixConfig(
                n_train=int(sr_n),
                epochs=int(sr_epochs),
                max_angle=float(sr_angle),
                n_mix=int(sr_mix),
                temperature=float(sr_tau),
                width=int(sr_width),
            )
            run_study(
                "supremix",
                sr.run_supremix,
                config=cfg_sr,
                seeds=tuple(range(settings.seed, settings.seed + int(sr_seeds))),
            )
    show_runs("supremix", "Rotation-angle regression: SupReMix vs Rank-N-Contrast.")

with tab["mochi"]:
    from core.mixup.papers import mochi as mc

    st.markdown(
        f"**{PAPERS['mochi']}** (arXiv 2010.01028). A small MoCo (momentum key encoder, "
        "queue of keys, InfoNCE) on unlabeled MNIST views; MoCHi adds, per query, synthetic "
        "negatives mixed from its N hardest queue negatives (type 1) and from the query with "
        "one of them (type 2). Reported: linear-probe accuracy and the hardness statistics."
    )
    with st.form("mixup_papers.mochi.form"):
        c1, c2, c3, c4 = st.columns(4)
        mc_n = c1.number_input("Training images", 128, 4000, 4000, 128, key="mixup_papers.mc.n")
        mc_epochs = c2.number_input("Epochs", 1, 100, 8, key="mixup_papers.mc.epochs")
        mc_queue = c3.number_input("Queue K", 128, 8192, 1024, 128, key="mixup_papers.mc.queue")
        mc_seeds = c4.number_input("Seeds", 1, 10, 3, key="mixup_papers.mc.seeds")
        c1, c2, c3 = st.columns(3)
        mc_hard = c1.number_input("N hardest", 2, 1024, 64, key="mixup_papers.mc.hard")
        mc_s1 = c2.number_input("s (type 1)", 0, 512, 32, key="mixup_papers.mc.s1")
        mc_s2 = c3.number_input("s' (type 2)", 0, 512, 16, key="mixup_papers.mc.s2")
        go_mc = st.form_submit_button("Run", type="primary")
    if go_mc:
        with shown_errors("Settings"):
            cfg_mc = mc.MoChiConfig(
                n_train=int(mc_n),
                epochs=int(mc_epochs),
                queue=int(mc_queue),
                n_hard=int(mc_hard),
                s1=int(mc_s1),
                s2=int(mc_s2),
            )
            run_study(
                "mochi",
                mc.run_mochi,
                config=cfg_mc,
                seeds=tuple(range(settings.seed, settings.seed + int(mc_seeds))),
            )
    show_runs("mochi", "MoCHi vs MoCo: linear probe and hardness (Kalantidis et al. 2020).")

with tab["adamixup"]:
    from core.mixup.papers import adamixup as am

    st.markdown(
        f"**{PAPERS['adamixup']}** (arXiv 1809.02499). A policy-region generator picks each "
        "pair's λ interval; an intrusion discriminator, trained to tell mixes from real "
        "samples, penalises mixes that collide with the data. Compared with ERM and fixed "
        "mixup on the same model, seed and data order."
    )
    with st.form("mixup_papers.adamixup.form"):
        c1, c2, c3, c4 = st.columns(4)
        am_task = c1.selectbox("Dataset", cache.tasks_available(), key="mixup_papers.am.task")
        am_n = c2.number_input("Training images", 16, 10000, 1000, 100, key="mixup_papers.am.n")
        am_epochs = c3.number_input("Epochs", 1, 100, 10, key="mixup_papers.am.epochs")
        am_seeds = c4.number_input("Seeds", 1, 10, 3, key="mixup_papers.am.seeds")
        c1, c2 = st.columns(2)
        am_arch = c1.selectbox("Architecture", ["cnn", "mlp"], key="mixup_papers.am.arch")
        am_width = c2.number_input("Width", 4, 512, 8, 4, key="mixup_papers.am.width")
        go_am = st.form_submit_button("Run", type="primary")
    if go_am:
        with shown_errors("Settings"):
            cfg_am = am.AdaMixUpConfig(
                task=am_task,
                n_train=int(am_n),
                epochs=int(am_epochs),
                arch=am_arch,
                width=int(am_width),
            )
            run_study(
                "adamixup",
                am.run_adamixup,
                config=cfg_am,
                seeds=tuple(range(settings.seed, settings.seed + int(am_seeds))),
            )
    show_runs("adamixup", "AdaMixUp's learned policy region vs fixed mixup (Guo et al. 2019).")

with tab["adautomix"]:
    from core.mixup.papers import adautomix as aa

    st.markdown(
        f"**{PAPERS['adautomix']}** (arXiv 2312.11954), reduced: a small conv generator "
        "predicts each pair's mixing mask and is trained adversarially (every second step) to "
        "raise the classifier's mixed loss, held back by a feature-consistency and a "
        "λ-consistency regulariser. Compared with fixed mixers (mixup, CutMix) and ERM."
    )
    with st.form("mixup_papers.adautomix.form"):
        c1, c2, c3, c4 = st.columns(4)
        aa_task = c1.selectbox("Dataset", cache.tasks_available(), key="mixup_papers.aa.task")
        aa_n = c2.number_input("Training images", 16, 10000, 1000, 100, key="mixup_papers.aa.n")
        aa_epochs = c3.number_input("Epochs", 1, 100, 10, key="mixup_papers.aa.epochs")
        aa_seeds = c4.number_input("Seeds", 1, 10, 3, key="mixup_papers.aa.seeds")
        c1, c2 = st.columns(2)
        aa_beta = c1.slider(
            "β (adversarial weight)", 0.0, 1.0, 0.3, 0.05, key="mixup_papers.aa.beta"
        )
        aa_width = c2.number_input("CNN width", 4, 256, 8, 4, key="mixup_papers.aa.width")
        go_aa = st.form_submit_button("Run", type="primary")
    if go_aa:
        with shown_errors("Settings"):
            cfg_aa = aa.AdAutoMixConfig(
                task=aa_task,
                n_train=int(aa_n),
                epochs=int(aa_epochs),
                beta=float(aa_beta),
                width=int(aa_width),
            )
            run_study(
                "adautomix",
                aa.run_adautomix,
                config=cfg_aa,
                seeds=tuple(range(settings.seed, settings.seed + int(aa_seeds))),
            )
    show_runs("adautomix", "AdAutoMix's adversarial masks vs fixed mixers (Qin et al. 2024).")

with tab["attention_labels"]:
    from core.mixup.papers import attention_labels as al

    st.markdown(
        f"**{PAPERS['attention_labels']}** (arXiv 2111.09833, 2304.12043). The registry's "
        "small ViT (`vit`, patch 4 for 28 px) trains on CutMix and MaskMix inputs; TransMix "
        "relabels each mix by the CLS attention falling on each source, MixPro blends "
        "attention and area labels by how well the model already fits the mix."
    )
    with st.form("mixup_papers.attention_labels.form"):
        c1, c2, c3, c4 = st.columns(4)
        al_task = c1.selectbox("Dataset", cache.tasks_available(), key="mixup_papers.al.task")
        al_n = c2.number_input("Training images", 16, 10000, 1000, 100, key="mixup_papers.al.n")
        al_epochs = c3.number_input("Epochs", 1, 100, 8, key="mixup_papers.al.epochs")
        al_seeds = c4.number_input("Seeds", 1, 10, 2, key="mixup_papers.al.seeds")
        c1, c2, c3 = st.columns(3)
        al_width = c1.number_input("ViT width", 16, 256, 32, 16, key="mixup_papers.al.width")
        al_depth = c2.number_input("Blocks", 1, 8, 2, key="mixup_papers.al.depth")
        al_patch = c3.number_input("Patch size", 1, 16, 4, key="mixup_papers.al.patch")
        go_al = st.form_submit_button("Run", type="primary")
    if go_al:
        with shown_errors("Settings"):
            cfg_al = al.AttentionLabelConfig(
                task=al_task,
                n_train=int(al_n),
                epochs=int(al_epochs),
                width=int(al_width),
                depth=int(al_depth),
                patch_size=int(al_patch),
            )
            run_study(
                "attention_labels",
                al.run_attention_labels,
                config=cfg_al,
                seeds=tuple(range(settings.seed, settings.seed + int(al_seeds))),
            )
    show_runs("attention_labels", "Attention vs area labels for mixed samples on a ViT.")

with tab["dualmix"]:
    from core.mixup.papers import dualmix as dm

    st.markdown(
        f"**{PAPERS['dualmix']}** (arXiv 2303.07864; variant built from the abstract, see the "
        "module docstring). The classes arrive in disjoint increments, each example once "
        "(online), one step per incoming batch with a replay batch from a reservoir buffer "
        "(ER). EnMix mixes augmented stream and replay samples with their labels; AdpMix mixes "
        "new-class with old-class samples and shifts the label ratio towards the rarer old "
        "class. The curve is the accuracy on the classes seen so far."
    )
    with st.form("mixup_papers.dualmix.form"):
        c1, c2, c3, c4 = st.columns(4)
        dm_task = c1.selectbox("Dataset", cache.tasks_available(), key="mixup_papers.dm.task")
        dm_n = c2.number_input(
            "Stream examples (0 = all)", 0, 10000, 0, 100, key="mixup_papers.dm.n"
        )
        dm_buffer = c3.number_input("Buffer size", 1, 5000, 200, 10, key="mixup_papers.dm.buffer")
        dm_seeds = c4.number_input("Seeds", 1, 10, 3, key="mixup_papers.dm.seeds")
        c1, c2, c3, c4 = st.columns(4)
        dm_tasks = c1.number_input("Tasks", 1, 10, 5, key="mixup_papers.dm.tasks")
        dm_prob = c2.slider("Mixing probability", 0.0, 1.0, 1.0, 0.05, key="mixup_papers.dm.prob")
        dm_width = c3.number_input("CNN width", 4, 256, 8, 4, key="mixup_papers.dm.width")
        dm_methods = c4.multiselect(
            "Methods", list(dm.METHODS), ["er", "dualmix"], key="mixup_papers.dm.methods"
        )
        go_dm = st.form_submit_button("Run", type="primary")
    if go_dm:
        with shown_errors("Settings"):
            cfg_dm = dm.DualMixConfig(
                task=dm_task,
                n_train=int(dm_n) or None,
                buffer_size=int(dm_buffer),
                n_tasks=int(dm_tasks),
                mix_prob=float(dm_prob),
                width=int(dm_width),
            )
            run_study(
                "dualmix",
                dm.run_dualmix,
                config=cfg_dm,
                methods=tuple(dm_methods),
                seeds=tuple(range(settings.seed, settings.seed + int(dm_seeds))),
            )
    show_runs(
        "dualmix",
        "Accuracy on the seen classes over the online class-incremental stream: DualMix vs ER.",
    )
