"""Fisher, Meng, Papyan, "Pushing Boundaries: Mixup's Influence on Neural Collapse" (ICLR 2024,
arXiv 2402.06171): the last-layer geometry of mixed training samples under mixup + CE.

Claim: after training with mixup and cross-entropy, features of **same-class** mixes align with
their class's classifier row (the simplex-ETF vertex, independent of λ), while features of
**different-class** mixes (a, b) spread along a channel on the a/b decision boundary ordered by
λ; they are not the convex combinations λ μ_a + (1 - λ) μ_b of the class means (which an MSE
loss would give). Their Fig. 1 draws the features of three classes' mixes on the plane of the
three centred classifier rows.

What is measured here (the variant; the statistics are ours, chosen to make the claim a number):

* ``same_alignment``: cos(h − μ_G, w_y − w̄) over same-class mixes (centred rows) (1 = on the classifier direction),
  and ``same_lam_corr``: its Pearson correlation with λ (≈ 0 = independent of λ).
* ``channel_r2`` and ``channel_slope``: for different-class mixes, the logit margin
  z_a − z_b regressed on logit(λ) (λ clipped to [0.02, 0.98]). Soft-target CE is minimised at
  softmax_a / (softmax_a + softmax_b) = λ, i.e. margin = logit(λ): a mixup-trained model places
  the mixes along the boundary channel in λ order (R² high, slope near 1); an ERM model snaps
  them to one side (low R², steep slope).
* ``convex_gap``: ‖h − (λ μ_a + (1 − λ) μ_b)‖ / ‖μ_a − μ_b‖ (0 = convex combination of means).

Each seed trains ERM and mixup (λ ~ Beta(α, α)) from the same initialisation with
:func:`core.train.train`, then measures the mixes of training samples with
:func:`core.geometry.mixup_geometry`; CIs are percentile bootstraps over the per-mix values
pooled across seeds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..._checks import check_int, check_range
from ...geometry.mixup_geometry import MixupGeometry, mixup_geometry
from ...models import ARCHITECTURES, Classifier, create_model
from ...train import TrainConfig, train
from .. import mix_fn
from ._common import ProgressFn, StopFn, bootstrap_mean_ci
from ._seeds import SeedRun, run_seeds

METHODS = ("erm", "mixup")
STATS = ("same_alignment", "same_lam_corr", "channel_r2", "channel_slope", "convex_gap")


@dataclass(frozen=True)
class CollapseConfig:
    """Training and measurement settings (defaults: digits, a small MLP, seconds per seed)."""

    task: str = "digits"
    arch: str = "mlp"
    width: int = 128
    depth: int = 2
    epochs: int = 60
    lr: float = 2e-3
    weight_decay: float = 5e-4
    batch_size: int = 128
    alpha: float = 1.0  # mixup λ ~ Beta(α, α) in training and measurement
    n_mix: int = 1000  # mixes of training samples measured per model
    figure_classes: tuple[int, int, int] = (0, 1, 2)
    n_figure: int = 300  # mixes drawn in the figure

    def __post_init__(self) -> None:
        ARCHITECTURES[self.arch]
        check_int("width", self.width, 4, 4096)
        check_int("depth", self.depth, 1, 8)
        check_int("epochs", self.epochs, 1, 10_000)
        check_range("lr", self.lr, 0.0, 1.0, low_inclusive=False)
        check_range("weight_decay", self.weight_decay, 0.0, 1.0)
        check_int("batch_size", self.batch_size, 1)
        check_range("alpha", self.alpha, 0.0, None, low_inclusive=False)
        check_int("n_mix", self.n_mix, 10)
        check_int("n_figure", self.n_figure, 3)
        if len(set(self.figure_classes)) != 3:
            raise ValueError(
                f"figure_classes must be 3 distinct classes, got {self.figure_classes}"
            )


def geometry_stats(geo: MixupGeometry, logits: torch.Tensor) -> dict[str, np.ndarray]:
    """Per-mix values of the statistics (see the module docstring).

    Args:
        geo: features of mixes from :func:`core.geometry.mixup_geometry` (all classes).
        logits: (n, C) the model's logits on the same mixes.

    Returns:
        ``same_cos`` (per same-class mix), ``same_lam``, ``margin`` and ``lam`` (per
        different-class mix), ``convex_gap`` (per different-class mix).
    """
    h = geo.features.double()  # (n, D)
    pos = {int(c): i for i, c in enumerate(geo.classes)}
    ia = torch.tensor([pos[int(c)] for c in geo.label_a])
    ib = torch.tensor([pos[int(c)] for c in geo.label_b])
    w = geo.classifier.double()
    w = w - w.mean(dim=0)  # (C, D) centred classifier rows (the ETF is centred)
    centred = h - geo.global_mean.double()
    same = geo.same_class
    cos = torch.nn.functional.cosine_similarity(centred[same], w[ia[same]], dim=1)
    lam = geo.lam.double()
    diff = ~same
    ca = torch.tensor([int(c) for c in geo.label_a])[diff]
    cb = torch.tensor([int(c) for c in geo.label_b])[diff]
    lg = logits.double()[diff]
    margin = lg[torch.arange(len(ca)), ca] - lg[torch.arange(len(cb)), cb]
    mu = geo.class_means.double()
    ld = lam[diff][:, None]
    convex = ld * mu[ia[diff]] + (1 - ld) * mu[ib[diff]]
    gap = (h[diff] - convex).norm(dim=1) / (mu[ia[diff]] - mu[ib[diff]]).norm(dim=1).clamp_min(
        1e-12
    )
    return {
        "same_cos": cos.numpy(),
        "same_lam": lam[same].numpy(),
        "margin": margin.numpy(),
        "lam": lam[diff].numpy(),
        "convex_gap": gap.numpy(),
    }


def channel_fit(lam: np.ndarray, margin: np.ndarray) -> tuple[float, float]:
    """(R², slope) of the least-squares line margin ≈ a + b · logit(clip(λ, 0.02, 0.98))."""
    if lam.shape != margin.shape or lam.size < 3:
        raise ValueError(f"lam and margin must be equal-length with >= 3 values, got {lam.shape}")
    lc = np.clip(lam, 0.02, 0.98)
    t = np.log(lc / (1 - lc))
    a = np.stack([np.ones_like(t), t], axis=1)
    coef, *_ = np.linalg.lstsq(a, margin, rcond=None)
    resid = margin - a @ coef
    ss = float(((margin - margin.mean()) ** 2).sum())
    return (1.0 - float((resid**2).sum()) / ss if ss > 0 else 0.0), float(coef[1])


def _figure_points(geo: MixupGeometry) -> dict:
    """2-D coordinates on the plane of the three centred classifier rows (Fig. 1's view)."""
    w = geo.classifier.double()
    wc = w - w.mean(dim=0)  # (3, D) centred classifier rows span a plane
    q, _ = torch.linalg.qr(wc.T)  # (D, 3); the first two columns span the plane
    basis = q[:, :2]
    g = geo.global_mean.double()
    pts = (geo.features.double() - g) @ basis
    tips = wc @ basis
    scale = float(pts.norm(dim=1).max() / tips.norm(dim=1).max().clamp_min(1e-12))
    return {
        "x": pts[:, 0].tolist(),
        "y": pts[:, 1].tolist(),
        "lam": geo.lam.tolist(),
        "same": geo.same_class.tolist(),
        "label_a": geo.label_a.tolist(),
        "label_b": geo.label_b.tolist(),
        "classifier": (tips * scale).tolist(),
        "classes": geo.classes.tolist(),
    }


def run_neural_collapse(
    config: CollapseConfig = CollapseConfig(),
    *,
    methods: Sequence[str] = METHODS,
    seeds: Sequence[int] = (0, 1, 2),
    device: str | torch.device = "cpu",
    progress: ProgressFn | None = None,
    should_stop: StopFn | None = None,
) -> dict:
    """Train each method per seed and measure the mixes' geometry; see the module docstring."""
    from ...data import get_task

    if not isinstance(config, CollapseConfig):
        raise TypeError(f"config must be a CollapseConfig, got {type(config).__name__}")
    ds = get_task(config.task)
    c, hgt, _ = ds.input_shape
    kwargs = {"width": config.width, "n_classes": ds.n_classes, "in_channels": c, "image_size": hgt}
    if config.arch == "mlp":
        kwargs["depth"] = config.depth

    def run_one(run: SeedRun) -> dict:
        m, seed = run.method, run.seed
        model = create_model(config.arch, seed=seed, **kwargs)
        if not isinstance(model, Classifier):
            raise TypeError(f"arch {config.arch!r} must build a Classifier, got {type(model)}")
        cfg = TrainConfig(
            epochs=config.epochs,
            lr=config.lr,
            weight_decay=config.weight_decay,
            batch_size=config.batch_size,
            seed=seed,
        )
        fn = mix_fn("mixup", alpha=config.alpha, n_classes=ds.n_classes) if m == "mixup" else None
        hist = train(
            model,
            ds.x_train,
            ds.y_train,
            cfg,
            mix_fn=fn,
            device=device,
            eval_data=(ds.x_test, ds.y_test),
            progress=lambda info: run.progress({k: info[k] for k in ("epoch", "step", "steps")}),
            should_stop=run.should_stop,
        )
        model = model.cpu().eval()
        g = torch.Generator().manual_seed(10_000 + seed)
        geo = mixup_geometry(
            model,
            ds.x_train,
            ds.y_train,
            generator=g,
            alpha=config.alpha,
            n=config.n_mix,
            device="cpu",
        )
        with torch.no_grad():
            logits = model.classify(geo.features.float())
        vals = geometry_stats(geo, logits)
        r2, slope = channel_fit(vals["lam"], vals["margin"])
        out: dict = {
            "vals": vals,
            "per_seed": {
                "seed": seed,
                "test_accuracy": hist.test_accuracy[-1],
                "train_accuracy": hist.train_accuracy[-1],
                "same_alignment": float(vals["same_cos"].mean()),
                "same_lam_corr": _corr(vals["same_lam"], vals["same_cos"]),
                "channel_r2": r2,
                "channel_slope": slope,
                "convex_gap": float(vals["convex_gap"].mean()),
            },
        }
        if run.index == 0:  # the figure: the first seed's mixes between the figure classes
            fg = mixup_geometry(
                model,
                ds.x_train,
                ds.y_train,
                generator=torch.Generator().manual_seed(7),
                alpha=config.alpha,
                classes=config.figure_classes,
                n=config.n_figure,
                device="cpu",
            )
            out["figure"] = {
                **_figure_points(fg),
                **{"margin_lam": vals["lam"].tolist(), "margin": vals["margin"].tolist()},
            }
        return out

    runs = run_seeds(run_one, methods, seeds, METHODS, progress=progress, should_stop=should_stop)
    per_seed = runs.by_method("per_seed")
    summary: dict[str, dict] = {}
    for m in runs.methods:
        p = {
            k: np.concatenate([v[k] for v in runs.values(m, "vals")])
            for k in runs.outputs[m][0]["vals"]
        }
        r2, slope = channel_fit(p["lam"], p["margin"])
        summary[m] = {
            "same_alignment": bootstrap_mean_ci(p["same_cos"]).to_dict(),
            "convex_gap": bootstrap_mean_ci(p["convex_gap"]).to_dict(),
            "channel_r2": _boot_fit(p["lam"], p["margin"], 0, r2),
            "channel_slope": _boot_fit(p["lam"], p["margin"], 1, slope),
            "same_lam_corr": _corr(p["same_lam"], p["same_cos"]),
            "test_accuracy": float(np.mean([s["test_accuracy"] for s in per_seed[m]])),
        }
    return runs.record(
        "neural_collapse",
        config,
        per_seed=per_seed,
        summary=summary,
        figure={m: runs.outputs[m][0]["figure"] for m in runs.methods},
    )


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    if a.size < 3 or a.std() == 0 or b.std() == 0:
        return 0.0
    return float(np.corrcoef(a, b)[0, 1])


def _boot_fit(lam: np.ndarray, margin: np.ndarray, which: int, estimate: float) -> dict:
    """Percentile bootstrap CI (95%, 500 replicates, seed 0) of the channel fit's R² or slope."""
    rng = np.random.default_rng(0)
    reps = []
    for _ in range(500):
        i = rng.integers(0, lam.size, lam.size)
        reps.append(channel_fit(lam[i], margin[i])[which])
    lo, hi = np.quantile(reps, [0.025, 0.975])
    return {
        "estimate": estimate,
        "low": float(lo),
        "high": float(hi),
        "level": 0.95,
        "n_boot": 500,
        "n": int(lam.size),
    }


def headline(record: dict) -> list[dict]:
    """One row per method: the geometry statistics with 95% CIs, and test accuracy."""
    rows = []
    for m in record["methods"]:
        s = record["summary"][m]
        row: dict = {"method": m, "test acc": s["test_accuracy"]}
        for k in ("same_alignment", "channel_r2", "channel_slope", "convex_gap"):
            row[k] = f"{s[k]['estimate']:.3f} [{s[k]['low']:.3f}, {s[k]['high']:.3f}]"
        row["same_lam_corr"] = s["same_lam_corr"]
        rows.append(row)
    return rows
