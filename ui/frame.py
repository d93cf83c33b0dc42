"""``frame()``: page config and the shared sidebar (grouped page links, device, seed, workspace).

Every page starts with ``settings = ui.frame("Title")``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import streamlit as st
import torch

from core.device import describe_device, resolve_device
from core.zoo import default_workspace

from . import state, timing

ROOT = Path(__file__).resolve().parent.parent

# section -> [(page file, label, icon)]; pages that do not exist yet are not linked
SECTIONS: list[tuple[str, list[tuple[str, str, str]]]] = [
    (
        "Workbench",
        [
            ("app.py", "Home", ":material/home:"),
            ("pages/1_Model_Zoo.py", "Model Zoo", ":material/inventory_2:"),
        ],
    ),
    (
        "Merging",
        [
            ("pages/2_Merge_Lab.py", "Merge Lab", ":material/merge:"),
            ("pages/3_Interpolation.py", "Interpolation", ":material/timeline:"),
            ("pages/9_Benchmark.py", "Benchmark", ":material/leaderboard:"),
            ("pages/12_Merge_Search.py", "Merge Search", ":material/travel_explore:"),
            ("pages/11_Merging_Papers.py", "Merging Papers", ":material/menu_book:"),
        ],
    ),
    (
        "Mixing",
        [
            ("pages/4_Mixup_Gallery.py", "Mixup Gallery", ":material/photo_library:"),
            ("pages/5_Mixup_Training.py", "Mixup Training", ":material/model_training:"),
            ("pages/10_Mixup_Papers.py", "Mixup Papers", ":material/science:"),
        ],
    ),
    (
        "Geometry",
        [
            ("pages/6_Feature_Geometry.py", "Feature Geometry", ":material/scatter_plot:"),
            ("pages/7_Clustering.py", "Clustering", ":material/bubble_chart:"),
        ],
    ),
    ("Output", [("pages/8_Figures.py", "Figures", ":material/image:")]),
]


@dataclass(frozen=True)
class Settings:
    """Global choices from the sidebar."""

    device: str  # "auto", "cpu" or "cuda"
    seed: int
    workspace: str  # absolute path

    @property
    def torch_device(self) -> torch.device:
        return resolve_device(self.device)


def _links() -> None:
    for section, pages in SECTIONS:
        present = [(f, label, icon) for f, label, icon in pages if (ROOT / f).exists()]
        if not present:
            continue
        st.sidebar.caption(section.upper())
        for f, label, icon in present:
            st.sidebar.page_link(f, label=label, icon=icon)


def _workspace_ok(path: str) -> str | None:
    """Error message for an unusable workspace path, else None."""
    p = Path(path).expanduser()
    if p.exists() and not p.is_dir():
        return f"{p} is a file, not a folder"
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        return f"cannot create {p}: {err.strerror}"
    return None


PAGE_ICON = Path(__file__).resolve().parent / "assets" / "icon.png"


def frame(title: str, *, icon: str = ":material/science:", wide: bool = True) -> Settings:
    """Set the page config, draw the shared sidebar and the page title; return the settings."""
    st.set_page_config(
        page_title=f"{title} · Mixmerge Workbench",
        # a local file, served by this server: a ":material/..." icon makes the browser fetch
        # the favicon from a font CDN, which fails offline (``icon`` is kept for the callers)
        page_icon=str(PAGE_ICON),
        layout="wide" if wide else "centered",
    )
    timing.page_started(title)
    ss = st.session_state
    ss.setdefault(state.DEVICE, "auto")
    ss.setdefault(state.SEED, 0)
    ss.setdefault(state.WORKSPACE, str(default_workspace()))
    st.sidebar.markdown("### Mixmerge Workbench")
    _links()
    st.sidebar.divider()
    with st.sidebar.expander("Settings", expanded=False):
        devices = ["auto", "cpu"] + (["cuda"] if torch.cuda.is_available() else [])
        if ss[state.DEVICE] not in devices:
            ss[state.DEVICE] = "auto"
        st.selectbox("Device", devices, key=state.DEVICE, help="'auto' uses CUDA when present")
        st.number_input("Global seed", min_value=0, max_value=2**31 - 1, step=1, key=state.SEED)
        new_ws = st.text_input(
            "Workspace folder",
            value=ss[state.WORKSPACE],
            help="models, index and figures live here",
        )
        if new_ws != ss[state.WORKSPACE]:
            err = _workspace_ok(new_ws)
            if err:
                st.error(f"Workspace not changed: {err}")
            else:
                ss[state.WORKSPACE] = str(Path(new_ws).expanduser().resolve())
    bad_ws = _workspace_ok(ss[state.WORKSPACE])
    dev = resolve_device(ss[state.DEVICE])
    st.sidebar.caption(
        f"Device: **{describe_device(dev)}**  \nSeed: **{ss[state.SEED]}**  \n"
        f"Workspace: `{ss[state.WORKSPACE]}`"
    )
    st.title(title)
    if bad_ws:  # e.g. MIXMERGE_WORKSPACE names a file: say so instead of a traceback
        st.error(
            f"The workspace cannot be used: {bad_ws}. Choose another folder under "
            "**Settings** in the sidebar, or set MIXMERGE_WORKSPACE."
        )
        st.stop()
    return Settings(
        device=ss[state.DEVICE], seed=int(ss[state.SEED]), workspace=ss[state.WORKSPACE]
    )
