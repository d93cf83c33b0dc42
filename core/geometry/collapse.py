"""Neural-collapse metrics (Papyan, Han & Donoho 2020, PNAS, arXiv 2008.08186).

Everything is computed in float64 from one pass for the class means and a few thin matmuls:
Σ_B has rank ≤ C−1, so its pseudo-inverse lives in the C-dimensional span of the centred class
means; Tr(Σ_W Σ_B^†) is then a sum over at most C−1 eigen-directions of per-sample squared
projections, and no D x D matrix is ever formed.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from .._checks import check_int, check_tensor
from ..data.subset import stratified_subset
from ..models import Classifier as ClassifierModel
from .features import extract_features

Classifier = nn.Linear | Tensor | tuple[Tensor, Tensor | None] | None

NC_KEYS = ("nc1", "nc2_equinorm", "nc2_equiangular", "etf_distance", "nc3", "nc4")


@dataclass(frozen=True)
class ClassStats:
    """Class means of a feature set (float64).

    Attributes:
        classes: (C,) the class labels present, ascending.
        counts: (C,) samples per class.
        means: (C, D) class means μ_c.
        global_mean: (D,) μ_G, the mean over all samples.
    """

    classes: Tensor
    counts: Tensor
    means: Tensor
    global_mean: Tensor

    @property
    def centred(self) -> Tensor:
        """(C, D) centred class means μ_c − μ_G (the rows of Ṁᵀ)."""
        return self.means - self.global_mean


def _check_features_labels(features: Tensor, labels: Tensor) -> None:
    # finiteness is checked on the class sums (a NaN/Inf anywhere makes them non-finite)
    check_tensor("features", features, ndim=2, floating=True, min_len=2)
    check_tensor("labels", labels, ndim=1)
    if labels.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
        raise TypeError(f"labels must hold integer class indices, got dtype {labels.dtype}")
    if len(labels) != len(features):
        raise ValueError(
            f"features and labels must have the same length, got {len(features)} and {len(labels)}"
        )
    if int(labels.min()) < 0:
        raise ValueError(f"labels must be >= 0, got minimum {int(labels.min())}")


def class_stats(features: Tensor, labels: Tensor, *, chunk: int = 16384) -> ClassStats:
    """Class means in one pass (one-hot matmul per chunk of rows), accumulated in float64.

    Args:
        features: (N, D) features, finite.
        labels: (N,) integer class labels.
        chunk: rows per step (bounds the temporary memory).
    """
    _check_features_labels(features, labels)
    x = features.detach()
    work = torch.float64 if x.dtype == torch.float64 else torch.float32
    y = labels.detach().to(device=x.device, dtype=torch.int64)
    all_counts = torch.bincount(y)  # (max label + 1,)
    classes = torch.nonzero(all_counts).flatten()  # (C,) present labels, ascending
    counts = all_counts[classes]
    inverse = torch.cumsum(all_counts > 0, 0)[y] - 1  # (N,) 0..C-1
    sums = torch.zeros(len(classes), x.shape[1], dtype=torch.float64, device=x.device)  # (C, D)
    for i in range(0, len(x), chunk):
        onehot = torch.nn.functional.one_hot(inverse[i : i + chunk], len(classes)).to(work)
        sums += (onehot.T @ x[i : i + chunk].to(work)).double()  # (C, D): BLAS, not a scatter
    if not bool(torch.isfinite(sums).all()):  # NaN/Inf propagate into the sums: check only then
        n_bad = int((~torch.isfinite(x)).sum())
        raise ValueError(
            f"features must be finite, got {n_bad} NaN/Inf values"
            if n_bad
            else "features are too large: their class sums overflow"
        )
    means = sums / counts[:, None].double()
    return ClassStats(classes, counts, means, sums.sum(0) / len(x))


def _classifier_parts(classifier: Classifier, dim: int) -> tuple[Tensor, Tensor | None] | None:
    if classifier is None:
        return None
    w: Tensor
    b: Tensor | None
    if isinstance(classifier, nn.Linear):
        w, b = classifier.weight, classifier.bias
    elif isinstance(classifier, Tensor):
        w, b = classifier, None
    elif isinstance(classifier, tuple) and len(classifier) == 2:
        w, b = classifier
    else:
        raise TypeError(
            "classifier must be an nn.Linear, a (C, D) weight tensor or a "
            f"(weight, bias) tuple, got {type(classifier).__name__}"
        )
    check_tensor("classifier weight", w, ndim=2, floating=True, finite=True)
    if w.shape[1] != dim:
        raise ValueError(
            f"classifier weight must have {dim} columns (the feature width), "
            f"got shape {tuple(w.shape)}"
        )
    if b is not None:
        check_tensor("classifier bias", b, ndim=1, floating=True, finite=True)
        if len(b) != len(w):
            raise ValueError(f"classifier bias must have {len(w)} entries, got {len(b)}")
        b = b.detach().to(torch.float64)
    return w.detach().to(torch.float64), b


def _cv(x: Tensor) -> float:
    """Coefficient of variation std/mean (population std)."""
    return float(x.std(unbiased=False) / x.mean()) if float(x.mean()) > 0 else math.nan


def _off_diagonal(g: Tensor) -> Tensor:
    c = len(g)
    return g[~torch.eye(c, dtype=torch.bool, device=g.device)]


def simplex_etf_gram(n_classes: int) -> Tensor:
    """(C, C) Gram of the unit simplex ETF: 1 on the diagonal, −1/(C−1) off it."""
    check_int("n_classes", n_classes, 2)
    c = n_classes
    return (torch.eye(c, dtype=torch.float64) * c - 1.0) / (c - 1)


def normalized_gram(vectors: Tensor) -> Tensor:
    """(C, C) cosine Gram of the rows of ``vectors`` (C, D); zero rows give zero entries."""
    check_tensor("vectors", vectors, ndim=2, floating=True, finite=True)
    v = vectors.to(torch.float64)
    v = v / v.norm(dim=1, keepdim=True).clamp_min(1e-300)
    return v @ v.T


def etf_distance(vectors: Tensor) -> float:
    """‖G/‖G‖_F − (I − 11ᵀ/C)/√(C−1)‖_F with G the Gram of the rows of ``vectors`` (C, D).

    Zero for a simplex ETF at any scale; the target has unit Frobenius norm, so values lie in
    [0, 2]. Zhu et al. (``compute_ETF``) and rhubarbwu (``simplex_etf_error``) use this form.
    """
    check_tensor("vectors", vectors, ndim=2, floating=True, finite=True, min_len=2)
    v = vectors.to(torch.float64)
    c = len(v)
    g = v @ v.T  # (C, C)
    target = (torch.eye(c, dtype=g.dtype, device=g.device) - 1.0 / c) / math.sqrt(c - 1)
    return float((g / g.norm().clamp_min(1e-300) - target).norm())


def neural_collapse(
    features: Tensor,
    labels: Tensor,
    classifier: Classifier = None,
    *,
    rank_tol: float = 1e-10,
) -> dict[str, float]:
    """Neural-collapse metrics of last-layer features (all → 0 at collapse).

    Notation (Papyan et al. 2020): h_i features, μ_c class means, μ_G the global mean over all
    samples, Ṁ = [μ_c − μ_G]_c (D, C), W (C, D) classifier rows w_c, b bias; C is the number of
    classes present in ``labels`` (classifier rows of absent classes are ignored).

    Keys:
        ``nc1``: Tr(Σ_W Σ_B^†)/C with Σ_W = Ave_i (h_i − μ_{y_i})(h_i − μ_{y_i})ᵀ and
            Σ_B = Ave_c (μ_c − μ_G)(μ_c − μ_G)ᵀ (within-class variability collapse). Papyan's
            ``Sw_invSb`` (some copies omit /C), Zhu et al.'s ``Sw_invSb`` (``np.trace(Sw @
            pinv(Sb)) / C``), rhubarbwu ``covariance_ratio(metric="pinv"|"svd")`` — equal here
            whenever rank Σ_B = C−1. Σ_B^† is taken on eigenvalues above ``rank_tol`` x the
            largest, so the value is never negative (cf. negative NC1 from float32 pinv).
        ``nc1_quotient``: Tr(Σ_W)/Tr(Σ_B) (rhubarbwu ``metric="quotient"``, Tirer et al. 2023).
        ``nc1_cdnv``: Avg_{c≠c'} (Var_c + Var_c') / (2‖μ_c − μ_c'‖²), Var_c = Ave ‖h − μ_c‖²
            (class-distance normalised variance, Galanti et al. 2022; rhubarbwu
            ``variability_cdnv``).
        ``nc2_equinorm``: Std_c ‖μ_c − μ_G‖ / Avg_c ‖μ_c − μ_G‖ (Papyan Fig. 2 ``norm_M_CoV``).
        ``nc2_equinorm_w``: the same for the classifier rows ‖w_c‖ (``norm_W_CoV``).
        ``nc2_equiangular``: Avg_{c≠c'} |cos(μ_c − μ_G, μ_c' − μ_G) + 1/(C−1)|, the deviation
            from the simplex angle (Papyan Fig. 4 "maximal angle", "mutual coherence").
        ``nc2_equiangular_std``: Std_{c≠c'} of those cosines (Papyan Fig. 3 ``cos_M``).
        ``etf_distance``: ‖G/‖G‖_F − (I − 11ᵀ/C)/√(C−1)‖_F with G = ṀᵀṀ (rhubarbwu
            ``simplex_etf_error``; Zhu et al. ``compute_ETF`` computes it for WWᵀ instead,
            given here as ``etf_distance_w``).
        ``nc3``: ‖Wᵀ/‖W‖_F − Ṁ/‖Ṁ‖_F‖_F, self-duality (Papyan Fig. 5). Not squared: the
            colab-derived code stores the square (``W_M_dist``); Zhu et al.'s
            ``compute_W_H_relation`` instead compares WṀ with the ETF.
        ``nc4``: fraction of samples where the classifier's prediction argmax_c ⟨w_c, h⟩ + b_c
            differs from the nearest class centre argmin_c ‖h − μ_c‖ (Papyan Fig. 7, "NCC
            mismatch"; rhubarbwu reports the agreement 1 − nc4). Not Zhu et al.'s "NC4"
            ‖Wμ_G + b‖, which is given here as ``bias_relation``. With a classifier but no bias,
            b = 0 is used: at collapse, agreement needs b = −Wμ_G (Zhu et al.).
        ``n_classes``, ``n_samples``: C and N.

    ``nc3``, ``nc4``, ``nc2_equinorm_w``, ``etf_distance_w`` and ``bias_relation`` are NaN when
    ``classifier`` is None.

    Args:
        features: (N, D) finite features.
        labels: (N,) integer labels; at least two classes present.
        classifier: the linear head (``nn.Linear``), its (n_out, D) weight, or (weight, bias);
            n_out must exceed the largest label.
        rank_tol: relative eigenvalue threshold for the pseudo-inverse of Σ_B.

    Returns:
        metric name -> float.
    """
    if not isinstance(rank_tol, float) or not 0.0 < rank_tol < 1.0:
        raise ValueError(f"rank_tol must be a float in (0, 1), got {rank_tol!r}")
    # The metrics are scale-free; squares of features near 1e±30 over/underflow float32 (and
    # 1e±150 float64). Features far from 1 are divided by a power of 2 (exact) first.
    scale = _power_of_two_scale(features)
    if scale != 1.0:
        features = features / scale
    stats = class_stats(features, labels)
    c, n = len(stats.classes), len(features)
    if c < 2:
        raise ValueError(f"labels must contain at least 2 classes, got {c}")
    parts = _classifier_parts(classifier, features.shape[1])
    dev = stats.means.device
    mc = stats.centred  # (C, D) rows μ_c − μ_G
    w = b = None
    if parts is not None:
        w_all, b_all = parts
        if len(w_all) <= int(stats.classes.max()):
            raise ValueError(
                f"classifier must have more than {int(stats.classes.max())} rows "
                f"(the largest label), got {len(w_all)}"
            )
        w = w_all.to(dev)[stats.classes]  # (C, D) rows of the present classes
        b = (
            b_all.to(dev, torch.float64)[stats.classes] / scale  # logits scale with h
            if b_all is not None
            else torch.zeros(c, dtype=torch.float64, device=dev)
        )

    # Σ_B = Ṁ Ṁᵀ / C: its eigenpairs from the (C, C) Gram ṀᵀṀ / C
    evals, evecs = torch.linalg.eigh(mc @ mc.T / c)
    keep = evals > rank_tol * evals.max().clamp_min(1e-300)
    lam, v = evals[keep], evecs[:, keep]  # (r,), (C, r)
    u = mc.T @ v / torch.sqrt(lam * c)  # (D, r) orthonormal eigenvectors of Σ_B

    dev_stats = _deviation_pass(features, labels, stats, u, mc, w, b)
    sw_proj = dev_stats["z2"] / n  # (r,) u_kᵀ Σ_W u_k
    counts = stats.counts.to(torch.float64)
    var_c = dev_stats["sq"] / counts  # (C,) Var_c = Ave ‖h − μ_c‖²
    tr_sw = float(dev_stats["sq"].sum() / n)
    tr_sb = float((mc * mc).sum() / c)
    dist2 = torch.cdist(mc, mc).pow(2)  # (C, C)
    cdnv = (var_c[:, None] + var_c[None, :]) / (2 * dist2.clamp_min(1e-300))
    cos = _off_diagonal(normalized_gram(mc))  # (C(C-1),)
    out: dict[str, float] = {
        "nc1": float((sw_proj / lam).sum() / c),
        "nc1_quotient": tr_sw / tr_sb if tr_sb > 0 else math.inf,
        "nc1_cdnv": float(_off_diagonal(cdnv).mean()),
        "nc2_equinorm": _cv(mc.norm(dim=1)),
        "nc2_equiangular": float((cos + 1.0 / (c - 1)).abs().mean()),
        "nc2_equiangular_std": float(cos.std(unbiased=False)),
        "etf_distance": etf_distance(mc),
        "nc3": math.nan,
        "nc4": math.nan,
        "nc2_equinorm_w": math.nan,
        "etf_distance_w": math.nan,
        "bias_relation": math.nan,
        "n_classes": float(c),
        "n_samples": float(n),
    }
    if w is not None and b is not None:
        out["nc3"] = float((w / w.norm() - mc / mc.norm()).norm())
        out["nc2_equinorm_w"] = _cv(w.norm(dim=1))
        out["etf_distance_w"] = etf_distance(w)
        out["nc4"] = float(dev_stats["mismatch"] / n)
        out["bias_relation"] = float((w @ stats.global_mean + b).norm()) * scale
    return out


def _power_of_two_scale(features: Tensor, low: float = 2.0**-20, high: float = 2.0**20) -> float:
    """2^round(log2 max|h|) when max|h| lies outside [low, high] (else 1; NaN/Inf: 1, left for
    the finiteness check)."""
    if not isinstance(features, Tensor) or features.numel() == 0:
        return 1.0
    top = float(features.detach().abs().amax())
    if not math.isfinite(top) or top == 0.0 or low <= top <= high:
        return 1.0
    return 2.0 ** round(math.log2(top))


def _deviation_pass(
    features: Tensor,
    labels: Tensor,
    stats: ClassStats,
    u: Tensor,
    mc: Tensor,
    w: Tensor | None,
    b: Tensor | None = None,
    chunk: int = 2048,
) -> dict[str, Tensor]:
    """One streaming pass over the within-class deviations d_i = h_i − μ_{y_i}.

    Big (chunk, D) work runs in the features' dtype (float32 stays float32, float64 stays
    float64) in one reused, cache-sized buffer (fresh (chunk, D) temporaries cost a page fault
    per 4 KiB); ‖d_i‖ is one ``vector_norm`` reduction (an ``einsum`` row dot was ~15x slower
    on the CPU); everything accumulated is float64. Returns ``z2`` (r,) Σ_i (u_kᵀ d_i)², ``sq`` (C,)
    per-class Σ ‖d_i‖², ``mismatch`` the count of classifier-vs-nearest-centre disagreements.
    """
    x = features.detach()
    work = torch.float64 if x.dtype == torch.float64 else torch.float32
    dev = x.device
    lookup = torch.zeros(int(stats.classes.max()) + 1, dtype=torch.int64, device=dev)
    lookup[stats.classes.to(dev)] = torch.arange(len(stats.classes), device=dev)
    y = lookup[labels.detach().to(dev, torch.int64)]  # (N,) 0..C-1
    c, r = len(mc), u.shape[1]
    mu_c = stats.means.to(dev)  # (C, D) float64
    # h·A = d·A + (μ_y·A): the class-mean part is a (C, k) table looked up per sample
    cols = [u, mc.T] + ([w.T] if w is not None else [])
    a = torch.cat([col.to(dev) for col in cols], dim=1)  # (D, r + C [+ C])
    table = mu_c @ a  # (C, r + C [+ C]) float64
    a_w, means_w = a.to(work), mu_c.to(work)
    mc_sq = (mc * mc).sum(1).to(dev)  # (C,)
    glob = stats.global_mean.to(dev)
    z2 = torch.zeros(r, dtype=torch.float64, device=dev)
    sq = torch.zeros(c, dtype=torch.float64, device=dev)
    mismatch = torch.zeros((), dtype=torch.float64, device=dev)
    dbuf = torch.empty(min(chunk, len(x)), x.shape[1], dtype=work, device=dev)  # (chunk, D)
    for i in range(0, len(x), chunk):
        yc = y[i : i + chunk]
        d = torch.index_select(means_w, 0, yc, out=dbuf[: len(yc)])  # (n, D) μ_{y_i}
        d = torch.sub(x[i : i + chunk], d, out=d)  # (n, D) within-class deviations, in place
        sq.index_add_(0, yc, torch.linalg.vector_norm(d, dim=1).double().square())
        p = (d @ a_w).double() + table[yc]  # (n, r + C [+ C]) = h·A
        z = p[:, :r] - table[yc, :r]  # (n, r) = u_kᵀ d_i
        z2 += (z * z).sum(0)
        if w is not None:
            # nearest centre: argmax_c 2⟨h − μ_G, μ_c − μ_G⟩ − ‖μ_c − μ_G‖²
            hm = p[:, r : r + c] - (glob @ mc.T.to(dev))
            ncc = (2 * hm - mc_sq).argmax(1)
            logits = p[:, r + c :] + (b.to(dev) if b is not None else 0.0)  # (n, C)
            mismatch += (logits.argmax(1) != ncc).sum()
    return {"z2": z2, "sq": sq, "mismatch": mismatch}


def track_neural_collapse(
    x: Tensor,
    y: Tensor,
    *,
    n_max: int = 2000,
    random_state: int = 0,
    batch_size: int = 1024,
    device: str | torch.device = "auto",
    head: int = 0,
) -> Callable[[nn.Module, int], dict[str, Any]]:
    """An ``epoch_callback`` for :func:`core.train.train` that records NC metrics per epoch.

    The subset (at most ``n_max`` samples, drawn once with ``random_state``) is fixed, so the
    values of different epochs and runs compare like with like. The returned dict (stored in
    ``History.extra``) holds the keys of :func:`neural_collapse` plus ``epoch``.

    Args:
        x: (N, ...) training inputs (the metrics are defined on the training set).
        y: (N,) labels.
        n_max: at most this many samples are used.
        random_state: seed for the subset.
        batch_size: rows per forward pass.
        device: where the features are computed.
        head: which head's classifier to use.
    """
    check_tensor("x", x, ndim=(2, 3, 4), floating=True, min_len=2)
    check_tensor("y", y, ndim=1)
    if len(x) != len(y):
        raise ValueError(f"x and y must have the same length, got {len(x)} and {len(y)}")
    check_int("n_max", n_max, 2)
    check_int("random_state", random_state, 0)
    idx = stratified_subset(y, n_max, random_state=random_state) if len(x) > n_max else None
    xs, ys = (x[idx], y[idx]) if idx is not None else (x, y)

    def callback(model: nn.Module, epoch: int) -> dict[str, Any]:
        if not isinstance(model, ClassifierModel):
            raise TypeError(f"model must be a core.models.Classifier, got {type(model).__name__}")
        feats = extract_features(model, xs, batch_size=batch_size, device=device)  # (n, D)
        layer = model.classifier_layer(head)
        bias = layer.bias.detach().cpu() if layer.bias is not None else None
        return {"epoch": epoch, **neural_collapse(feats, ys, (layer.weight.detach().cpu(), bias))}

    return callback
