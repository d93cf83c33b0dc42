"""Zou, Cao, Li, Gu, "The Benefits of Mixup for Feature Learning" (ICML 2023, arXiv 2303.08433).

The paper's feature-noise data model and two-layer CNN, trained with gradient descent by ERM,
by mixup and by early-stopped mixup, tracking how strongly each class's filters align with its
**common** feature (in a fraction 1 - ρ of the data) and its **rare** feature (fraction ρ).
Claim: ERM learns the common features and fits the few rare-feature training points by
memorising their noise, so it fails on rare-feature test points; mixup mixes rare points with
common ones, keeps a gradient on the rare feature, learns it, and classifies rare test points.

Variant implemented (the data model of the paper's Sec. 3, reconstructed from the text, with a
K-class softmax generalising the binary case):

* x = [x^(1), ..., x^(P)] ∈ R^{P×d}; y uniform in {0..K-1}.
* One patch holds the label's feature: v_{y,common} with probability 1 - ρ, else v_{y,rare}.
* One patch holds **feature noise**: α · v_{y',j} of a uniformly drawn other class y' ≠ y
  (j common or rare with the same 1 - ρ / ρ odds).
* The other P - 2 patches are Gaussian noise ξ ~ N(0, σ_p² (I - V Vᵀ)), orthogonal to all
  2K features (orthonormal columns of V, scaled by ``feature_norm``).
* Patch order is random per sample.
* Network: F_k(W, x) = (1/m) Σ_{r≤m} Σ_p σ(<w_{k,r}, x^(p)>) with σ(z) = max(z, 0)^q
  (the polynomial ReLU of the theory; q = 2 by default), w ~ N(0, σ_0² I).
* Training: full-batch gradient descent on cross-entropy; mixup forms
  λ x_i + (1 - λ) x_{π(i)} with soft labels, λ ~ Beta(α_mix, α_mix) per pair and π a fresh
  permutation each step; "early-stopped mixup" switches to ERM after ``mix_until`` steps (the
  paper's proposal, Sec. 5).

Learning curves are the paper's quantities: feature learning max_r <w_{k,r}, v_{k,j}> averaged
over classes k for j common / rare, and noise memorisation max_r <w_{y_i,r}, ξ_i> averaged over
the training points.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from ..._checks import check_int, check_range
from ...stats import bootstrap_ci, paired_bootstrap_ci
from .._base import sample_beta
from ._common import ProgressFn, StopFn, check_stop, report
from ._seeds import SeedRun, run_seeds

METHODS = ("erm", "mixup", "mixup_early")


@dataclass(frozen=True)
class FeatureNoiseConfig:
    """The data model, the network and the training run (defaults: a quick CPU setting)."""

    n_classes: int = 2  # K
    n_patches: int = 3  # P (one feature, one feature-noise, P - 2 Gaussian)
    dim: int = 400  # d, patch dimension
    rho: float = 0.1  # share of rare-feature points
    feature_noise: float = 0.2  # α, strength of the other class's feature in the noise patch
    feature_norm: float = 1.0  # ‖v‖
    sigma_p: float = 0.25  # Gaussian noise std per coordinate (noise norm ≈ σ_p √d)
    n_train: int = 100
    n_test: int = 1000
    width: int = 10  # m filters per class
    power: int = 2  # q in σ(z) = ReLU(z)^q
    sigma_0: float = 0.05  # initial weight std
    lr: float = 4.0
    steps: int = 1000
    mix_alpha: float = 1.0  # λ ~ Beta(α, α)
    mix_until: int = 500  # early-stopped mixup: ERM from this step on
    log_every: int = 50

    def __post_init__(self) -> None:
        check_int("n_classes", self.n_classes, 2, 50)
        check_int("n_patches", self.n_patches, 2, 64)
        check_int("dim", self.dim, 2 * self.n_classes + 1, 1 << 16)
        check_range("rho", self.rho, 0.0, 0.5, low_inclusive=False)
        check_range("feature_noise", self.feature_noise, 0.0, 1.0)
        check_range("feature_norm", self.feature_norm, 0.0, None, low_inclusive=False)
        check_range("sigma_p", self.sigma_p, 0.0, None)
        check_int("n_train", self.n_train, 2)
        check_int("n_test", self.n_test, 2)
        check_int("width", self.width, 1, 4096)
        check_int("power", self.power, 1, 8)
        check_range("sigma_0", self.sigma_0, 0.0, None)
        check_range("lr", self.lr, 0.0, 100.0, low_inclusive=False)
        check_int("steps", self.steps, 1, 1_000_000)
        check_range("mix_alpha", self.mix_alpha, 0.0, None, low_inclusive=False)
        check_int("mix_until", self.mix_until, 0, self.steps)
        check_int("log_every", self.log_every, 1, self.steps)


@dataclass(frozen=True)
class FeatureNoiseData:
    """Samples of the data model.

    Attributes:
        x: (N, P, d) patches; y: (N,) labels; rare: (N,) bool, the label patch is rare;
        noise: (N, P, d) the Gaussian part of each patch (zero on the feature patches).
    """

    x: Tensor
    y: Tensor
    rare: Tensor
    noise: Tensor


def make_features(config: FeatureNoiseConfig, generator: torch.Generator) -> Tensor:
    """(K, 2, d) orthogonal features of norm ``feature_norm``: [:, 0] common, [:, 1] rare."""
    k, d = config.n_classes, config.dim
    g = torch.randn(d, 2 * k, generator=generator, dtype=torch.float64)
    q, _ = torch.linalg.qr(g)  # (d, 2K) orthonormal columns
    return (q.T.reshape(k, 2, d) * config.feature_norm).float()


def sample_data(
    config: FeatureNoiseConfig, features: Tensor, n: int, generator: torch.Generator
) -> FeatureNoiseData:
    """Draw ``n`` points of the feature-noise model (see the module docstring)."""
    k, p, d = config.n_classes, config.n_patches, config.dim
    if features.shape != (k, 2, d):
        raise ValueError(f"features must have shape {(k, 2, d)}, got {tuple(features.shape)}")
    check_int("n", n, 1)
    y = torch.randint(0, k, (n,), generator=generator)
    rare = torch.rand(n, generator=generator) < config.rho
    other = (y + torch.randint(1, k, (n,), generator=generator)) % k  # uniform y' != y
    other_rare = torch.rand(n, generator=generator) < config.rho
    basis = features.reshape(2 * k, d) / config.feature_norm  # (2K, d) orthonormal rows
    noise = torch.randn(n, p, d, generator=generator) * config.sigma_p
    noise = noise - (noise @ basis.T) @ basis  # orthogonal to every feature
    noise[:, :2] = 0.0
    x = noise.clone()
    x[:, 0] = features[y, rare.long()]  # (n, d) the label's feature
    x[:, 1] = config.feature_noise * features[other, other_rare.long()]  # feature noise
    order = torch.argsort(torch.rand(n, p, generator=generator), dim=1)  # random patch order
    x = torch.gather(x, 1, order[..., None].expand(n, p, d))
    noise = torch.gather(noise, 1, order[..., None].expand(n, p, d))
    return FeatureNoiseData(x=x, y=y, rare=rare, noise=noise)


def init_weights(config: FeatureNoiseConfig, generator: torch.Generator) -> Tensor:
    """(K, m, d) filters w_{k,r} ~ N(0, σ_0²)."""
    return torch.randn(config.n_classes, config.width, config.dim, generator=generator) * (
        config.sigma_0
    )


def cnn_logits(weights: Tensor, x: Tensor, power: int) -> Tensor:
    """F_k(W, x) = (1/m) Σ_r Σ_p ReLU(<w_{k,r}, x^(p)>)^q, as (N, K) logits."""
    if weights.ndim != 3 or x.ndim != 3 or weights.shape[2] != x.shape[2]:
        raise ValueError(
            f"weights must be (K, m, d) and x (N, P, d) with the same d, got "
            f"{tuple(weights.shape)} and {tuple(x.shape)}"
        )
    k, m, d = weights.shape
    n, p, _ = x.shape
    pre = x.reshape(n * p, d) @ weights.reshape(k * m, d).T  # (N·P, K·m) <w_{k,r}, x^(p)>
    act = pre.clamp_min(0.0) ** power
    return act.reshape(n, p, k, m).sum(dim=1).mean(dim=2)  # (N, K)


def feature_learning(weights: Tensor, features: Tensor) -> tuple[float, float]:
    """(common, rare): max_r <w_{k,r}, v_{k,j}> averaged over classes k."""
    inner = torch.einsum("kmd,kjd->kjm", weights, features)  # (K, 2, m)
    best = inner.max(dim=2).values.mean(dim=0)  # (2,)
    return float(best[0]), float(best[1])


def noise_memorisation(weights: Tensor, data: FeatureNoiseData) -> float:
    """max_r Σ_p <w_{y_i,r}, ξ_i^(p)> averaged over points i (how much noise W has fitted)."""
    w = weights[data.y]  # (N, m, d)
    return float(torch.einsum("nmd,npd->nm", w, data.noise).max(dim=1).values.mean())


def train_cnn(
    config: FeatureNoiseConfig,
    method: str,
    train: FeatureNoiseData,
    test: FeatureNoiseData,
    features: Tensor,
    *,
    generator: torch.Generator,
    progress: ProgressFn | None = None,
    should_stop: StopFn | None = None,
) -> dict:
    """Gradient descent on the two-layer CNN by ``method`` ("erm", "mixup", "mixup_early").

    Returns:
        ``history`` (step, common, rare, noise, train_loss, test accuracy on common / rare
        points), ``correct`` (per test point), final accuracies.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    k = config.n_classes
    w = init_weights(config, generator).requires_grad_(True)
    y1 = F.one_hot(train.y, k).float()
    hist: dict[str, list[float]] = {
        key: []
        for key in ("step", "common", "rare", "noise", "train_loss", "acc_common", "acc_rare")
    }
    n = len(train.y)
    for step in range(config.steps + 1):
        check_stop(should_stop, f"{method} step {step}")
        mixing = method == "mixup" or (method == "mixup_early" and step < config.mix_until)
        if step % config.log_every == 0 or step == config.steps:
            with torch.no_grad():
                pred = cnn_logits(w, test.x, config.power).argmax(1)
                ok = pred == test.y
                c, r = feature_learning(w, features)
                hist["step"].append(step)
                hist["common"].append(c)
                hist["rare"].append(r)
                hist["noise"].append(noise_memorisation(w, train))
                hist["acc_common"].append(float(ok[~test.rare].float().mean()))
                hist["acc_rare"].append(float(ok[test.rare].float().mean()))
                loss_now = F.cross_entropy(cnn_logits(w, train.x, config.power), train.y)
                hist["train_loss"].append(float(loss_now))
            report(progress, method=method, step=step, steps=config.steps, rare=r, common=c)
        if step == config.steps:
            break
        if mixing:
            perm = torch.randperm(n, generator=generator)
            lam = sample_beta(config.mix_alpha, n, generator)  # (n,)
            xb = lam[:, None, None] * train.x + (1 - lam[:, None, None]) * train.x[perm]
            tb = lam[:, None] * y1 + (1 - lam[:, None]) * y1[perm]
        else:
            xb, tb = train.x, y1
        loss = -(tb * F.log_softmax(cnn_logits(w, xb, config.power), dim=1)).sum(1).mean()
        (grad,) = torch.autograd.grad(loss, w)
        with torch.no_grad():
            w -= config.lr * grad
    with torch.no_grad():
        correct = cnn_logits(w, test.x, config.power).argmax(1) == test.y
    return {
        "history": hist,
        "correct": correct.int().tolist(),
        "acc_common": float(correct[~test.rare].float().mean()),
        "acc_rare": float(correct[test.rare].float().mean()),
        "accuracy": float(correct.float().mean()),
    }


def run_feature_learning(
    config: FeatureNoiseConfig = FeatureNoiseConfig(),
    *,
    methods: Sequence[str] = METHODS,
    seeds: Sequence[int] = (0, 1, 2),
    progress: ProgressFn | None = None,
    should_stop: StopFn | None = None,
) -> dict:
    """Train every method on the same data and initialisation for each seed.

    The headline numbers pool the rare-feature test points of all seeds: accuracy with a
    percentile bootstrap CI (:func:`core.stats.bootstrap_ci`), and the paired difference
    mixup − ERM (:func:`core.stats.paired_bootstrap_ci`).
    """
    if not isinstance(config, FeatureNoiseConfig):
        raise TypeError(f"config must be a FeatureNoiseConfig, got {type(config).__name__}")

    def setup(seed: int) -> dict:
        g = torch.Generator().manual_seed(seed)
        features = make_features(config, g)
        train = sample_data(config, features, config.n_train, g)
        test = sample_data(config, features, config.n_test, g)
        return {"g": g, "features": features, "train": train, "test": test, "init": g.get_state()}

    def run_one(run: SeedRun) -> dict:
        d = run.data
        d["g"].set_state(d["init"])  # same initialisation and mixing stream for every method
        out = train_cnn(
            config,
            run.method,
            d["train"],
            d["test"],
            d["features"],
            generator=d["g"],
            progress=run.progress,
            should_stop=run.should_stop,
        )
        out["n_rare_train"] = int(d["train"].rare.sum())
        return out

    runs = run_seeds(
        run_one, methods, seeds, METHODS, setup=setup, progress=progress, should_stop=should_stop
    )
    rare = torch.cat([d["test"].rare for d in runs.data]).bool().numpy()
    summary: dict[str, dict] = {}
    for m in runs.methods:
        correct = runs.pooled(m, "correct").astype(bool)
        summary[m] = {
            "rare": bootstrap_ci(correct[rare]).to_dict(),
            "common": bootstrap_ci(correct[~rare]).to_dict(),
            "per_seed_rare": runs.values(m, "acc_rare"),
        }
    if "erm" in runs.methods:
        erm = runs.pooled("erm", "correct").astype(bool)
        for m in runs.methods:
            if m != "erm":
                mc = runs.pooled(m, "correct").astype(bool)
                summary[m]["rare_minus_erm"] = paired_bootstrap_ci(mc[rare], erm[rare]).to_dict()
    return runs.record(
        "feature_learning",
        config,
        runs=runs.outputs,
        summary=summary,
        n_rare_test=int(rare.sum()),
        chance=1.0 / config.n_classes,
    )


def headline(record: dict) -> list[dict]:
    """One row per method: rare / common test accuracy (pooled over seeds) with 95% CIs."""
    rows = []
    for m in record["methods"]:
        s = record["summary"][m]
        row = {
            "method": m,
            "rare acc": s["rare"]["estimate"],
            "rare CI": f"[{s['rare']['low']:.3f}, {s['rare']['high']:.3f}]",
            "common acc": s["common"]["estimate"],
        }
        if "rare_minus_erm" in s:
            d = s["rare_minus_erm"]
            row["rare − ERM"] = f"{d['estimate']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}]"
        rows.append(row)
    return rows
