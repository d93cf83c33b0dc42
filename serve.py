"""What the server runs: ``streamlit run serve.py`` serves app.py and pages/ as Streamlit does,
with the base-URL middleware of :mod:`ui.asgi` (deep links without console 404s).

``$MIXMERGE_THREADS`` caps the server's compute threads (torch/OpenMP, MKL, numba). They are
set here, through the environment, before any page imports torch or numba: each script run is a
new thread, and ``torch.set_num_threads`` in one would bind only that thread. On a shared
machine ``MIXMERGE_THREADS=1`` keeps the live sliders fast (docs/BENCHMARKS.md, "Live sliders
in the browser"); unset, the libraries use every core.

AppTest and notebooks use app.py directly; this file only wraps it for the server.
"""

import os

THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")


def server_threads(env: dict[str, str] | os._Environ[str]) -> None:
    """Copy ``$MIXMERGE_THREADS`` (an int >= 1) into the thread variables ``env`` lacks."""
    value = env.get("MIXMERGE_THREADS", "").strip()
    if not value:
        return
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"MIXMERGE_THREADS must be an integer >= 1, got {value!r}")
    for var in THREAD_VARS:
        env.setdefault(var, value)


server_threads(os.environ)

import streamlit as st  # noqa: E402 - after the thread variables
from starlette.middleware import Middleware  # noqa: E402

from ui.asgi import BaseUrlMiddleware  # noqa: E402

app = st.App("app.py", middleware=[Middleware(BaseUrlMiddleware)])
