"""Evaluation behind the Merge Lab: merge, evaluate on every task, compare methods honestly.

A small package, one module per thing it holds; ``core.merge_eval`` re-exports the public names.

* :mod:`.evalset` — :class:`EvalSet` and :func:`make_eval_set`: a fixed seeded, stratified
  subset of every task's test set (the fast path for sliders; drawn with
  :func:`core.data.stratified_subset`), or the full test sets;
* :mod:`.results` — :class:`MergeEval`: per-task accuracy, average accuracy, normalised
  accuracy (merged / fine-tuned, per task then averaged) and the per-sample correctness that
  :mod:`core.stats` needs;
* :mod:`.methods` — :func:`applicable_methods`, :data:`SCALE_LINEAR` (the ``scale_linear``
  tag), :func:`effective_coefficients` and the slider grids :func:`linear_grid`,
  :func:`sweep_values`;
* :mod:`.lab` — :class:`MergeLab`: source state dicts, task vectors, one model evaluated with
  ``torch.func.functional_call``, the reference accuracies; ``lab.run(method, hyper)`` merges
  with :func:`core.merge.merge` (incrementally where the method allows) and evaluates;
  ``full=True`` evaluates on the full test sets. Data-dependent inputs come from each method's
  ``prepare(modules, data)`` hook;
* :mod:`.store` — :func:`lab_from_zoo` and :func:`save_merged` (the zoo glue);
* :mod:`.studies` — :func:`coefficient_landscape` (accuracy over a λ1 × λ2 grid of two task
  vectors), :func:`sweep` (one hyperparameter over values) and :func:`compare_methods` (every
  method on the same models, bootstrap CI and McNemar p-value against task arithmetic), each
  with a ``progress(done, total, message)`` callback.
"""

from __future__ import annotations

from .align_step import (
    ALIGNMENT_TITLES,
    ALIGNMENTS,
    AlignmentGain,
    align_lab,
    alignment_gain,
    default_alignment,
)
from .evalset import DEFAULT_N_PER_TASK, EvalSet, make_eval_set
from .lab import DATA_N_PER_TASK, MERGED_TV_CACHE, MergeLab, ProgressFn
from .methods import (
    SCALE_LINEAR,
    applicable_methods,
    effective_coefficients,
    linear_grid,
    sweep_values,
)
from .results import MergeEval
from .store import lab_from_zoo, save_merged
from .studies import (
    ComparisonResult,
    ComparisonRow,
    LandscapeResult,
    SweepResult,
    coefficient_landscape,
    compare_methods,
    sweep,
)

__all__ = [
    "ALIGNMENTS",
    "ALIGNMENT_TITLES",
    "AlignmentGain",
    "align_lab",
    "alignment_gain",
    "default_alignment",
    "DATA_N_PER_TASK",
    "DEFAULT_N_PER_TASK",
    "MERGED_TV_CACHE",
    "SCALE_LINEAR",
    "ProgressFn",
    "applicable_methods",
    "effective_coefficients",
    "linear_grid",
    "sweep_values",
    "ComparisonResult",
    "ComparisonRow",
    "EvalSet",
    "LandscapeResult",
    "MergeEval",
    "MergeLab",
    "SweepResult",
    "coefficient_landscape",
    "compare_methods",
    "lab_from_zoo",
    "make_eval_set",
    "save_merged",
    "sweep",
]
