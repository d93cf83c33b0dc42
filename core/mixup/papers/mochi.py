"""MoCHi — Kalantidis et al., "Hard Negative Mixing for Contrastive Learning" (NeurIPS 2020,
arXiv 2010.01028), on a small MoCo (He et al. 2020, v2-style: MLP projection, τ = 0.2).

Variant implemented (MoCHi(N, s, s') as in the paper; mixing details follow the unofficial
davidsvy/hard-negative-mixing ``src/moco.py``):

* MoCo: query encoder f_q, momentum key encoder f_k (θ_k ← m θ_k + (1 − m) θ_q), a FIFO queue
  of K normalised keys; InfoNCE over [q·k⁺, q·n_1..n_K] / τ.
* For each query, the queue is sorted by similarity and the N hardest negatives kept.
  - s **type-1** synthetic negatives: h = α n_i + (1 − α) n_j with α ~ U(0, 1), n_i, n_j drawn
    from the N hardest, L2-normalised;
  - s' **type-2** ("harder") negatives: h' = β q + (1 − β) n_j with β ~ U(0, 0.5), the query
    term detached, L2-normalised.
  They are appended to that query's logits (never enqueued); from step ``mix_start`` on.

Data: real MNIST digits (no labels used in training); two views by random translation (±3 px),
rotation (±15°) and Gaussian pixel noise. Reported: linear-probe test accuracy on the frozen
encoder (softmax regression, 5-fold bootstrap CI via :func:`core.stats.bootstrap_ci`), and the
hardness statistics the paper plots (its Fig. 2–3): proxy-task accuracy (positive ranked
first), mean similarity of the N hardest queue negatives, the share of false negatives
(same class as the query) among them, and alignment / uniformity (Wang & Isola 2020).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..._checks import check_int, check_range
from ...models import Classifier, create_model
from ._common import ProgressFn, StopFn, check_stop, random_subset, report
from ._seeds import SeedRun, run_seeds
from .supremix import rotate

METHODS = ("moco", "mochi")


@dataclass(frozen=True)
class MoChiConfig:
    """MoCo and MoCHi settings (defaults: 4,000 MNIST digits, an MLP encoder, ~1 min CPU)."""

    task: str = "mnist"
    n_train: int = 4000
    width: int = 256
    embed_dim: int = 64
    epochs: int = 8
    batch_size: int = 128
    lr: float = 1e-3
    temperature: float = 0.2
    momentum: float = 0.99
    queue: int = 1024  # K
    n_hard: int = 64  # N
    s1: int = 32  # type-1 synthetic negatives per query
    s2: int = 16  # type-2 (query-mixed) negatives per query
    mix_start: int = 0  # step from which MoCHi mixes
    probe_epochs: int = 100

    def __post_init__(self) -> None:
        check_int("n_train", self.n_train, 16)
        check_int("width", self.width, 8, 4096)
        check_int("embed_dim", self.embed_dim, 2, 1024)
        check_int("epochs", self.epochs, 1, 1000)
        check_int("batch_size", self.batch_size, 4)
        check_range("lr", self.lr, 0.0, 1.0, low_inclusive=False)
        check_range("temperature", self.temperature, 0.0, 10.0, low_inclusive=False)
        check_range("momentum", self.momentum, 0.0, 1.0)
        check_int("queue", self.queue, self.batch_size)
        check_int("n_hard", self.n_hard, 2, self.queue)
        check_int("s1", self.s1, 0)
        check_int("s2", self.s2, 0)
        check_int("mix_start", self.mix_start, 0)
        check_int("probe_epochs", self.probe_epochs, 1)


def augment(x: Tensor, generator: torch.Generator) -> Tensor:
    """A random view: translation ±3 px, rotation ±15°, Gaussian noise σ = 0.2."""
    n = len(x)
    shift = torch.randint(-3, 4, (n, 2), generator=generator)
    out = torch.stack([torch.roll(x[i], tuple(shift[i].tolist()), dims=(1, 2)) for i in range(n)])
    out = rotate(out, (torch.rand(n, generator=generator) * 2 - 1) * 15)
    return out + 0.2 * torch.randn(out.shape, generator=generator)


def hard_negatives(
    q: Tensor, queue: Tensor, n_hard: int, s1: int, s2: int, generator: torch.Generator
) -> Tensor:
    """MoCHi's synthetic negatives per query: (B, s1 + s2, D), L2-normalised, no gradient.

    Args:
        q: (B, D) normalised queries; queue: (K, D) normalised negatives.
        n_hard: N, the hardest negatives mixed; s1, s2: type-1 and type-2 counts.
    """
    if q.ndim != 2 or queue.ndim != 2 or q.shape[1] != queue.shape[1]:
        raise ValueError(f"q (B, D) and queue (K, D) must share D, got {q.shape}, {queue.shape}")
    qd = q.detach()
    b = len(qd)
    hard_idx = (qd @ queue.T).topk(n_hard, dim=1).indices  # (B, N)
    hard = queue[hard_idx]  # (B, N, D)
    parts = []
    if s1:
        i = torch.randint(0, n_hard, (b, s1), generator=generator)
        j = torch.randint(0, n_hard, (b, s1), generator=generator)
        a = torch.rand(b, s1, 1, generator=generator)
        rows = torch.arange(b)[:, None]
        parts.append(F.normalize(a * hard[rows, i] + (1 - a) * hard[rows, j], dim=2))
    if s2:
        j = torch.randint(0, n_hard, (b, s2), generator=generator)
        beta = 0.5 * torch.rand(b, s2, 1, generator=generator)
        rows = torch.arange(b)[:, None]
        parts.append(F.normalize(beta * qd[:, None] + (1 - beta) * hard[rows, j], dim=2))
    if not parts:
        return qd.new_zeros(b, 0, qd.shape[1])
    return torch.cat(parts, 1).detach()


def _encoder(config: MoChiConfig, seed: int, shape: tuple[int, ...]) -> Classifier:
    c, h, _ = shape
    model = create_model(
        "mlp",
        width=config.width,
        depth=2,
        n_classes=config.embed_dim,
        in_channels=c,
        image_size=h,
        seed=seed,
    )  # the "head" is the projection to the embedding
    return model


def train_moco(
    config: MoChiConfig,
    method: str,
    x: Tensor,
    *,
    seed: int,
    progress: ProgressFn | None = None,
    should_stop: StopFn | None = None,
) -> tuple[Classifier, list[dict]]:
    """Train MoCo or MoCHi on unlabeled ``x``; return the query encoder and per-epoch logs."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    g = torch.Generator().manual_seed(seed)
    fq = _encoder(config, seed, tuple(x.shape[1:]))
    fk = copy.deepcopy(fq).requires_grad_(False)
    queue = F.normalize(torch.randn(config.queue, config.embed_dim, generator=g), dim=1)
    ptr = 0
    opt = torch.optim.AdamW(fq.parameters(), lr=config.lr)
    n = len(x)
    steps = math.ceil(n / config.batch_size)
    step, logs = 0, []
    for epoch in range(config.epochs):
        perm = torch.randperm(n, generator=g)
        hits = seen = 0
        for b in range(steps):
            check_stop(should_stop, f"{method} epoch {epoch + 1}")
            idx = perm[b * config.batch_size : (b + 1) * config.batch_size]
            xq, xk = augment(x[idx], g), augment(x[idx], g)
            q = F.normalize(fq(xq), dim=1)
            with torch.no_grad():
                k = F.normalize(fk(xk), dim=1)
            pos = (q * k).sum(1, keepdim=True)  # (B, 1)
            neg = q @ queue.T  # (B, K)
            logits = [pos, neg]
            if method == "mochi" and step >= config.mix_start:
                syn = hard_negatives(q, queue, config.n_hard, config.s1, config.s2, g)
                logits.append(torch.einsum("bd,bsd->bs", q, syn))
            z = torch.cat(logits, 1) / config.temperature
            loss = F.cross_entropy(z, torch.zeros(len(idx), dtype=torch.long))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            with torch.no_grad():
                for pk, pq in zip(fk.parameters(), fq.parameters(), strict=True):
                    pk.mul_(config.momentum).add_(pq.detach(), alpha=1 - config.momentum)
                for bk, bq in zip(fk.buffers(), fq.buffers(), strict=True):
                    bk.copy_(bq)
                end = ptr + len(k)
                if end <= config.queue:
                    queue[ptr:end] = k
                else:
                    queue[ptr:] = k[: config.queue - ptr]
                    queue[: end - config.queue] = k[config.queue - ptr :]
                ptr = end % config.queue
                hits += int((z.argmax(1) == 0).sum())
                seen += len(idx)
            step += 1
        logs.append({"epoch": epoch + 1, "loss": float(loss.detach()), "proxy_acc": hits / seen})
        report(
            progress, method=method, epoch=epoch + 1, epochs=config.epochs, loss=logs[-1]["loss"]
        )
    return fq.eval(), logs


@torch.no_grad()
def hardness_stats(
    encoder: nn.Module, x: Tensor, y: Tensor, n_hard: int, generator: torch.Generator
) -> dict:
    """The paper's hardness statistics on held-out data, with a queue made of other images.

    Returns:
        ``proxy_acc`` (positive view ranked above all queue negatives), ``hard_sim`` (mean
        similarity of the N hardest negatives), ``false_neg`` (share of them with the query's
        class), ``alignment`` E‖z − z⁺‖², ``uniformity`` log E exp(−2‖z − z'‖²), and the
        per-query max negative similarity (``max_neg``) for the histogram.
    """
    order = torch.randperm(len(x), generator=generator)  # splits may be sorted by class
    x, y = x[order], y[order]
    n = len(x) // 2
    q = F.normalize(encoder(augment(x[:n], generator)), dim=1)
    k = F.normalize(encoder(augment(x[:n], generator)), dim=1)
    bank = F.normalize(encoder(x[n : 2 * n]), dim=1)  # (n, D) negatives from other images
    sims = q @ bank.T
    top = sims.topk(min(n_hard, n), dim=1)
    pos = (q * k).sum(1)
    d2 = torch.cdist(q, q).pow(2)
    off = ~torch.eye(n, dtype=torch.bool)
    return {
        "proxy_acc": float((pos > sims.max(1).values).float().mean()),
        "hard_sim": float(top.values.mean()),
        "false_neg": float((y[n : 2 * n][top.indices] == y[:n, None]).float().mean()),
        "alignment": float((q - k).pow(2).sum(1).mean()),
        "uniformity": float(torch.log(torch.exp(-2 * d2[off]).mean())),
        "max_neg": sims.max(1).values.tolist(),
    }


def linear_probe(
    train_z: Tensor, train_y: Tensor, test_z: Tensor, n_classes: int, epochs: int, seed: int
) -> Tensor:
    """Softmax regression on frozen features (full batch, Adam lr 0.05); test predictions."""
    g = torch.Generator().manual_seed(seed)
    mu, sd = train_z.mean(0), train_z.std(0).clamp_min(1e-6)
    a, b = (train_z - mu) / sd, (test_z - mu) / sd
    w = (torch.randn(a.shape[1], n_classes, generator=g) * 0.01).requires_grad_(True)
    bias = torch.zeros(n_classes, requires_grad=True)
    opt = torch.optim.Adam([w, bias], lr=0.05)
    for _ in range(epochs):
        loss = F.cross_entropy(a @ w + bias, train_y) + 1e-4 * w.pow(2).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        return (b @ w + bias).argmax(1)


def run_mochi(
    config: MoChiConfig = MoChiConfig(),
    *,
    methods: Sequence[str] = METHODS,
    seeds: Sequence[int] = (0, 1, 2),
    progress: ProgressFn | None = None,
    should_stop: StopFn | None = None,
) -> dict:
    """Train MoCo and MoCHi per seed; linear-probe accuracy and hardness statistics."""
    from ...data import get_task

    if not isinstance(config, MoChiConfig):
        raise TypeError(f"config must be a MoChiConfig, got {type(config).__name__}")
    ds = get_task(config.task)
    xtr, ytr = random_subset(ds.x_train, ds.y_train, config.n_train, 0)

    def run_one(run: SeedRun) -> dict:
        enc, log = train_moco(config, run.method, xtr, **run.trainer_kwargs)
        with torch.no_grad():
            ftr, fte = enc.features(xtr), enc.features(ds.x_test)
        pred = linear_probe(ftr, ytr, fte, ds.n_classes, config.probe_epochs, run.seed)
        correct = (pred == ds.y_test).int().tolist()
        g = torch.Generator().manual_seed(99 + run.seed)
        stats = hardness_stats(enc, ds.x_test, ds.y_test, config.n_hard, g)
        return {"correct": correct, "stats": stats, "log": log}

    runs = run_seeds(run_one, methods, seeds, METHODS, progress=progress, should_stop=should_stop)
    stats = runs.by_method("stats")
    summary = runs.accuracy_summary("probe", "per_seed_probe")
    for m in runs.methods:
        for k in ("proxy_acc", "hard_sim", "false_neg", "alignment", "uniformity"):
            summary[m][k] = float(np.mean([s[k] for s in stats[m]]))
    if set(runs.methods) == set(METHODS):
        summary["mochi"]["minus_moco"] = runs.paired_gap("mochi", "moco")
    return runs.record(
        "mochi",
        config,
        summary=summary,
        stats=stats,
        logs=runs.by_method("log"),
        correct=runs.by_method("correct"),
    )


def headline(record: dict) -> list[dict]:
    """One row per method: probe accuracy with 95% CI, and the hardness statistics."""
    rows = []
    for m in record["methods"]:
        s = record["summary"][m]
        p = s["probe"]
        row = {
            "method": m,
            "probe acc": p["estimate"],
            "probe CI": f"[{p['low']:.3f}, {p['high']:.3f}]",
            "proxy acc": s["proxy_acc"],
            "hardest-N sim": s["hard_sim"],
            "false negatives": s["false_neg"],
            "alignment": s["alignment"],
            "uniformity": s["uniformity"],
        }
        if "minus_moco" in s:
            d = s["minus_moco"]
            row["− MoCo"] = f"{d['estimate']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}]"
        rows.append(row)
    return rows
