"""Align, then merge (core.merge_eval.align_step) on the tiny zoo's independent MLPs."""

from __future__ import annotations

import pytest
import torch

from core.merge_eval import align_lab, alignment_gain, default_alignment, lab_from_zoo
from core.zoo import Zoo

PAIR = ["mlp-mnist-s1", "mlp-mnist-s2"]


@pytest.mark.parametrize("how", ["weight", "activation"])
def test_alignment_keeps_each_model_and_helps_the_average(tiny_zoo: Zoo, how: str) -> None:
    plain = lab_from_zoo(tiny_zoo, PAIR)
    aligned = lab_from_zoo(tiny_zoo, PAIR, align=how)
    # the reference model is untouched; the other is a permutation: same predictions
    assert all(torch.equal(aligned.models[0][k], plain.models[0][k]) for k in plain.models[0])
    assert any(not torch.equal(aligned.models[1][k], plain.models[1][k]) for k in plain.models[1])
    p_pred, _ = plain.predict(plain.models[1])
    a_pred, _ = aligned.predict(aligned.models[1])
    assert torch.equal(p_pred.argmax(-1), a_pred.argmax(-1))
    g = alignment_gain(
        plain.run("average", {}), aligned.run("average", {}), method="average", how=how
    )
    assert g.gain == pytest.approx(g.aligned - g.plain)
    assert g.gain > 0, g  # averaging matched units beats averaging unrelated ones


def test_none_is_the_lab_itself_and_bad_inputs_are_named(tiny_zoo: Zoo) -> None:
    lab = lab_from_zoo(tiny_zoo, PAIR)
    assert align_lab(lab, "none") is lab
    with pytest.raises(ValueError, match="how"):
        align_lab(lab, "zip")
    with pytest.raises(ValueError, match="align"):
        lab_from_zoo(tiny_zoo, PAIR, align="rebasin")
    with pytest.raises(TypeError, match="MergeLab"):
        align_lab({}, "weight")  # type: ignore[arg-type]
    ev = lab.run("average", {})
    with pytest.raises(TypeError, match="MergeEval"):
        alignment_gain(ev, None, method="average", how="weight")  # type: ignore[arg-type]


def test_default_alignment_follows_a_shared_base(tiny_zoo: Zoo) -> None:
    assert default_alignment([tiny_zoo.get(i) for i in PAIR]) == "weight"
    ft = [tiny_zoo.get("mlp-ft-mnist"), tiny_zoo.get("mlp-ft-digits")]
    assert default_alignment(ft) == "none"
    assert default_alignment(ft[:1]) == "none"
