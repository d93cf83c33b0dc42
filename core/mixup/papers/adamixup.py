"""AdaMixUp — Guo, Mao, Zhang, "MixUp as Locally Linear Out-Of-Manifold Regularization"
(AAAI 2019, arXiv 1809.02499), against ERM and fixed mixup.

Variant implemented (pairs, the paper's k = 2 case; TF1 reference SITE5039/AdaMixUp):

* One shared trunk with three heads: the classifier, a **policy-region generator** and an
  **intrusion discriminator** φ.
* Policy region: from the trunk features of the pair (x_a, x_b), a linear layer gives three
  logits → softmax (α₁, α₂, α₃); the mixing ratio is λ = α₁ + α₂ ε with ε ~ U(0, 1), i.e.
  λ uniform in the learned interval [α₁, α₁ + α₂] (reparameterised, so λ gets gradients).
* Mixed input x̃ = λ x_a + (1 − λ) x_b with soft label λ y_a + (1 − λ) y_b.
* Intrusion discriminator φ(x) = sigmoid(linear(trunk(x))) is trained to call original
  samples "real" and mixes "mixed": L_intr = −log φ(x) − log(1 − φ(x̃)). A mix that collides
  with the data manifold (looks real) is costly, which keeps λ away from 0 and 1.
* Trunk and heads minimise L = CE_soft(x̃) + CE(x) + L_intr jointly (the classifier also sees
  the originals). The policy receives gradients only from L_intr (λ enters the classification
  term as a constant): with the classification gradient as well, the policy collapsed λ to 0
  here within four epochs (mixes = real samples), which the intrusion term could not stop.

ERM and mixup (λ ~ Beta(1, 1)) train the same trunk and classifier with the same loop, seed
and data order, for a matched comparison.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..._checks import check_int, check_range
from ...models import Classifier, create_model
from .._base import sample_beta
from ._common import ProgressFn, StopFn, check_stop, random_subset, report
from ._seeds import SeedRun, run_seeds

METHODS = ("erm", "mixup", "adamixup")


@dataclass(frozen=True)
class AdaMixUpConfig:
    """Data, model and training (defaults: 1,000 MNIST digits, a small CNN)."""

    task: str = "mnist"
    n_train: int = 1000
    arch: str = "cnn"
    width: int = 8
    epochs: int = 10
    batch_size: int = 64
    lr: float = 3e-3
    alpha: float = 1.0  # fixed mixup λ ~ Beta(α, α)

    def __post_init__(self) -> None:
        check_int("n_train", self.n_train, 8)
        if self.arch not in ("cnn", "mlp"):
            raise ValueError(f"arch must be 'cnn' or 'mlp', got {self.arch!r}")
        check_int("width", self.width, 4, 1024)
        check_int("epochs", self.epochs, 1, 1000)
        check_int("batch_size", self.batch_size, 2)
        check_range("lr", self.lr, 0.0, 1.0, low_inclusive=False)
        check_range("alpha", self.alpha, 0.0, None, low_inclusive=False)


class AdaMixUpNet(nn.Module):
    """A zoo classifier plus the policy-region generator and the intrusion discriminator."""

    def __init__(self, classifier: Classifier, seed: int = 0):
        super().__init__()
        self.classifier = classifier
        d = classifier.feature_dim
        self.policy = nn.Linear(2 * d, 3)
        self.intrusion = nn.Linear(d, 1)
        g = torch.Generator().manual_seed(seed + 1)  # seeded heads (no global RNG)
        with torch.no_grad():
            for layer in (self.policy, self.intrusion):
                bound = 1 / math.sqrt(layer.in_features)
                layer.weight.copy_((torch.rand(layer.weight.shape, generator=g) * 2 - 1) * bound)
                layer.bias.zero_()

    def policy_region(self, fa: Tensor, fb: Tensor) -> Tensor:
        """(B, 3) softmax (α₁, α₂, α₃): λ lies in [α₁, α₁ + α₂]."""
        return torch.softmax(self.policy(torch.cat([fa, fb], 1)), dim=1)


def sample_policy_lam(region: Tensor, generator: torch.Generator) -> Tensor:
    """λ = α₁ + α₂ ε, ε ~ U(0, 1): (B,) reparameterised draws from the policy regions."""
    if region.ndim != 2 or region.shape[1] != 3:
        raise ValueError(f"region must be (B, 3), got {tuple(region.shape)}")
    eps = torch.rand(len(region), generator=generator)
    return region[:, 0] + region[:, 1] * eps


def intrusion_loss(real_logit: Tensor, mixed_logit: Tensor) -> Tensor:
    """−log φ(x) − log(1 − φ(x̃)), averaged (φ = sigmoid of the logits)."""
    return F.binary_cross_entropy_with_logits(
        real_logit, torch.ones_like(real_logit)
    ) + F.binary_cross_entropy_with_logits(mixed_logit, torch.zeros_like(mixed_logit))


def _mix(x: Tensor, lam: Tensor, perm: Tensor) -> Tensor:
    shape = (-1,) + (1,) * (x.ndim - 1)
    return lam.view(shape) * x + (1 - lam.view(shape)) * x[perm]


def train_adamixup(
    config: AdaMixUpConfig,
    method: str,
    x: Tensor,
    y: Tensor,
    n_classes: int,
    *,
    seed: int,
    progress: ProgressFn | None = None,
    should_stop: StopFn | None = None,
) -> tuple[AdaMixUpNet, dict]:
    """Train by ``method``; return the net and a log of the policy's λ and intrusion scores."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    c, h, _ = x.shape[1:]
    net = AdaMixUpNet(
        create_model(
            config.arch,
            width=config.width,
            n_classes=n_classes,
            in_channels=c,
            image_size=h,
            seed=seed,
        ),
        seed=seed,
    )
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(net.parameters(), lr=config.lr)
    n = len(x)
    steps = math.ceil(n / config.batch_size)
    log: dict[str, list[float]] = {"epoch": [], "lam_mean": [], "lam_low": [], "lam_high": []}
    log["intrusion_mixed"] = []
    lams: list[float] = []
    net.train()
    for epoch in range(config.epochs):
        perm_all = torch.randperm(n, generator=g)
        lam_sum, low_sum, high_sum, intr_sum, cnt = 0.0, 0.0, 0.0, 0.0, 0
        for b in range(steps):
            check_stop(should_stop, f"{method} epoch {epoch + 1}")
            idx = perm_all[b * config.batch_size : (b + 1) * config.batch_size]
            if len(idx) < 2:
                continue
            xb, yb = x[idx], y[idx]
            y1 = F.one_hot(yb, n_classes).float()
            clf = net.classifier
            if method == "erm":
                loss = F.cross_entropy(clf(xb), yb)
            else:
                perm = torch.randperm(len(idx), generator=g)
                if method == "mixup":
                    lam = sample_beta(config.alpha, len(idx), g)
                    region = None
                else:
                    f = clf.features(xb)
                    region = net.policy_region(f, f[perm])
                    lam = sample_policy_lam(region, g)
                # the classification loss sees λ as a constant: only the intrusion loss
                # shapes the policy (otherwise it collapses λ to the trivial 0 / 1)
                lam_c = lam.detach()
                xm = _mix(xb, lam_c, perm)
                tm = lam_c[:, None] * y1 + (1 - lam_c[:, None]) * y1[perm]
                fm = clf.features(xm)
                loss = -(tm * F.log_softmax(clf.classify(fm), 1)).sum(1).mean()
                if method == "adamixup":
                    fx = clf.features(xb)
                    loss = loss + F.cross_entropy(clf.classify(fx), yb)
                    mixed_logit = net.intrusion(clf.features(_mix(xb, lam, perm)))[:, 0]
                    loss = loss + intrusion_loss(net.intrusion(fx)[:, 0], mixed_logit)
                    assert region is not None
                    with torch.no_grad():
                        low_sum += float(region[:, 0].sum())
                        high_sum += float((region[:, 0] + region[:, 1]).sum())
                        intr_sum += float(torch.sigmoid(mixed_logit).sum())
                lam_sum += float(lam.detach().sum())
                cnt += len(idx)
                if epoch == config.epochs - 1:
                    lams.extend(lam.detach().tolist())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        log["epoch"].append(epoch + 1)
        for key, v in (
            ("lam_mean", lam_sum),
            ("lam_low", low_sum),
            ("lam_high", high_sum),
            ("intrusion_mixed", intr_sum),
        ):
            log[key].append(v / cnt if cnt else float("nan"))
        report(progress, method=method, epoch=epoch + 1, epochs=config.epochs)
    log["lams_last_epoch"] = lams
    return net.eval(), log


def run_adamixup(
    config: AdaMixUpConfig = AdaMixUpConfig(),
    *,
    methods: Sequence[str] = METHODS,
    seeds: Sequence[int] = (0, 1, 2),
    progress: ProgressFn | None = None,
    should_stop: StopFn | None = None,
) -> dict:
    """Train each method per seed; test accuracy (pooled bootstrap CIs, paired gaps)."""
    from ...data import get_task

    if not isinstance(config, AdaMixUpConfig):
        raise TypeError(f"config must be an AdaMixUpConfig, got {type(config).__name__}")
    ds = get_task(config.task)
    x, y = random_subset(ds.x_train, ds.y_train, config.n_train, 0)

    def run_one(run: SeedRun) -> dict:
        net, log = train_adamixup(config, run.method, x, y, ds.n_classes, **run.trainer_kwargs)
        with torch.no_grad():
            return {
                "correct": (net.classifier(ds.x_test).argmax(1) == ds.y_test).int().tolist(),
                "log": log,
            }

    runs = run_seeds(run_one, methods, seeds, METHODS, progress=progress, should_stop=should_stop)
    summary = runs.accuracy_summary()
    for ref in ("erm", "mixup"):
        if "adamixup" in runs.methods and ref in runs.methods:
            summary["adamixup"][f"minus_{ref}"] = runs.paired_gap("adamixup", ref)
    return runs.record(
        "adamixup",
        config,
        summary=summary,
        correct=runs.by_method("correct"),
        logs=runs.by_method("log"),
    )


def headline(record: dict) -> list[dict]:
    """One row per method: test accuracy with 95% CI and AdaMixUp's paired gaps."""
    rows = []
    for m in record["methods"]:
        s = record["summary"][m]
        a = s["accuracy"]
        row = {
            "method": m,
            "test acc": a["estimate"],
            "CI": f"[{a['low']:.3f}, {a['high']:.3f}]",
            "per seed": ", ".join(f"{v:.3f}" for v in s["per_seed"]),
        }
        for ref in ("erm", "mixup"):
            if f"minus_{ref}" in s:
                d = s[f"minus_{ref}"]
                row[f"− {ref}"] = f"{d['estimate']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}]"
        rows.append(row)
    return rows
