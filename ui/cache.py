"""Every Streamlit cache in one place, each bounded.

``cache_resource`` only for read-only objects (datasets, loaded models); ``cache_data`` for small
result records. Pages call these instead of core directly when the result is worth keeping.
"""

from __future__ import annotations

import streamlit as st

from core.data import Dataset, available_tasks, get_task
from core.models import Classifier
from core.zoo import Zoo


@st.cache_resource(max_entries=8, show_spinner=False)
def zoo(workspace: str) -> Zoo:
    """The zoo of a workspace (opened once per workspace)."""
    return Zoo(workspace)


@st.cache_resource(max_entries=16, show_spinner="Loading data…")
def task(name: str) -> Dataset:
    """A task's dataset (read-only tensors)."""
    return get_task(name)


@st.cache_data(max_entries=4, show_spinner=False, ttl=300)
def tasks_available() -> list[str]:
    return available_tasks()


@st.cache_resource(max_entries=32, show_spinner="Loading model…")
def model(workspace: str, model_id: str, sha256: str, device: str = "cpu") -> Classifier:
    """A zoo model in eval mode; ``sha256`` keys the cache so a replaced checkpoint reloads.
    Treat it as read-only."""
    return zoo(workspace).load_model(model_id, device=device)
