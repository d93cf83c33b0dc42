"""The fused CPU kernels (numba), in one place: the switch and the lock they share.

numba comes with umap-learn. Its kernels are used by core.merge (task arithmetic, TIES, DARE,
DARE-TIES, top-k: :mod:`core.kernels.merge`, numba code in ``_merge_nb``) and core.mixup
(row-wise mixup and CutMix paste: ``_mixup_nb``) when numba imports and ``MIXMERGE_FUSED`` is
not ``0``. The readable torch definitions the kernels are tested equal to live beside each
method (:func:`core.merge.ties.ties_definition`, :func:`core.merge.dare.dare_definition`).
Nothing here imports core.merge or core.mixup at import time. Parallel
kernels run behind one lock: Streamlit runs sessions in threads, and numba's threading layers
are not all safe for concurrent parallel regions.
"""

from __future__ import annotations

import os
import threading
from functools import cache
from typing import Any

LOCK = threading.RLock()


def enabled() -> bool:
    """Whether the fused kernels may run (numba importable, ``MIXMERGE_FUSED`` != "0")."""
    return os.environ.get("MIXMERGE_FUSED", "1") != "0" and numba_module() is not None


@cache
def numba_module() -> Any:
    """The numba module, or None where it does not import."""
    try:
        import numba
    except ImportError:  # pragma: no cover - numba comes with umap-learn
        return None
    return numba


def warm_all() -> None:
    """Compile (or load from numba's disk cache) every fused kernel: the merge kernels for
    1..8 models and the mixup and CutMix kernels (``scripts/setup.sh`` calls this once)."""
    if not enabled():
        return
    import numpy as np

    from . import merge
    from ._mixup_nb import paste_rows, rows_lerp

    merge.warm()
    for dt in (np.float32, np.float64):
        x = np.ones((2, 4), dtype=dt)
        rows_lerp(x, np.array([1, 0]), np.array([0.25, 0.75], dtype=dt), np.empty_like(x))
        img = np.ones((2, 1, 3, 3), dtype=dt)
        paste_rows(img, np.array([1, 0]), np.array([[0, 1, 0, 1]] * 2), np.empty_like(img))
