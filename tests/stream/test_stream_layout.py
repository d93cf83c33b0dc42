"""The streaming package's layout: public names importable as before the split, and the one
top-k bracket search that the in-memory trim and the streaming global trim share."""

from __future__ import annotations

import torch

from core.merge._blocks import keep_count, magnitude_threshold, pick_in_bracket, sample_bracket


def test_public_names_importable_from_engine_and_package() -> None:
    import core.stream as stream
    import core.stream.engine as engine

    for name in ("stream_merge", "model_tensors", "global_thresholds", "parse_size", "MergeReport"):
        assert getattr(stream, name) is getattr(engine, name)
    for name in ("tensor_call", "check_inputs", "check_kinds", "check_finite_inputs"):
        assert callable(getattr(engine, name))


def test_sample_bracket_holds_the_kth_largest_and_pick_is_exact() -> None:
    g = torch.Generator().manual_seed(0)
    a = torch.randn(300_001, generator=g).abs()  # (n,)
    n = a.numel()
    for density in (0.001, 0.1, 0.5, 0.9):
        k = keep_count(n, density)
        truth = float(a.kthvalue(n - k + 1).values)
        lo, hi, width = sample_bracket(a[:: max(1, n // 65536)], k, n)
        assert lo <= truth <= hi and 0 < width < 0.05
        inside = a[(a >= lo) & (a <= hi)]
        assert pick_in_bracket(inside, int((a > hi).sum()), k) == truth
        assert magnitude_threshold([a], None, density) == truth
    # a bracket that missed says so (the callers widen it)
    assert pick_in_bracket(torch.tensor([1.0, 2.0]), 5, 3) is None


def test_mergekit_names_come_from_the_registry_entries() -> None:
    from dataclasses import replace

    import pytest

    from core.merge import METHODS
    from core.stream.config import METHOD_ALIASES, mergekit_names
    from core.stream.family import FAMILY_ALIASES

    assert METHOD_ALIASES == {
        mk: e.name for e in METHODS.entries() for mk in getattr(e, "mergekit", ())
    }
    assert METHOD_ALIASES["linear"] == "average" and METHOD_ALIASES["dare_linear"] == "dare"
    assert METHOD_ALIASES["ramplus_tl"] == "ram" and METHODS["ram"].mergekit == (
        "ram",
        "ramplus_tl",
    )
    assert set(FAMILY_ALIASES) < set(METHOD_ALIASES)
    with pytest.raises(ValueError, match="claimed by both 'ties' and 'dare_ties'"):
        mergekit_names([METHODS["ties"], replace(METHODS["dare_ties"], mergekit=("ties",))])
    with pytest.raises(ValueError, match="mergekit must be a tuple"):
        replace(METHODS["ties"], mergekit="ties")
