"""Feature geometry: feature extraction, neural-collapse metrics, mixup geometry, projections."""

from .collapse import (
    NC_KEYS,
    ClassStats,
    class_stats,
    etf_distance,
    neural_collapse,
    normalized_gram,
    simplex_etf_gram,
    track_neural_collapse,
)
from .features import extract_features, layer_features, layer_names
from .mixup_geometry import MixupGeometry, mixup_geometry
from .projection import (
    METHODS as PROJECTIONS,
)
from .projection import (
    WARM_STATE,
    Projection,
    linear_basis,
    project,
    tsne_embed,
    umap_embed,
    warm_up_umap,
)
from .report import (
    feature_report,
    mixup_report,
    projection_report,
    report_from_features,
    sample_rows,
)
from .runs import nc_histories, runs_with_nc, train_nc_comparison

__all__ = [
    "NC_KEYS",
    "PROJECTIONS",
    "WARM_STATE",
    "MixupGeometry",
    "Projection",
    "linear_basis",
    "mixup_geometry",
    "nc_histories",
    "project",
    "runs_with_nc",
    "train_nc_comparison",
    "tsne_embed",
    "umap_embed",
    "warm_up_umap",
    "ClassStats",
    "class_stats",
    "etf_distance",
    "extract_features",
    "feature_report",
    "report_from_features",
    "mixup_report",
    "projection_report",
    "sample_rows",
    "layer_features",
    "layer_names",
    "neural_collapse",
    "normalized_gram",
    "simplex_etf_gram",
    "track_neural_collapse",
]
