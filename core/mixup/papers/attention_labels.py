"""Attention labels for mixed samples on a small ViT: TransMix (Chen et al., CVPR 2022,
arXiv 2111.09833) and MixPro's progressive attention labelling (Zhao et al., ICLR 2023,
arXiv 2304.12043), against the area labels of CutMix and MaskMix.

Variants implemented (from the official ``transmix.py`` and fistyee/MixPro ``utils.py`` /
``main.py``; the input mixing is the workbench's CutMix and MaskMix):

* A mixed input x̃ has a pixel mask m (1 = the row's own image) and the area label
  λ_area = mean(m). The model's CLS→patch attention a (last block, mean over heads; from the
  same forward pass, detached) gives λ_attn = Σ_p a_p m̄_p / Σ_p a_p, with m̄ the mask averaged
  over each patch.
* **TransMix**: λ = (λ_area + λ_attn) / 2 (``ratio`` 0.5 of the official code), CutMix inputs.
* **MixPro PAL**: λ = s λ_attn + (1 − s) λ_area, with s = cos(ỹ_area, softmax(z)) the cosine
  between the area-mixed target and the prediction, per sample (detached): attention is
  trusted more as the model fits the mixes. MaskMix inputs (grid = image side / patch).
* Soft target λ y_a + (1 − λ) y_b, soft-target CE.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ..._checks import check_int, check_range
from ...models import Classifier, create_model
from ...models.vit import ViTTrunk
from .. import mix
from ._common import ProgressFn, StopFn, check_stop, random_subset, report
from ._seeds import SeedRun, run_seeds

METHODS = ("cutmix", "transmix", "maskmix", "mixpro")


@dataclass(frozen=True)
class AttentionLabelConfig:
    """Data, ViT and training (defaults: 1,000 MNIST digits, a 2-block ViT, patch 4)."""

    task: str = "mnist"
    n_train: int = 1000
    width: int = 32
    depth: int = 2
    heads: int = 4
    patch_size: int = 4
    epochs: int = 8
    batch_size: int = 64
    lr: float = 2e-3
    alpha: float = 1.0

    def __post_init__(self) -> None:
        check_int("n_train", self.n_train, 8)
        check_int("width", self.width, 16, 512)
        check_int("depth", self.depth, 1, 12)
        check_int("heads", self.heads, 1, 16)
        check_int("patch_size", self.patch_size, 1, 16)
        check_int("epochs", self.epochs, 1, 1000)
        check_int("batch_size", self.batch_size, 2)
        check_range("lr", self.lr, 0.0, 1.0, low_inclusive=False)
        check_range("alpha", self.alpha, 0.0, None, low_inclusive=False)


def attention_lam(mask: Tensor, attention: Tensor) -> Tensor:
    """λ_attn = Σ_p a_p m̄_p / Σ_p a_p per row.

    Args:
        mask: (N, 1, H, W) own-pixel share; attention: (N, g, g) CLS→patch attention with
            H = W divisible by g.
    """
    if mask.ndim != 4 or attention.ndim != 3 or mask.shape[-1] % attention.shape[-1]:
        raise ValueError(
            f"mask must be (N, 1, H, W) and attention (N, g, g) with g dividing H, got "
            f"{tuple(mask.shape)}, {tuple(attention.shape)}"
        )
    p = mask.shape[-1] // attention.shape[-1]
    tok = F.avg_pool2d(mask.float(), p)[:, 0]  # (N, g, g) own share per patch
    return (attention * tok).flatten(1).sum(1) / attention.flatten(1).sum(1).clamp_min(1e-12)


def transmix_lam(lam_area: Tensor, lam_attn: Tensor, ratio: float = 0.5) -> Tensor:
    """TransMix: (1 − ratio) λ_area + ratio λ_attn (ratio 0.5 = the average)."""
    return (1 - ratio) * lam_area + ratio * lam_attn


def mixpro_lam(lam_area: Tensor, lam_attn: Tensor, target_area: Tensor, logits: Tensor) -> Tensor:
    """MixPro PAL: s λ_attn + (1 − s) λ_area with s = cos(area target, softmax(logits))."""
    s = F.cosine_similarity(target_area, torch.softmax(logits.detach(), 1), dim=1)
    return s * lam_attn + (1 - s) * lam_area


def train_vit(
    config: AttentionLabelConfig,
    method: str,
    x: Tensor,
    y: Tensor,
    n_classes: int,
    *,
    seed: int,
    progress: ProgressFn | None = None,
    should_stop: StopFn | None = None,
) -> tuple[Classifier, dict]:
    """Train a ViT by ``method``; return it and a log of |λ − λ_area| per epoch."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    c, h, _ = x.shape[1:]
    model = create_model(
        "vit",
        width=config.width,
        depth=config.depth,
        heads=config.heads,
        patch_size=config.patch_size,
        n_classes=n_classes,
        in_channels=c,
        image_size=h,
        seed=seed,
    )
    trunk = model.trunk
    assert isinstance(trunk, ViTTrunk)
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=0.05)
    n = len(x)
    steps = math.ceil(n / config.batch_size)
    total = steps * config.epochs
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total) / total))
    )
    mixer = "cutmix" if method in ("cutmix", "transmix") else "maskmix"
    extra: dict[str, Any] = {"grid": trunk.grid} if mixer == "maskmix" else {}
    log: dict[str, list[float]] = {"epoch": [], "label_shift": [], "train_loss": []}
    for epoch in range(config.epochs):
        model.train()
        perm = torch.randperm(n, generator=g)
        shift_sum, loss_sum, cnt = 0.0, 0.0, 0
        for b in range(steps):
            check_stop(should_stop, f"{method} epoch {epoch + 1}")
            idx = perm[b * config.batch_size : (b + 1) * config.batch_size]
            if len(idx) < 2:
                continue
            xb, yb = x[idx], y[idx]
            res = mix(mixer, xb, yb, alpha=config.alpha, generator=g, n_classes=n_classes, **extra)
            logits = model(res.x)
            lam = res.lam
            if method in ("transmix", "mixpro"):
                mask = res.mask
                assert mask is not None
                lam_attn = attention_lam(mask, trunk.cls_attention())
                if method == "transmix":
                    lam = transmix_lam(res.lam, lam_attn)
                else:
                    lam = mixpro_lam(res.lam, lam_attn, res.y, logits)
            y1 = F.one_hot(yb, n_classes).float()
            target = lam[:, None] * y1 + (1 - lam[:, None]) * y1[res.partner]
            loss = -(target * F.log_softmax(logits, 1)).sum(1).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            shift_sum += float((lam - res.lam).abs().sum())
            loss_sum += float(loss.detach()) * len(idx)
            cnt += len(idx)
        log["epoch"].append(epoch + 1)
        log["label_shift"].append(shift_sum / cnt)
        log["train_loss"].append(loss_sum / cnt)
        report(progress, method=method, epoch=epoch + 1, epochs=config.epochs)
    return model.eval(), log


def run_attention_labels(
    config: AttentionLabelConfig = AttentionLabelConfig(),
    *,
    methods: Sequence[str] = METHODS,
    seeds: Sequence[int] = (0, 1, 2),
    progress: ProgressFn | None = None,
    should_stop: StopFn | None = None,
) -> dict:
    """Train each method per seed; test accuracy, with TransMix − CutMix and MixPro − MaskMix."""
    from ...data import get_task

    if not isinstance(config, AttentionLabelConfig):
        raise TypeError(f"config must be an AttentionLabelConfig, got {type(config).__name__}")
    ds = get_task(config.task)
    x, y = random_subset(ds.x_train, ds.y_train, config.n_train, 0)

    def run_one(run: SeedRun) -> dict:
        model, log = train_vit(config, run.method, x, y, ds.n_classes, **run.trainer_kwargs)
        out: dict[str, Any] = {"log": log}
        with torch.no_grad():
            out["correct"] = (model(ds.x_test).argmax(1) == ds.y_test).int().tolist()
            if run.index == 0:  # the first seed's CLS attention map, for the figure
                model(ds.x_test[:4])
                trunk = model.trunk
                if not isinstance(trunk, ViTTrunk):
                    raise TypeError(f"the ViT's trunk must be a ViTTrunk, got {type(trunk)}")
                out["attention"] = trunk.cls_attention().tolist()
        return out

    runs = run_seeds(run_one, methods, seeds, METHODS, progress=progress, should_stop=should_stop)
    summary = runs.accuracy_summary()
    for new, ref in (("transmix", "cutmix"), ("mixpro", "maskmix")):
        if new in runs.methods and ref in runs.methods:
            summary[new][f"minus_{ref}"] = runs.paired_gap(new, ref)
    return runs.record(
        "attention_labels",
        config,
        summary=summary,
        correct=runs.by_method("correct"),
        logs=runs.by_method("log"),
        attention={m: runs.outputs[m][0]["attention"] for m in runs.methods},
    )


def headline(record: dict) -> list[dict]:
    """One row per method: test accuracy with 95% CI and the paired gap to its area label."""
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
                row["− area label"] = f"{d['estimate']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}]"
        rows.append(row)
    return rows
