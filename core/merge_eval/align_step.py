"""Align, then merge: independently trained models permuted onto one model's units first.

Two networks trained from different initialisations compute the same function with their
hidden units in a different order, so averaging their weights mixes unrelated units (the
default zoo's two MLPs average to 0.64 against 0.91 each). Permuting each model onto the first
one (Git Re-Basin's weight matching, or activation matching on training inputs; both in
:mod:`core.align`) leaves every model's function unchanged and makes any merge method act on
matched units. :func:`align_lab` builds the aligned lab; :func:`alignment_gain` scores one
method with and without the step on the same samples.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from .._checks import check_choice, check_int
from ..align import activation_matching, apply_permutation, spec_for, weight_matching
from .lab import MergeLab
from .results import MergeEval

ALIGNMENTS = ("none", "weight", "activation")
ALIGNMENT_TITLES = {
    "none": "no alignment",
    "weight": "weight matching",
    "activation": "activation matching",
}


def align_lab(lab: MergeLab, how: str, *, random_state: int = 0) -> MergeLab:
    """A lab on the same models and evaluation samples with models 2..n permuted onto model 1.

    Args:
        lab: a Merge Lab (not modified); its models must share one architecture with a
            permutation spec (mlp, cnn, resnet20).
        how: "none" (``lab`` itself), "weight" (weight matching) or "activation" (activation
            matching on the lab's training subsets of the models' tasks).
        random_state: seeds the order of weight matching's sweeps.
    """
    if not isinstance(lab, MergeLab):
        raise TypeError(f"lab must be a MergeLab, got {type(lab).__name__}")
    check_choice("how", how, ALIGNMENTS)
    check_int("random_state", random_state, 0)
    if how == "none" or lab.n_models < 2:
        return lab
    spec = spec_for(lab._fresh_module())
    ref = {k: v.cpu() for k, v in lab.models[0].items()}
    aligned = [ref]
    if how == "activation":
        xs = torch.cat([lab.train_data(t)[0] for t in dict.fromkeys(lab.model_tasks)]).cpu()
    for i, sd in enumerate(lab.models[1:], start=1):
        sd_cpu = {k: v.cpu() for k, v in sd.items()}
        if how == "weight":
            gen = torch.Generator().manual_seed(random_state + i)
            perm = weight_matching(spec, ref, sd_cpu, generator=gen)
        else:
            perm = activation_matching(lab._fresh_module().cpu(), ref, sd_cpu, xs, spec=spec)
        aligned.append(apply_permutation(spec, perm, sd_cpu))
    return lab.with_models(aligned)


@dataclass(frozen=True)
class AlignmentGain:
    """One method's average accuracy without and with the alignment step (same samples)."""

    method: str
    how: str
    plain: float
    aligned: float

    @property
    def gain(self) -> float:
        return self.aligned - self.plain


def alignment_gain(plain: MergeEval, aligned: MergeEval, *, method: str, how: str) -> AlignmentGain:
    """The gain of aligning first, from the two evaluations of ``method`` (plain, aligned).

    Raises:
        ValueError: the two evaluations are of different tasks or sample sets.
    """
    check_choice("how", how, ALIGNMENTS)
    if not isinstance(method, str) or not method:
        raise ValueError(f"method must be a method name, got {method!r}")
    for name, ev in (("plain", plain), ("aligned", aligned)):
        if not isinstance(ev, MergeEval):
            raise TypeError(f"{name} must be a MergeEval, got {type(ev).__name__}")
    if tuple(plain.tasks) != tuple(aligned.tasks) or plain.full != aligned.full:
        raise ValueError(
            f"plain and aligned must be scored on the same samples, got tasks "
            f"{list(plain.tasks)} (full={plain.full}) and {list(aligned.tasks)} (full={aligned.full})"
        )
    return AlignmentGain(method, how, float(plain.average), float(aligned.average))


def default_alignment(records: Any) -> str:
    """ "weight" when the zoo records do not share a base (independently trained), else "none"."""
    recs = list(records)
    if len(recs) < 2:
        return "none"
    bases = {getattr(r, "base_id", None) or getattr(r, "parent_id", None) for r in recs}
    return "none" if len(bases) == 1 and None not in bases else "weight"
