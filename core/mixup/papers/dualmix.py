"""DualMix — Fan, Xu, Wang, Zhu, Wang, Guo, "DualMix: Unleashing the Potential of Data
Augmentation for Online Class-Incremental Learning" (arXiv 2303.07864, 2023), against
experience replay (ER).

Only the paper's abstract is available here (no code was released and the full text is not
stored), so the two mixes follow the abstract's description; the exact formulas are ours:

* **Online class-incremental stream** (:func:`class_incremental_stream`): the classes are split
  into ``n_tasks`` disjoint increments (5 tasks of 2 classes for MNIST); the training examples
  of each task arrive shuffled in mini-batches of ``batch_size`` and every example is seen
  once, one gradient step per incoming batch (the online protocol).
* **ER** (Chaudhry et al. 2019, the baseline): each incoming batch is trained together with a
  replay batch drawn uniformly from a reservoir buffer (:class:`ReservoirBuffer`, Vitter's
  algorithm R: every example seen so far is in the buffer with probability capacity / seen);
  the batch then enters the buffer. Loss: cross-entropy on the stream and replay samples.
* **EnMix** (Enhanced Mixup): the stream and replay samples are augmented (a random shift of up
  to ``shift`` pixels) and the augmented samples are mixed in pairs within the joint batch,
  x̃ = λ a(x_i) + (1 − λ) a(x_j), with soft labels ỹ = λ y_i + (1 − λ) y_j, λ ~ Beta(α, α) per
  pair (:func:`enmix_batch`).
* **AdpMix** (Adaptive Mixup): each stream (new-class) sample is mixed with a replay (old-class)
  sample, x̂ = λ x_new + (1 − λ) x_old, and the label ratio is adjusted for the class
  imbalance between the stream and the buffer: with n_c the number of training samples of
  class c since the current task began (stream and replay), w_c = 1 / n_c and
  λ_y = λ w_new / (λ w_new + (1 − λ) w_old) (:func:`adaptive_label_ratio`), so a mix is
  labelled more towards the rarer (old) class: the decision boundary moves back towards the
  new classes, which dominate the stream.
* **DualMix** = ER loss + EnMix loss + AdpMix loss. The mixes are applied at a step with
  probability ``mix_prob``; all mixing randomness comes from its own generator, so with
  ``mix_prob = 0`` the run is bit-identical to ER with the same seed (the ER baseline is the
  mixing-off identity). ``enmix`` and ``adpmix`` are the two halves alone (ablations).

Measured: accuracy on the classes seen so far over the stream (test examples of seen classes
only), the accuracy on each task after each task, and the final average accuracy on all
classes with pooled bootstrap CIs over seeds and the paired gap to ER.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from ..._checks import check_int, check_range
from ...models import Classifier, create_model
from .._base import sample_beta
from ._common import (
    ProgressFn,
    StopFn,
    accuracy_row,
    check_stop,
    gap_text,
    random_subset,
    report,
)
from ._seeds import SeedRun, run_seeds

METHODS = ("er", "enmix", "adpmix", "dualmix")
_MIX_SEED_OFFSET = 7919  # the mixing generator's seed is seed + this (separate from ER's)


@dataclass(frozen=True)
class DualMixConfig:
    """Stream, buffer, model and mixing (defaults: MNIST's 4,000 digits, 5 tasks of 2 classes,
    a 200-example buffer, a small CNN)."""

    task: str = "mnist"
    n_tasks: int = 5
    n_train: int | None = None  # stream examples (stratified subset); None: the whole split
    buffer_size: int = 200
    batch_size: int = 10  # incoming stream batch
    replay_size: int = 10  # replay batch drawn from the buffer
    arch: str = "cnn"
    width: int = 8
    lr: float = 0.05
    alpha: float = 1.0  # λ ~ Beta(α, α) of both mixes
    shift: int = 2  # EnMix augmentation: random shift of up to this many pixels
    mix_prob: float = 1.0  # probability that a step mixes (0: the ER identity)
    eval_every: int = 20  # stream batches between seen-class evaluations
    n_eval: int | None = 500  # test examples for the curve (stratified); None: all

    def __post_init__(self) -> None:
        check_int("n_tasks", self.n_tasks, 1, 100)
        if self.n_train is not None:
            check_int("n_train", self.n_train, 2)
        check_int("buffer_size", self.buffer_size, 1)
        check_int("batch_size", self.batch_size, 1)
        check_int("replay_size", self.replay_size, 1)
        if self.arch not in ("cnn", "mlp"):
            raise ValueError(f"arch must be 'cnn' or 'mlp', got {self.arch!r}")
        check_int("width", self.width, 4, 1024)
        check_range("lr", self.lr, 0.0, 1.0, low_inclusive=False)
        check_range("alpha", self.alpha, 0.0, None, low_inclusive=False)
        check_int("shift", self.shift, 0, 8)
        check_range("mix_prob", self.mix_prob, 0.0, 1.0)
        check_int("eval_every", self.eval_every, 1)
        if self.n_eval is not None:
            check_int("n_eval", self.n_eval, 2)


# ---------------------------------------------------------------------------- the stream
def task_classes(classes: Sequence[int], n_tasks: int) -> list[list[int]]:
    """Split the sorted ``classes`` into ``n_tasks`` disjoint, contiguous increments of equal
    size (10 classes, 5 tasks -> [[0, 1], [2, 3], ...])."""
    cls = sorted({int(c) for c in classes})
    check_int("n_tasks", n_tasks, 1)
    if not cls or len(cls) % n_tasks:
        raise ValueError(
            f"n_tasks must divide the number of classes, got {n_tasks} tasks for "
            f"{len(cls)} classes {cls}"
        )
    k = len(cls) // n_tasks
    return [cls[i * k : (i + 1) * k] for i in range(n_tasks)]


def class_incremental_stream(
    y: Tensor, n_tasks: int, batch_size: int, generator: torch.Generator
) -> list[list[Tensor]]:
    """The online class-incremental stream over labels ``y``: for each task (a disjoint class
    increment of :func:`task_classes`), its examples' indices shuffled and cut into batches
    of ``batch_size`` (the last may be smaller). Every index appears exactly once.

    Returns:
        tasks -> batches -> (≤ batch_size,) int64 indices into ``y``.
    """
    if not isinstance(y, Tensor) or y.ndim != 1 or y.is_floating_point() or len(y) == 0:
        got = tuple(y.shape) if isinstance(y, Tensor) else type(y).__name__
        raise ValueError(f"y must be a non-empty (N,) integer tensor, got {got}")
    check_int("batch_size", batch_size, 1)
    out = []
    for cls in task_classes(y.unique().tolist(), n_tasks):
        idx = torch.nonzero(torch.isin(y, torch.tensor(cls)))[:, 0]
        idx = idx[torch.randperm(len(idx), generator=generator)]
        out.append(list(idx.split(batch_size)))
    return out


class ReservoirBuffer:
    """A replay buffer of at most ``capacity`` examples filled by reservoir sampling
    (Vitter's algorithm R): after ``seen`` examples, each of them is stored with probability
    ``min(1, capacity / seen)``, whatever its position in the stream."""

    def __init__(self, capacity: int, example_shape: Sequence[int]):
        self.capacity = check_int("capacity", capacity, 1)
        self.x = torch.zeros((self.capacity, *example_shape))
        self.y = torch.zeros(self.capacity, dtype=torch.long)
        self.ids = torch.full((self.capacity,), -1, dtype=torch.long)  # stream position stored
        self.seen = 0

    def __len__(self) -> int:
        return min(self.seen, self.capacity)

    def add(self, x: Tensor, y: Tensor, generator: torch.Generator) -> None:
        """Offer the batch (x, y), in order, to the reservoir."""
        if len(x) != len(y):
            raise ValueError(f"x and y must have the same length, got {len(x)} and {len(y)}")
        for i in range(len(x)):
            if self.seen < self.capacity:
                slot = self.seen
            else:
                slot = int(torch.randint(0, self.seen + 1, (1,), generator=generator))
            if slot < self.capacity:
                self.x[slot] = x[i]
                self.y[slot] = y[i]
                self.ids[slot] = self.seen
            self.seen += 1

    def sample(self, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """``min(n, len(self))`` stored examples drawn uniformly without replacement."""
        check_int("n", n, 0)
        pick = torch.randperm(len(self), generator=generator)[:n]
        return self.x[pick], self.y[pick]


# ---------------------------------------------------------------------------- the two mixes
def random_shift(x: Tensor, max_shift: int, generator: torch.Generator) -> Tensor:
    """Each image shifted by its own random (dy, dx) in [−max_shift, max_shift]², zero-padded."""
    check_int("max_shift", max_shift, 0)
    if x.ndim != 4:
        raise ValueError(f"x must be (B, C, H, W), got {tuple(x.shape)}")
    if max_shift == 0 or len(x) == 0:
        return x
    s = max_shift
    h, w = x.shape[2:]
    padded = F.pad(x, (s, s, s, s))
    off = torch.randint(0, 2 * s + 1, (len(x), 2), generator=generator)
    return torch.stack(
        [padded[i, :, a : a + h, b : b + w] for i, (a, b) in enumerate(off.tolist())]
    )


def enmix_batch(
    x: Tensor,
    y1: Tensor,
    alpha: float,
    max_shift: int,
    generator: torch.Generator,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """EnMix: augment every sample, then mix each with a random partner of the same batch.

    Args:
        x: (B, C, H, W) stream and replay samples; y1: (B, K) their one-hot labels.

    Returns:
        (mixed inputs (B, C, H, W), soft labels (B, K), λ (B,), partner index (B,)).
    """
    if x.ndim != 4 or y1.ndim != 2 or len(x) != len(y1):
        raise ValueError(
            f"x must be (B, C, H, W) and y1 (B, K), got {tuple(x.shape)} and {tuple(y1.shape)}"
        )
    a, b = random_shift(x, max_shift, generator), random_shift(x, max_shift, generator)
    perm = torch.randperm(len(x), generator=generator)
    lam = sample_beta(alpha, len(x), generator)
    xm = lam.view(-1, 1, 1, 1) * a + (1 - lam.view(-1, 1, 1, 1)) * b[perm]
    return xm, lam[:, None] * y1 + (1 - lam[:, None]) * y1[perm], lam, perm


def adaptive_label_ratio(lam: Tensor, n_new: Tensor, n_old: Tensor) -> Tensor:
    """AdpMix's label ratio of the new-class side: λ w_new / (λ w_new + (1 − λ) w_old) with
    w_c = 1 / n_c (class frequencies since the task began). Equal counts give λ back; a
    rarer old class pulls the label towards the old class.

    Args:
        lam: (B,) input ratios in [0, 1] of the new samples; n_new, n_old: (B,) counts >= 1.
    """
    if not (lam.shape == n_new.shape == n_old.shape) or lam.ndim != 1:
        raise ValueError(
            f"lam, n_new and n_old must be (B,) of one shape, got {tuple(lam.shape)}, "
            f"{tuple(n_new.shape)}, {tuple(n_old.shape)}"
        )
    if bool((n_new < 1).any()) or bool((n_old < 1).any()):
        raise ValueError("n_new and n_old must be counts >= 1")
    w_new, w_old = 1.0 / n_new.double(), 1.0 / n_old.double()
    lam_d = lam.double()
    return (lam_d * w_new / (lam_d * w_new + (1 - lam_d) * w_old)).to(lam.dtype)


def adpmix_batch(
    x_new: Tensor,
    y_new: Tensor,
    x_old: Tensor,
    y_old: Tensor,
    counts: Tensor,
    n_classes: int,
    alpha: float,
    generator: torch.Generator,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """AdpMix: pair the first m = min(len(new), len(old)) stream samples with replay samples.

    Args:
        x_new, y_new: stream samples and labels; x_old, y_old: replay samples and labels.
        counts: (n_classes,) training samples per class since the current task began.

    Returns:
        (mixed inputs (m, ...), soft labels (m, n_classes), input λ (m,), label λ_y (m,)).
    """
    if counts.shape != (n_classes,):
        raise ValueError(f"counts must be ({n_classes},), got {tuple(counts.shape)}")
    m = min(len(x_new), len(x_old))
    lam = sample_beta(alpha, m, generator)
    xa, xb, ya, yb = x_new[:m], x_old[:m], y_new[:m], y_old[:m]
    lam_y = adaptive_label_ratio(lam, counts[ya].clamp(min=1), counts[yb].clamp(min=1))
    xm = lam.view(-1, *([1] * (xa.ndim - 1))) * xa + (1 - lam.view(-1, *([1] * (xa.ndim - 1)))) * xb
    t = lam_y[:, None] * F.one_hot(ya, n_classes) + (1 - lam_y[:, None]) * F.one_hot(yb, n_classes)
    return xm, t.float(), lam, lam_y


def soft_cross_entropy(logits: Tensor, target: Tensor) -> Tensor:
    """−Σ_k t_k log softmax(z)_k, averaged over the batch."""
    return -(target * F.log_softmax(logits, 1)).sum(1).mean()


# ---------------------------------------------------------------------------- measuring
def seen_class_accuracy(pred: Tensor, y: Tensor, seen: Sequence[int]) -> float:
    """Accuracy over the test examples whose label is one of the ``seen`` classes only
    (predictions range over all outputs, as in single-head class-incremental learning)."""
    if pred.shape != y.shape or y.ndim != 1:
        raise ValueError(
            f"pred and y must be (N,) of one shape, got {tuple(pred.shape)}, {tuple(y.shape)}"
        )
    keep = torch.isin(y, torch.tensor(list(seen), dtype=y.dtype))
    if not bool(keep.any()):
        raise ValueError(f"seen must name classes present in y, got {list(seen)}")
    return float((pred[keep] == y[keep]).float().mean())


@torch.no_grad()
def _predict(model: Classifier, x: Tensor, chunk: int = 1000) -> Tensor:
    model.eval()
    out = torch.cat([model(x[i : i + chunk]).argmax(1) for i in range(0, len(x), chunk)])
    model.train()
    return out


# ---------------------------------------------------------------------------- training
def train_stream(
    config: DualMixConfig,
    method: str,
    x: Tensor,
    y: Tensor,
    x_eval: Tensor,
    y_eval: Tensor,
    n_classes: int,
    *,
    seed: int,
    mix_prob: float | None = None,
    progress: ProgressFn | None = None,
    should_stop: StopFn | None = None,
) -> tuple[Classifier, dict]:
    """One pass over the class-incremental stream of (x, y) by ``method``.

    ``mix_prob`` overrides ``config.mix_prob`` (None keeps it; ``er`` never mixes).

    Returns:
        the model and a log: ``seen`` (stream examples seen), ``acc_seen`` (accuracy on the
        seen classes of (x_eval, y_eval) at each evaluation), ``task_end`` (the ``seen``
        counts at task boundaries), ``acc_matrix`` (after task i, accuracy on task j ≤ i)
        and ``mixed_steps``.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    p = config.mix_prob if mix_prob is None else check_range("mix_prob", mix_prob, 0.0, 1.0)
    if method == "er":
        p = 0.0
    use_en = method in ("enmix", "dualmix")
    use_adp = method in ("adpmix", "dualmix")
    c, h, _ = x.shape[1:]
    model = create_model(
        config.arch, width=config.width, n_classes=n_classes, in_channels=c, image_size=h, seed=seed
    )
    g = torch.Generator().manual_seed(seed)  # stream order, buffer and replay: ER's randomness
    g_mix = torch.Generator().manual_seed(seed + _MIX_SEED_OFFSET)  # the mixes' own randomness
    opt = torch.optim.SGD(model.parameters(), lr=config.lr)
    stream = class_incremental_stream(y, config.n_tasks, config.batch_size, g)
    tasks = task_classes(y.unique().tolist(), config.n_tasks)
    buffer = ReservoirBuffer(config.buffer_size, x.shape[1:])
    steps = sum(len(t) for t in stream)
    log: dict[str, list] = {"seen": [], "acc_seen": [], "task_end": [], "acc_matrix": []}
    mixed_steps, step, n_seen = 0, 0, 0
    seen_classes: list[int] = []
    model.train()
    for ti, batches in enumerate(stream):
        seen_classes += tasks[ti]
        counts = torch.zeros(n_classes, dtype=torch.long)  # training samples since task began
        for idx in batches:
            check_stop(should_stop, f"{method} task {ti + 1}")
            xs, ys = x[idx], y[idx]
            xr, yr = buffer.sample(config.replay_size, g)
            xb, yb = torch.cat([xs, xr]), torch.cat([ys, yr])
            counts += torch.bincount(yb, minlength=n_classes)
            loss = F.cross_entropy(model(xb), yb)
            mix_now = p > 0 and float(torch.rand((), generator=g_mix)) < p
            if mix_now:
                mixed_steps += 1
                if use_en:
                    xm, tm, _, _ = enmix_batch(
                        xb, F.one_hot(yb, n_classes).float(), config.alpha, config.shift, g_mix
                    )
                    loss = loss + soft_cross_entropy(model(xm), tm)
                if use_adp and len(xr) > 0:
                    old = ~torch.isin(yr, torch.tensor(tasks[ti]))
                    if bool(old.any()):
                        xa, ta, _, _ = adpmix_batch(
                            xs, ys, xr[old], yr[old], counts, n_classes, config.alpha, g_mix
                        )
                        loss = loss + soft_cross_entropy(model(xa), ta)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            buffer.add(xs, ys, g)
            step += 1
            n_seen += len(idx)
            if step % config.eval_every == 0 or idx is batches[-1]:
                pred = _predict(model, x_eval)
                log["seen"].append(n_seen)
                log["acc_seen"].append(seen_class_accuracy(pred, y_eval, seen_classes))
                report(
                    progress, method=method, step=step, steps=steps, acc_seen=log["acc_seen"][-1]
                )
        pred = _predict(model, x_eval)
        log["task_end"].append(n_seen)
        log["acc_matrix"].append(
            [seen_class_accuracy(pred, y_eval, tasks[j]) for j in range(ti + 1)]
        )
    log["mixed_steps"] = [mixed_steps]
    log["steps"] = [steps]
    return model.eval(), log


def forgetting(acc_matrix: Sequence[Sequence[float]]) -> float:
    """Average forgetting: over the tasks before the last, the best accuracy a task had after
    any earlier task minus its final accuracy (0 for one task)."""
    if not acc_matrix or any(len(r) != i + 1 for i, r in enumerate(acc_matrix)):
        raise ValueError("acc_matrix must be lower-triangular: row i holds tasks 0..i")
    t = len(acc_matrix)
    if t == 1:
        return 0.0
    drops = [
        max(acc_matrix[i][j] for i in range(j, t - 1)) - acc_matrix[t - 1][j] for j in range(t - 1)
    ]
    return float(sum(drops) / len(drops))


def run_dualmix(
    config: DualMixConfig = DualMixConfig(),
    *,
    methods: Sequence[str] = ("er", "dualmix"),
    seeds: Sequence[int] = (0, 1, 2),
    progress: ProgressFn | None = None,
    should_stop: StopFn | None = None,
) -> dict:
    """Stream each method per seed; final accuracy on all classes (pooled bootstrap CIs,
    paired gaps to ER), per-seed final average accuracy and forgetting, and the curves."""
    from ...data import get_task

    if not isinstance(config, DualMixConfig):
        raise TypeError(f"config must be a DualMixConfig, got {type(config).__name__}")
    ds = get_task(config.task)
    x, y = random_subset(ds.x_train, ds.y_train, config.n_train, 0)
    x_eval, y_eval = random_subset(ds.x_test, ds.y_test, config.n_eval, 0)
    task_classes(y.unique().tolist(), config.n_tasks)  # fail early on an uneven split

    def run_one(run: SeedRun) -> dict:
        model, log = train_stream(
            config, run.method, x, y, x_eval, y_eval, ds.n_classes, **run.trainer_kwargs
        )
        pred = _predict(model, ds.x_test)
        final = log["acc_matrix"][-1]
        return {
            "correct": (pred == ds.y_test).int().tolist(),
            "avg_acc": float(sum(final) / len(final)),
            "forgetting": forgetting(log["acc_matrix"]),
            "log": log,
        }

    runs = run_seeds(run_one, methods, seeds, METHODS, progress=progress, should_stop=should_stop)
    summary = runs.accuracy_summary()
    for m in runs.methods:
        summary[m]["avg_acc"] = runs.mean_sd(m, "avg_acc")
        summary[m]["forgetting"] = runs.mean_sd(m, "forgetting")
        if m != "er" and "er" in runs.methods:
            summary[m]["minus_er"] = runs.paired_gap(m, "er")
    return runs.record(
        "dualmix",
        config,
        summary=summary,
        correct=runs.by_method("correct"),
        logs=runs.by_method("log"),
        tasks=task_classes(y.unique().tolist(), config.n_tasks),
    )


def headline(record: dict) -> list[dict]:
    """One row per method: final accuracy on all classes with 95% CI, the paired gap to ER,
    the per-seed final average accuracy and forgetting."""
    rows = []
    for m in record["methods"]:
        s = record["summary"][m]
        row = accuracy_row(m, s, "final acc")
        row["avg acc per seed"] = ", ".join(f"{v:.3f}" for v in s["avg_acc"]["per_seed"])
        row["forgetting"] = s["forgetting"]["mean"]
        if "minus_er" in s:
            row["− er"] = gap_text(s["minus_er"])
        rows.append(row)
    return rows


__all__ = [
    "METHODS",
    "DualMixConfig",
    "ReservoirBuffer",
    "adaptive_label_ratio",
    "adpmix_batch",
    "class_incremental_stream",
    "enmix_batch",
    "forgetting",
    "headline",
    "random_shift",
    "run_dualmix",
    "seen_class_accuracy",
    "soft_cross_entropy",
    "task_classes",
    "train_stream",
]
