"""Mixup Training: ERM vs mixers on one dataset and seed; accuracy, calibration, curves."""

import streamlit as st

import ui
from ui import cache
from ui.errors import shown_errors
from ui.figure_panel import show_figure
from core.mixup import MIXERS
from core.mixup.training import MixMethod, load_runs, train_mixers
from core.models import ARCHITECTURES
from core.recipes import build_figure
from ui.widgets import default_width
from core.train import TrainConfig

RUN = "mixup_training.run"
settings = ui.frame("Mixup Training", icon=":material/model_training:")
zoo = cache.zoo(settings.workspace)
st.caption(
    "Every method trains the same architecture from the same initialisation and data "
    "order (one seed). Models are stored in the zoo (role *mixup*) and the run in the "
    "workspace, for the Feature Geometry page."
)

# The architecture sits outside the form so that the width follows it at once (each
# architecture keeps its own width, starting from its default: 512 for the MLP, 16 for the CNN).
arch = st.selectbox("Architecture", ARCHITECTURES.names(), index=1, key="mixup_training.arch")
with st.form("mixup_training.form"):
    c1, c3 = st.columns(2)
    task = c1.selectbox("Dataset", cache.tasks_available(), key="mixup_training.task")
    width = c3.number_input(
        f"Width ({arch})",
        4,
        512,
        default_width(arch),
        4,
        key=f"mixup_training.width.{arch}",
    )
    c1, c2, c3, c4 = st.columns(4)
    epochs = c1.slider("Epochs", 1, 30, 4, key="mixup_training.epochs")
    n_train = c2.number_input(
        "Training samples (0 = all)", 0, 100_000, 1000, 100, key="mixup_training.n_train"
    )
    lr = c3.select_slider(
        "Learning rate", [1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2], 1e-2, key="mixup_training.lr"
    )
    seed = c4.number_input("Seed", 0, 2**31 - 1, settings.seed, key="mixup_training.seed")
    mixers = st.multiselect(
        "Mixers (ERM is always trained)",
        MIXERS.names(),
        default=["mixup", "cutmix"],
        format_func=lambda m: MIXERS[m].title,
        key="mixup_training.mixers",
    )
    c1, c2, c3 = st.columns(3)
    alpha = c1.slider("α", 0.05, 4.0, 1.0, 0.05, key="mixup_training.alpha")
    prob = c2.slider("Mixing probability", 0.0, 1.0, 1.0, 0.05, key="mixup_training.prob")
    stop = c3.number_input(
        "Also train early-stopped (off after epoch; 0 = no)", 0, 30, 0, key="mixup_training.stop"
    )
    submitted = st.form_submit_button("Train", type="primary")

if submitted:
    methods = [MixMethod()] + [MixMethod(m, {"alpha": alpha, "prob": prob}) for m in mixers]
    if 0 < stop < epochs:
        methods += [
            MixMethod(m, {"alpha": alpha, "prob": prob}, mix_until_epoch=int(stop)) for m in mixers
        ]
    bar = st.progress(0.0, text="Training…")

    def on_progress(info: dict) -> None:
        frac = ((info["method"] - 1) + info["step"] / max(info["steps"], 1)) / info["methods"]
        bar.progress(
            min(frac, 1.0),
            text=f"{info['label']} ({info['method']}/{info['methods']}) · "
            f"epoch {info['epoch']}/{info['epochs']} · loss {info['train_loss']:.3f}",
        )

    with shown_errors("Training"):
        run = train_mixers(
            zoo,
            task=task,
            methods=methods,
            arch=arch,
            arch_kwargs={"width": int(width)},
            config=TrainConfig(epochs=int(epochs), lr=float(lr), seed=int(seed)),
            n_train=int(n_train) or None,
            device=settings.device,
            progress=on_progress,
        )
        bar.progress(1.0, text="done")
        st.session_state[RUN] = run["run_id"]
        st.success(f"Stored run **{run['run_id']}** with {len(run['methods'])} models")

runs = load_runs(zoo)
if not runs:
    st.info("No mixup runs yet: train one above.")
else:
    ids = list(runs)[::-1]
    if st.session_state.get(RUN) not in ids:
        st.session_state[RUN] = ids[0]
    run_id = st.selectbox("Run", ids, key=RUN)
    run = runs[run_id]
    meta = {
        "run": run_id,
        "task": run["task"],
        "arch": run["arch"],
        "seed": run["seed"],
        "models": {k: v["model_id"] for k, v in run["methods"].items()},
    }

    args = {"run": run_id}  # the figures are drawn from the stored run record
    with shown_errors("Drawing"):
        tab_a, tab_c, tab_e, tab_r = st.tabs(
            ["Accuracy and ECE", "Per-epoch curves", "Early stopping", "Reliability"]
        )
        with tab_a:
            show_figure(
                build_figure("mixup_accuracy", run, args),
                key="mixup_training.accuracy",
                stem="mixup_accuracy",
                meta=meta,
                recipe=("mixup_accuracy", args),
            )
        with tab_c:
            show_figure(
                build_figure("mixup_curves", run, args),
                key="mixup_training.curves",
                stem="mixup_curves",
                meta=meta,
                recipe=("mixup_curves", args),
            )
        with tab_e:
            show_figure(
                build_figure("mixup_early_stopping", run, args),
                key="mixup_training.early",
                stem="mixup_early_stopping",
                meta=meta,
                recipe=("mixup_early_stopping", args),
            )
        with tab_r:
            show_figure(
                build_figure("mixup_reliability", run, args),
                key="mixup_training.reliability",
                stem="mixup_reliability",
                meta=meta,
                recipe=("mixup_reliability", args),
            )
