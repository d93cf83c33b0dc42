"""Loss landscapes and mode connectivity.

* :func:`interpolate` — loss/accuracy along the straight line between two models (train and
  test, endpoints included, optional BatchNorm reset at every point) -> :class:`PathResult`.
* :func:`barrier` — every barrier definition side by side, labelled -> :class:`BarrierReport`.
* :func:`plane` — the plane through three models, coarse to fine -> :class:`PlaneResult`.
* :func:`random_directions` — filter-normalised 1-D / 2-D slices around one model.
* :func:`bezier_curve` — train a quadratic Bezier curve between two models and evaluate it.
* :func:`reset_batchnorm` — re-estimate BatchNorm running statistics from data.

Evaluation runs on a fixed, seeded subset of each split by default (``max_examples``; the
results report it); ``max_examples=None`` gives the exact full-data numbers.
"""

from ._eval import EvalData, has_batchnorm, prepare_data, reset_batchnorm
from .compare import METHODS, align, compare_paths
from .curves import CurveResult, bezier_curve, bezier_point
from .path import BARRIER_COLUMNS, BarrierReport, PathResult, barrier, interpolate
from .plane import PlaneResult, filter_normalized_direction, plane, random_directions

__all__ = [
    "BARRIER_COLUMNS",
    "BarrierReport",
    "CurveResult",
    "EvalData",
    "METHODS",
    "PathResult",
    "PlaneResult",
    "align",
    "barrier",
    "bezier_curve",
    "bezier_point",
    "compare_paths",
    "filter_normalized_direction",
    "has_batchnorm",
    "interpolate",
    "plane",
    "prepare_data",
    "random_directions",
    "reset_batchnorm",
]
