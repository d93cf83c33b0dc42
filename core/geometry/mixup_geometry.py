"""Mixup geometry: last-layer features of mixed samples against class means and classifier rows.

Fisher, Meng & Papyan, "Pushing Boundaries: Mixup's Influence on Neural Collapse" (ICLR 2024,
arXiv 2402.06171): with mixup + cross-entropy, features of same-class mixes align with the
classifier (a simplex ETF) while different-class mixes spread along channels on the decision
boundary, ordered by λ. ``mixup_geometry`` computes what their Fig. 1 shows, for any zoo model
and any input mixer of :mod:`core.mixup`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from .._checks import check_int, check_range, check_tensor
from ..data.subset import stratified_subset
from ..models import Classifier
from .collapse import class_stats
from .features import extract_features


@dataclass(frozen=True)
class MixupGeometry:
    """Features of mixed samples with their mixing information.

    Attributes:
        features: (n, D) features of the mixed inputs.
        lam: (n,) share of each row's own input (λ).
        label_a: (n,) the row's own class; label_b: (n,) the partner's class.
        same_class: (n,) bool, label_a == label_b.
        clean_features: (n, D) features of the unmixed inputs; clean_labels: (n,).
        classes: (C,) classes present; class_means: (C, D) clean class means;
        global_mean: (D,) clean global mean; classifier: (C, D) classifier rows of those classes.
        mixer: the mixer's name.
    """

    features: Tensor
    lam: Tensor
    label_a: Tensor
    label_b: Tensor
    same_class: Tensor
    clean_features: Tensor
    clean_labels: Tensor
    classes: Tensor
    class_means: Tensor
    global_mean: Tensor
    classifier: Tensor
    mixer: str

    def classifier_tips(self, scale: float | None = None) -> Tensor:
        """(C, D) points μ_G + s · w_c/‖w_c‖ for drawing classifier directions next to the class
        means (s defaults to the mean norm of the centred class means)."""
        mc = self.class_means - self.global_mean
        s = float(mc.norm(dim=1).mean()) if scale is None else scale
        w = self.classifier
        return self.global_mean + s * w / w.norm(dim=1, keepdim=True).clamp_min(1e-12)


def mixup_geometry(
    model: Classifier,
    x: Tensor,
    y: Tensor,
    *,
    generator: torch.Generator,
    mixer: str = "mixup",
    alpha: float = 1.0,
    classes: Sequence[int] | None = None,
    n: int = 1000,
    device: str | torch.device = "auto",
    head: int = 0,
) -> MixupGeometry:
    """Mix a sample of (x, y) with ``mixer`` (one λ per row) and take last-layer features.

    Args:
        model: a zoo classifier (not modified).
        x: (N, ...) inputs; y: (N,) labels.
        generator: the only source of randomness (subset, λ, partners).
        mixer: an input-space mixer of :data:`core.mixup.MIXERS` (not "manifold_mixup").
        alpha: λ ~ Beta(α, α).
        classes: restrict to these classes (Fisher et al. show three), default all.
        n: at most this many rows are mixed.
        device: where features are computed.
        head: which head's classifier to report.
    """
    from .. import mixup as mixup_lib

    if not isinstance(model, Classifier):
        raise TypeError(f"model must be a core.models.Classifier, got {type(model).__name__}")
    check_tensor("x", x, ndim=(2, 3, 4), floating=True, finite=True, min_len=2)
    check_tensor("y", y, ndim=1)
    if len(x) != len(y):
        raise ValueError(f"x and y must have the same length, got {len(x)} and {len(y)}")
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    if mixer not in mixup_lib.MIXERS.names() or mixer == "manifold_mixup":
        raise ValueError(
            f"mixer must be one of {[m for m in mixup_lib.MIXERS.names() if m != 'manifold_mixup']}, "
            f"got {mixer!r}"
        )
    check_range("alpha", alpha, 0.0, None, low_inclusive=False)
    check_int("n", n, 2)
    if classes is not None:
        wanted = [int(c) for c in classes]
        if len(wanted) < 1:
            raise ValueError("classes must name at least one class, got none")
        keep = torch.isin(y, torch.tensor(wanted, dtype=y.dtype))
        if int(keep.sum()) < 2:
            raise ValueError(f"classes {wanted} select {int(keep.sum())} samples; need at least 2")
        x, y = x[keep], y[keep]
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    idx = stratified_subset(y, n, random_state=seed)  # (n,) the mixed pairs come below
    xs, ys = x[idx], y[idx]  # (n, ...), (n,)
    res = mixup_lib.mix(
        mixer, xs, ys, alpha=alpha, generator=generator, per_sample=True, n_classes=model.n_classes
    )
    lam = res.lam_x if res.lam_x is not None else res.lam  # (n,)
    feats = extract_features(model, res.x, device=device)  # (n, D)
    clean = extract_features(model, xs, device=device)  # (n, D)
    stats = class_stats(clean, ys)
    w = model.classifier_layer(head).weight.detach().cpu().double()[stats.classes]  # (C, D)
    label_b = ys[res.partner]
    return MixupGeometry(
        features=feats,
        lam=lam.detach().cpu().float(),
        label_a=ys.clone(),
        label_b=label_b,
        same_class=ys == label_b,
        clean_features=clean,
        clean_labels=ys.clone(),
        classes=stats.classes,
        class_means=stats.means,
        global_mean=stats.global_mean,
        classifier=w,
        mixer=mixer,
    )
