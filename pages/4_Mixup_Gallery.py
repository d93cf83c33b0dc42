"""Mixup Gallery: what each mixer does to images and labels."""

import streamlit as st

import ui
from ui import cache
from ui.errors import shown_errors
from ui.figure_panel import show_figure
from ui.timing import timed_fragment
from core.data import load_photos
from core.mixup import MIXERS
from core.mixup.gallery import GALLERY_MIXERS
from core.recipes import build_figure
from core.recipes.gallery import GRID_LAMS

settings = ui.frame("Mixup Gallery", icon=":material/photo_library:")
st.caption(
    "Mixed images, the mask of own (blue) vs partner (orange) pixels, and the label "
    "weights: λ is always the exact share of own pixels. Pairing is a random permutation "
    "from the seed."
)

c1, c2 = st.columns([1, 2])
source = c1.radio(
    "Images",
    ["photos", "dataset"],
    key="mixup_gallery.source",
    format_func={"photos": "Natural photos", "dataset": "Dataset samples"}.get,
)
photo_names = list(load_photos(96))
names: tuple[str, ...] = ()
task_name, n_images = "", 0
if source == "photos":
    picked = c2.multiselect(
        "Photos (at least 2)", photo_names, default=photo_names[:4], key="mixup_gallery.photos"
    )
    names = tuple(picked)
else:
    task_name = c2.selectbox("Dataset", cache.tasks_available(), key="mixup_gallery.task")
    n_images = c2.slider("Images", 2, 12, 6, key="mixup_gallery.n")


# The mixer controls and the figures rerun alone (a fragment): moving λ does not rerun the image
# selection above.
@timed_fragment("mixup_gallery.live")
def live_gallery() -> None:
    """Method, λ / α, seed and the three gallery figures."""
    c1, c2, c3, c4 = st.columns(4)
    method = c1.selectbox(
        "Method",
        list(GALLERY_MIXERS),
        format_func=lambda m: MIXERS[m].title,
        key="mixup_gallery.method",
    )
    fixed = c2.toggle("Fixed λ", value=False, key="mixup_gallery.fixed")
    if fixed:
        lam = c2.slider("λ", 0.0, 1.0, 0.5, 0.05, key="mixup_gallery.lam")
        alpha = 1.0
    else:
        lam = None
        alpha = c2.slider("α (λ ~ Beta(α, α))", 0.05, 4.0, 1.0, 0.05, key="mixup_gallery.alpha")
    per_sample = c3.toggle("λ per sample", value=True, key="mixup_gallery.per_sample")
    seed = int(c4.number_input("Seed", 0, 2**31 - 1, settings.seed, key="mixup_gallery.seed"))
    st.caption(f"**{MIXERS[method].title}** — {MIXERS[method].doc} [paper]({MIXERS[method].paper})")

    if source == "photos" and len(names) < 2:
        st.info("Pick at least two photos.")
    else:
        with shown_errors("Mixing"):
            args = {
                "method": method,
                "source": source,
                **(
                    {"images": list(names)}
                    if source == "photos"
                    else {"task": task_name, "n_images": n_images}
                ),
                "alpha": float(alpha),
                "lam": None if lam is None else float(lam),
                "per_sample": bool(per_sample),
                "seed": seed,
                "lams": list(GRID_LAMS),
            }
            result = cache.recipe_result(settings.workspace, "mixup_gallery", args)
            tab_g, tab_l, tab_m = st.tabs(
                ["Gallery", "λ grid (one pair)", "All methods (one pair)"]
            )
            with tab_g:
                show_figure(
                    build_figure("mixup_gallery", result, args),
                    key="mixup_gallery.gallery",
                    stem=f"mixup_gallery_{method}",
                    recipe=("mixup_gallery", args),
                )
            with tab_l:
                show_figure(
                    build_figure("mixup_lam_grid", result, args),
                    key="mixup_gallery.grid",
                    stem=f"mixup_lam_grid_{method}",
                    recipe=("mixup_lam_grid", args),
                )
            with tab_m:
                show_figure(
                    build_figure("mixup_methods", result, args),
                    key="mixup_gallery.methods",
                    stem="mixup_methods",
                    recipe=("mixup_methods", args),
                )


live_gallery()
