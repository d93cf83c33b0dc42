"""AdAutoMix — Qin et al., "Adversarial AutoMixup" (ICLR 2024, arXiv 2312.11954), a small
version against fixed mixers (mixup, CutMix) and ERM.

Variant implemented (reduced from the official JinXins/Adversarial-AutoMixup ``AdAutoMix.py``):

* **Generator** G: a 3-layer conv net on the pair [x_a, x_b, λ-plane] (2C + 1 channels)
  predicting a per-pixel mask m = sigmoid(G(·)) ∈ (0, 1)^{H×W}; mixed x̃ = m x_a + (1 − m) x_b,
  soft label λ y_a + (1 − λ) y_b with λ ~ Beta(α, α). Two images per mix (the official code
  mixes 2 to N).
* **Adversarial training**: the classifier minimises CE_soft(x̃) + CE(x); the generator, updated
  every second step, minimises −β · CE_soft(x̃) + (1 − β) · R with β = 0.3 (``beta_radio``),
  i.e. it searches for mixes the classifier finds hard, while R keeps them meaningful:
  R = (1 − cos(f(x̃), λ f(x_a) + (1 − λ) f(x_b))) + |mean(m) − λ| (feature-consistency of the
  mix with its label, the official cosine term, plus the AutoMix λ-consistency L1).
* Omitted from the official recipe (documented, for CPU scale): the EMA teacher (m = 0.999)
  that produces the generator's features, and N > 2 mixing.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..._checks import check_int, check_range
from ...models import create_model
from .. import mix
from .._base import sample_beta
from ._common import ProgressFn, StopFn, check_stop, random_subset, report
from ._seeds import SeedRun, run_seeds

METHODS = ("erm", "mixup", "cutmix", "adautomix")


@dataclass(frozen=True)
class AdAutoMixConfig:
    """Data, model and training (defaults: 1,000 MNIST digits, a small CNN)."""

    task: str = "mnist"
    n_train: int = 1000
    width: int = 8
    epochs: int = 10
    batch_size: int = 64
    lr: float = 3e-3
    alpha: float = 1.0
    beta: float = 0.3  # weight of −CE in the generator loss
    gen_width: int = 16
    gen_every: int = 2  # generator step every this many classifier steps

    def __post_init__(self) -> None:
        check_int("n_train", self.n_train, 8)
        check_int("width", self.width, 4, 1024)
        check_int("epochs", self.epochs, 1, 1000)
        check_int("batch_size", self.batch_size, 2)
        check_range("lr", self.lr, 0.0, 1.0, low_inclusive=False)
        check_range("alpha", self.alpha, 0.0, None, low_inclusive=False)
        check_range("beta", self.beta, 0.0, 1.0)
        check_int("gen_width", self.gen_width, 2, 512)
        check_int("gen_every", self.gen_every, 1, 100)


class MaskGenerator(nn.Module):
    """Pair + λ-plane → per-pixel mask logits (N, 1, H, W)."""

    def __init__(self, in_channels: int, width: int, seed: int):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(2 * in_channels + 1, width, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(width, 1, 3, padding=1),
        )
        g = torch.Generator().manual_seed(seed + 2)
        with torch.no_grad():
            for layer in self.net:
                if isinstance(layer, nn.Conv2d):
                    bound = 1 / math.sqrt(layer.weight[0].numel())
                    layer.weight.copy_(
                        (torch.rand(layer.weight.shape, generator=g) * 2 - 1) * bound
                    )
                    assert layer.bias is not None
                    layer.bias.zero_()

    def forward(self, xa: Tensor, xb: Tensor, lam: Tensor) -> Tensor:
        plane = lam.view(-1, 1, 1, 1).expand(-1, 1, *xa.shape[2:])
        # logit(λ) offset: an untrained generator starts at mean(m) ≈ λ
        lc = lam.clamp(1e-3, 1 - 1e-3)
        offset = torch.log(lc / (1 - lc)).view(-1, 1, 1, 1)
        return self.net(torch.cat([xa, xb, plane], 1)) + offset


def adversarial_losses(
    logits_mix: Tensor,
    target: Tensor,
    feat_mix: Tensor,
    feat_a: Tensor,
    feat_b: Tensor,
    mask: Tensor,
    lam: Tensor,
    beta: float,
) -> tuple[Tensor, Tensor]:
    """(classifier's mixed CE, generator loss −β·CE + (1 − β)·R) as in the module docstring."""
    ce = -(target * F.log_softmax(logits_mix, 1)).sum(1).mean()
    ref = lam[:, None] * feat_a + (1 - lam[:, None]) * feat_b
    cos = F.cosine_similarity(feat_mix, ref, dim=1).mean()
    lam_l1 = (mask.flatten(1).mean(1) - lam).abs().mean()
    return ce, -beta * ce + (1 - beta) * ((1 - cos) + lam_l1)


def train_adautomix(
    config: AdAutoMixConfig,
    method: str,
    x: Tensor,
    y: Tensor,
    n_classes: int,
    *,
    seed: int,
    progress: ProgressFn | None = None,
    should_stop: StopFn | None = None,
) -> tuple[nn.Module, dict]:
    """Train the classifier by ``method``; return it and a log (mask λ gap, CE per epoch)."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    c, h, _ = x.shape[1:]
    clf = create_model(
        "cnn", width=config.width, n_classes=n_classes, in_channels=c, image_size=h, seed=seed
    )
    gen = MaskGenerator(c, config.gen_width, seed)
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(clf.parameters(), lr=config.lr)
    opt_g = torch.optim.AdamW(gen.parameters(), lr=config.lr)
    n = len(x)
    steps = math.ceil(n / config.batch_size)
    log: dict[str, list] = {"epoch": [], "mix_ce": [], "lam_gap": [], "masks": []}
    step = 0
    for epoch in range(config.epochs):
        perm_all = torch.randperm(n, generator=g)
        ce_sum, gap_sum, cnt = 0.0, 0.0, 0
        clf.train()
        for b in range(steps):
            check_stop(should_stop, f"{method} epoch {epoch + 1}")
            idx = perm_all[b * config.batch_size : (b + 1) * config.batch_size]
            if len(idx) < 2:
                continue
            xb, yb = x[idx], y[idx]
            if method == "erm":
                loss = F.cross_entropy(clf(xb), yb)
            elif method in ("mixup", "cutmix"):
                res = mix(method, xb, yb, alpha=config.alpha, generator=g, n_classes=n_classes)
                loss = -(res.y * F.log_softmax(clf(res.x), 1)).sum(1).mean()
            else:
                perm = torch.randperm(len(idx), generator=g)
                lam = sample_beta(config.alpha, len(idx), g)
                y1 = F.one_hot(yb, n_classes).float()
                target = lam[:, None] * y1 + (1 - lam[:, None]) * y1[perm]
                if step % config.gen_every == 0:  # generator step (classifier fixed)
                    m = torch.sigmoid(gen(xb, xb[perm], lam))
                    xm = m * xb + (1 - m) * xb[perm]
                    fm = clf.features(xm)
                    with torch.no_grad():
                        fa, fb = clf.features(xb), clf.features(xb[perm])
                    _, g_loss = adversarial_losses(
                        clf.classify(fm), target, fm, fa, fb, m, lam, config.beta
                    )
                    opt_g.zero_grad(set_to_none=True)
                    g_loss.backward()
                    opt_g.step()
                with torch.no_grad():
                    m = torch.sigmoid(gen(xb, xb[perm], lam))
                xm = m * xb + (1 - m) * xb[perm]
                ce = -(target * F.log_softmax(clf(xm), 1)).sum(1).mean()
                loss = ce + F.cross_entropy(clf(xb), yb)
                ce_sum += float(ce.detach()) * len(idx)
                gap_sum += float((m.flatten(1).mean(1) - lam).abs().sum())
                cnt += len(idx)
                if epoch == config.epochs - 1 and b == 0:
                    log["masks"] = m[:6, 0].tolist()
                    log["mask_lam"] = lam[:6].tolist()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
        log["epoch"].append(epoch + 1)
        log["mix_ce"].append(ce_sum / cnt if cnt else float("nan"))
        log["lam_gap"].append(gap_sum / cnt if cnt else float("nan"))
        report(progress, method=method, epoch=epoch + 1, epochs=config.epochs)
    return clf.eval(), log


def run_adautomix(
    config: AdAutoMixConfig = AdAutoMixConfig(),
    *,
    methods: Sequence[str] = METHODS,
    seeds: Sequence[int] = (0, 1, 2),
    progress: ProgressFn | None = None,
    should_stop: StopFn | None = None,
) -> dict:
    """Train each method per seed; test accuracy with pooled CIs and paired gaps."""
    from ...data import get_task

    if not isinstance(config, AdAutoMixConfig):
        raise TypeError(f"config must be an AdAutoMixConfig, got {type(config).__name__}")
    ds = get_task(config.task)
    x, y = random_subset(ds.x_train, ds.y_train, config.n_train, 0)

    def run_one(run: SeedRun) -> dict:
        clf, log = train_adautomix(config, run.method, x, y, ds.n_classes, **run.trainer_kwargs)
        with torch.no_grad():
            return {"correct": (clf(ds.x_test).argmax(1) == ds.y_test).int().tolist(), "log": log}

    runs = run_seeds(run_one, methods, seeds, METHODS, progress=progress, should_stop=should_stop)
    summary = runs.accuracy_summary()
    if "adautomix" in runs.methods:
        for ref in runs.methods:
            if ref != "adautomix":
                summary["adautomix"][f"minus_{ref}"] = runs.paired_gap("adautomix", ref)
    return runs.record(
        "adautomix",
        config,
        summary=summary,
        correct=runs.by_method("correct"),
        logs=runs.by_method("log"),
    )


def headline(record: dict) -> list[dict]:
    """One row per method: test accuracy with 95% CI; AdAutoMix's paired gaps."""
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
        for k, d in s.items():
            if k.startswith("minus_"):
                row[f"− {k[6:]}"] = f"{d['estimate']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}]"
        rows.append(row)
    return rows
