"""Server-side run timing: how long each full page run and each fragment rerun takes.

Off unless ``$MIXMERGE_TIMING`` is set (to anything but ``""`` or ``"0"``; ``"profile"`` adds a
cProfile listing of each fragment run, slower); then every full
page run (``ui.frame``) and every fragment decorated with :func:`timed_fragment` writes one line
to stderr (the server log)::

    mixmerge-timing page "Merge Lab" start
    mixmerge-timing fragment merge.live 23.4 ms

``benchmarks/bench_browser_latency.py`` reads these lines for the server's share of a slider's
latency, and the browser tests count the ``page`` lines to check that a slider move reran its
fragment only, not the whole page.
"""

from __future__ import annotations

import cProfile
import functools
import io
import os
import pstats
import sys
import time
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import streamlit as st

PREFIX = "mixmerge-timing"
ENV = "MIXMERGE_TIMING"

P = ParamSpec("P")
R = TypeVar("R")


def enabled() -> bool:
    """True when ``$MIXMERGE_TIMING`` asks for timing lines."""
    return os.environ.get(ENV, "") not in ("", "0")


def _emit(line: str) -> None:
    print(f"{PREFIX} {line}", file=sys.stderr, flush=True)


def page_started(title: str) -> None:
    """Note the start of a full run of the page ``title`` (a fragment rerun does not call it)."""
    if not isinstance(title, str) or not title:
        raise ValueError(f"title must be a non-empty string, got {title!r}")
    if enabled():
        _emit(f'page "{title}" start')


def timed_fragment(
    name: str, **fragment_kwargs: object
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """``st.fragment`` that, with timing on, logs how long each of its runs took.

    Args:
        name: the fragment's name in the log, without spaces (``"merge.live"``).
        fragment_kwargs: passed to ``st.fragment`` (``run_every=``).

    Raises:
        ValueError: ``name`` is empty or has whitespace.
    """
    if not isinstance(name, str) or not name or any(c.isspace() for c in name):
        raise ValueError(f"name must be a non-empty string without spaces, got {name!r}")

    def wrap(fn: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(fn)
        def run(*args: P.args, **kwargs: P.kwargs) -> R:
            if not enabled():
                return fn(*args, **kwargs)
            prof = cProfile.Profile() if os.environ.get(ENV) == "profile" else None
            t0 = time.perf_counter()
            try:
                if prof is None:
                    return fn(*args, **kwargs)
                return prof.runcall(fn, *args, **kwargs)
            finally:  # st.stop() and st.rerun() raise: the run still took this long
                _emit(f"fragment {name} {(time.perf_counter() - t0) * 1000:.1f} ms")
                if prof is not None:
                    out = io.StringIO()
                    pstats.Stats(prof, stream=out).sort_stats("cumulative").print_stats(40)
                    _emit(f"profile {name}\n{out.getvalue()}")

        return st.fragment(run, **fragment_kwargs)  # type: ignore[call-overload,no-any-return]

    return wrap
