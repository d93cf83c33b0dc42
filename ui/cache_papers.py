"""Caches of the merging-papers studies (Merging Papers page, singular-vector panel).

Same rules as :mod:`ui.cache`: bounded, keyed by every argument that changes the result (model
checksums included), the progress callback outside the key. Studies take seconds to minutes and
report progress, so they share ui.cache's bounded LRU instead of ``st.cache_data``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ui.cache import _landscape_cached, model, task, zoo

Progress = Callable[[int, int], None] | None


def singular_alignment(
    workspace: str,
    id_a: str,
    sha_a: str,
    id_b: str,
    sha_b: str,
    task_name: str,
    matchers: tuple[str, ...],
    top_k: int,
    seed: int,
    device: str = "cpu",
) -> dict[str, Any]:
    """Singular-vector alignment before/after each matcher (Ito et al.), per layer."""
    import torch

    from core.align import compare_singular_alignment

    key = ("singular", workspace, id_a, sha_a, id_b, sha_b, task_name, matchers, top_k, seed)
    z = zoo(workspace)
    return _landscape_cached(
        key,
        lambda: compare_singular_alignment(
            model(workspace, id_a, sha_a, device),
            z.state_dict(id_a),
            z.state_dict(id_b),
            matchers=matchers,
            x=task(task_name).x_train[:1000],
            top_k=top_k,
            generator=torch.Generator().manual_seed(seed),
            device=device,
        ),
    )
