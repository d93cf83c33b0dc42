"""The Merge Lab's "align, then merge" step for independently trained models (widgets only;
the maths is :mod:`core.merge_eval.align_step`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import streamlit as st

from core.merge_eval import ALIGNMENT_TITLES, ALIGNMENTS, alignment_gain, default_alignment
from ui import cache


def align_choice(records: Sequence[Any], *, base_id: str | None, container: Any = None) -> str:
    """The "Align first" selector: shown for independently trained models (no shared base),
    defaulting to weight matching when the picked models do not share a base; "none" otherwise."""
    if base_id is not None or len(records) < 2:
        return "none"
    default = default_alignment(records)
    where = container if container is not None else st
    return str(
        where.selectbox(
            "Align first",
            ALIGNMENTS,
            index=ALIGNMENTS.index(default),
            format_func=ALIGNMENT_TITLES.get,
            key="merge.align",
            help="permute every model's hidden units onto the first model's before merging "
            "(Git Re-Basin): the functions do not change, any method then merges matched units",
        )
    )


def show_alignment_gain(key: Any, args: dict[str, Any], aligned: Any) -> None:
    """One metric: the average accuracy with the alignment step against without it (``args``:
    the ``merge_accuracy`` recipe args of the aligned result)."""
    if getattr(key, "align", "none") == "none" or aligned is None:
        return
    plain, _ = cache.merge_eval_cached(key._replace(align="none"), args | {"align": "none"})
    g = alignment_gain(plain, aligned, method=args["method"], how=key.align)
    st.metric(
        f"Gain of {ALIGNMENT_TITLES[g.how]}",
        f"{g.gain:+.3f}",
        help=f"average accuracy {g.aligned:.3f} aligned vs {g.plain:.3f} without alignment "
        "(same method, hyperparameters and samples)",
    )
