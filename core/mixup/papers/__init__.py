"""The mixing papers the workbench reproduces, one file per paper, on tiny offline settings.

Each module holds the paper's method (or data model) as small functions and a ``run_<study>``
that trains with seeds through the one seed loop :func:`run_seeds`, reports progress, can be cancelled (``should_stop``) and returns a
JSON-serialisable record with the headline numbers and their confidence intervals. Records are
stored in the workspace with :func:`store_run` (kind ``"mix_paper_run"``) and drawn by
:mod:`core.figures.mix_papers`.

* ``feature_learning`` — Zou et al., "The Benefits of Mixup for Feature Learning" (ICML 2023).
* ``neural_collapse`` — Fisher, Meng, Papyan, "Pushing Boundaries: Mixup's Influence on Neural
  Collapse" (ICLR 2024).
* ``supremix`` — Wu et al., "Mixup Your Own Pairs" (SupReMix, contrastive regression).
* ``mochi`` — Kalantidis et al., "Hard Negative Mixing for Contrastive Learning" (NeurIPS 2020).
* ``adamixup`` — Guo et al., "MixUp as Locally Linear Out-Of-Manifold Regularization" (AAAI 2019).
* ``adautomix`` — Qin et al., "Adversarial AutoMixup" (ICLR 2024), a reduced version.
* ``attention_labels`` — TransMix (CVPR 2022) and MixPro's progressive attention labels
  (ICLR 2023) on the registry's small ViT.
* ``dualmix`` — Fan et al., "DualMix: Unleashing the Potential of Data Augmentation for Online
  Class-Incremental Learning" (arXiv 2303.07864): EnMix and AdpMix against experience replay.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from ._common import (
    PAPERS,
    RUN_KIND,
    Cancelled,
    ProgressFn,
    StopFn,
    bootstrap_mean_ci,
    load_paper_runs,
    random_subset,
    store_run,
)
from ._seeds import SeedRun, SeedRuns, run_seeds


def _studies() -> dict[str, tuple[type, Callable[..., dict[str, Any]], Callable[..., Any]]]:
    """study name -> (config dataclass, run function, headline-table function)."""
    from . import adamixup as am
    from . import adautomix as aa
    from . import attention_labels as al
    from . import dualmix as dm
    from . import feature_learning as fl
    from . import mochi as mc
    from . import neural_collapse as nc
    from . import supremix as sr

    return {
        "feature_learning": (fl.FeatureNoiseConfig, fl.run_feature_learning, fl.headline),
        "neural_collapse": (nc.CollapseConfig, nc.run_neural_collapse, nc.headline),
        "supremix": (sr.SupReMixConfig, sr.run_supremix, sr.headline),
        "mochi": (mc.MoChiConfig, mc.run_mochi, mc.headline),
        "adamixup": (am.AdaMixUpConfig, am.run_adamixup, am.headline),
        "adautomix": (aa.AdAutoMixConfig, aa.run_adautomix, aa.headline),
        "attention_labels": (al.AttentionLabelConfig, al.run_attention_labels, al.headline),
        "dualmix": (dm.DualMixConfig, dm.run_dualmix, dm.headline),
    }


def headline(record: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The study's headline numbers as table rows (method, estimate, CI...)."""
    studies = _studies()
    study = record.get("study") if isinstance(record, Mapping) else None
    if study not in studies:
        raise ValueError(f"record must be a study record of {sorted(studies)}, got {study!r}")
    return list(studies[study][2](record))


def rerun(
    record: Mapping[str, Any],
    *,
    progress: ProgressFn | None = None,
    should_stop: StopFn | None = None,
) -> dict[str, Any]:
    """Train a stored study again from its record's config, methods and seeds."""
    studies = _studies()
    study = record.get("study") if isinstance(record, Mapping) else None
    if study not in studies:
        raise ValueError(f"record must be a study record of {sorted(studies)}, got {study!r}")
    config_cls, run, _ = studies[study]
    kwargs = {k: record[k] for k in ("methods", "seeds") if k in record}
    config = {
        k: tuple(v) if isinstance(v, list) else v for k, v in record["config"].items()
    }  # JSON stores tuples as lists
    return run(config_cls(**config), progress=progress, should_stop=should_stop, **kwargs)


__all__ = [
    "PAPERS",
    "RUN_KIND",
    "Cancelled",
    "SeedRun",
    "SeedRuns",
    "bootstrap_mean_ci",
    "headline",
    "load_paper_runs",
    "random_subset",
    "rerun",
    "run_seeds",
    "store_run",
]
