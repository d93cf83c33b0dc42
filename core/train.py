"""Seeded, deterministic training and evaluation.

Randomness enters only through the ``seed`` in :class:`TrainConfig` (an explicit
``torch.Generator`` for shuffling and for mixers); torch threads are set deliberately by
:func:`core.device.configure_threads`. The same seed on the same device gives the same weights.

A mixer plugs in as ``mix_fn(x, y, generator) -> (x_mixed, y_soft)`` where ``y_soft`` is
(N, n_classes) soft targets; training then minimises soft-target cross-entropy.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._checks import check_choice, check_int, check_range, check_tensor
from .device import configure_threads, resolve_device

MixFn = Callable[[Tensor, Tensor, torch.Generator], tuple[Tensor, Tensor]]
ProgressFn = Callable[[dict[str, Any]], None]


class TrainingCancelled(RuntimeError):
    """Raised when the ``should_stop`` callback asks training to stop."""


@dataclass(frozen=True)
class TrainConfig:
    """Training hyperparameters (all serialisable, stored with every zoo model)."""

    epochs: int = 5  # passes over the training set
    batch_size: int = 128
    lr: float = 1e-3  # peak learning rate
    optimizer: str = "adam"  # "adam" or "sgd" (momentum 0.9)
    weight_decay: float = 0.0
    schedule: str = "cosine"  # "cosine" (to 0, per step) or "constant"
    label_smoothing: float = 0.0
    seed: int = 0  # shuffling and mixing generator
    mix_until_epoch: int | None = None  # early-stopped mixup: mixing off from this epoch on
    head: int = 0  # which head to train on a multi-head model
    max_steps: int | None = None  # stop after this many steps (quick runs)

    def __post_init__(self) -> None:
        check_int("epochs", self.epochs, 1, 10_000)
        check_int("batch_size", self.batch_size, 1, 1 << 20)
        check_range("lr", self.lr, 0.0, 10.0, low_inclusive=False)
        check_choice("optimizer", self.optimizer, ("adam", "sgd"))
        check_range("weight_decay", self.weight_decay, 0.0, 1.0)
        check_choice("schedule", self.schedule, ("cosine", "constant"))
        check_range("label_smoothing", self.label_smoothing, 0.0, 1.0, high_inclusive=False)
        check_int("seed", self.seed, 0, 2**63 - 1)
        if self.mix_until_epoch is not None:
            check_int("mix_until_epoch", self.mix_until_epoch, 0, 10_000)
        if self.max_steps is not None:
            check_int("max_steps", self.max_steps, 1, 1 << 40)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class EvalResult:
    """Evaluation of a model on one split.

    Attributes:
        loss: mean cross-entropy.
        accuracy: fraction correct.
        correct: (N,) bool, per-sample correctness (for bootstrap CIs and McNemar tests).
        predictions: (N,) int64 predicted classes.
    """

    loss: float
    accuracy: float
    correct: Tensor
    predictions: Tensor

    @property
    def n(self) -> int:
        return int(self.correct.numel())


@dataclass
class History:
    """Per-epoch training record."""

    epoch: list[int] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    train_accuracy: list[float] = field(default_factory=list)
    test_loss: list[float] = field(default_factory=list)
    test_accuracy: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    extra: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def soft_cross_entropy(logits: Tensor, target: Tensor) -> Tensor:
    """Mean cross-entropy against soft targets (N, C) that sum to 1 per row."""
    return -(target * F.log_softmax(logits, dim=1)).sum(dim=1).mean()


def _check_xy(x: Tensor, y: Tensor, name: str = "x") -> None:
    check_tensor(name, x, ndim=(2, 3, 4), floating=True, min_len=1)
    check_tensor("y", y, ndim=1)
    if y.dtype not in (torch.int64, torch.int32):
        raise TypeError(f"y must hold integer class indices, got dtype {y.dtype}")
    if len(x) != len(y):
        raise ValueError(f"{name} and y must have the same length, got {len(x)} and {len(y)}")


@torch.no_grad()
def evaluate(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    batch_size: int = 1024,
    device: str | torch.device = "auto",
    head: int = 0,
) -> EvalResult:
    """Loss, accuracy and per-sample correctness of ``model`` on (x, y), in eval mode.

    The model's train/eval mode is restored afterwards.
    """
    _check_xy(x, y)
    dev = resolve_device(device)
    was_training = model.training
    model.eval()
    losses, preds = [], []
    try:
        for i in range(0, len(x), batch_size):
            xb = x[i : i + batch_size].to(dev, non_blocking=True)
            yb = y[i : i + batch_size].to(dev, non_blocking=True)
            logits = model(xb, head=head) if head else model(xb)
            losses.append(F.cross_entropy(logits, yb, reduction="sum").cpu())
            preds.append(logits.argmax(1).cpu())
    finally:
        model.train(was_training)
    pred = torch.cat(preds)
    correct = pred == y.cpu()
    return EvalResult(
        loss=float(torch.stack(losses).sum()) / len(y),
        accuracy=float(correct.float().mean()),
        correct=correct,
        predictions=pred,
    )


def train(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    config: TrainConfig = TrainConfig(),
    *,
    n_classes: int | None = None,
    eval_data: tuple[Tensor, Tensor] | None = None,
    mix_fn: MixFn | None = None,
    loss_fn: Callable[[Tensor, Tensor], Tensor] | None = None,
    device: str | torch.device = "auto",
    progress: ProgressFn | None = None,
    epoch_callback: Callable[[nn.Module, int], dict[str, Any] | None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> History:
    """Train ``model`` in place on (x, y).

    Args:
        model: a classifier; moved to ``device``. A model with ``auxiliary_loss()`` (the MoE's
            load balancing) has that term added to each step's loss (not to ``train_loss``).
        x: (N, ...) inputs; y: (N,) class indices.
        config: hyperparameters and seed.
        n_classes: size of the label space (default: the model's ``n_classes``).
        eval_data: optional (x_test, y_test) evaluated after each epoch.
        mix_fn: optional mixer returning mixed inputs and soft targets.
        loss_fn: ``fn(logits, soft_targets) -> scalar`` (default :func:`soft_cross_entropy`),
            e.g. the decoupled mixup loss.
        device: "auto", "cpu" or "cuda".
        progress: called after every epoch (and every ~20 steps) with a dict of
            ``epoch``, ``epochs``, ``step``, ``steps``, ``train_loss``, ``test_accuracy``...
        epoch_callback: called as ``fn(model, epoch)`` after each epoch; a returned dict is
            stored in ``History.extra`` (used for neural-collapse tracking).
        should_stop: polled every step; returning True raises :class:`TrainingCancelled`.

    Returns:
        The per-epoch :class:`History`.
    """
    _check_xy(x, y)
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
    configure_threads()
    dev = resolve_device(device)
    n_classes = n_classes or int(getattr(model, "n_classes", int(y.max()) + 1))
    if int(y.max()) >= n_classes or int(y.min()) < 0:
        raise ValueError(
            f"y must lie in [0, {n_classes}), got range [{int(y.min())}, {int(y.max())}]"
        )
    model.to(dev)
    gen = torch.Generator().manual_seed(config.seed)
    n = len(x)
    steps_per_epoch = math.ceil(n / config.batch_size)
    total = steps_per_epoch * config.epochs
    if config.max_steps is not None:
        total = min(total, config.max_steps)
    params = [p for p in model.parameters() if p.requires_grad]
    if config.optimizer == "adam":
        opt: torch.optim.Optimizer = torch.optim.AdamW(
            params, lr=config.lr, weight_decay=config.weight_decay
        )
    else:
        opt = torch.optim.SGD(
            params, lr=config.lr, momentum=0.9, weight_decay=config.weight_decay, nesterov=True
        )
    sched = (
        torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total) / total))
        )
        if config.schedule == "cosine"
        else None
    )
    history = History()
    step = 0
    head_kw = {"head": config.head} if config.head else {}
    for epoch in range(config.epochs):
        t0 = time.perf_counter()
        model.train()
        perm = torch.randperm(n, generator=gen)
        loss_sum, correct_sum, seen = 0.0, 0, 0
        mixing = mix_fn is not None and (
            config.mix_until_epoch is None or epoch < config.mix_until_epoch
        )
        for b in range(steps_per_epoch):
            if step >= total:
                break
            if should_stop is not None and should_stop():
                raise TrainingCancelled(f"training cancelled at epoch {epoch + 1}, step {step}")
            idx = perm[b * config.batch_size : (b + 1) * config.batch_size]
            xb, yb = x[idx], y[idx]
            if mixing:
                assert mix_fn is not None
                xb, target = mix_fn(xb, yb, gen)
            else:
                target = F.one_hot(yb, n_classes).float()
            if config.label_smoothing:
                target = target * (1 - config.label_smoothing) + config.label_smoothing / n_classes
            xb, target, yb = (
                xb.to(dev, non_blocking=True),
                target.to(dev, non_blocking=True),
                yb.to(dev),
            )
            logits = model(xb, **head_kw)
            loss = (loss_fn or soft_cross_entropy)(logits, target)
            aux_fn = getattr(model, "auxiliary_loss", None)
            aux = aux_fn() if callable(aux_fn) else None
            opt.zero_grad(set_to_none=True)
            (loss if aux is None else loss + aux).backward()
            opt.step()
            if sched is not None:
                sched.step()
            step += 1
            loss_sum += float(loss.detach()) * len(idx)
            correct_sum += int((logits.detach().argmax(1) == yb).sum())
            seen += len(idx)
            if progress is not None and step % 20 == 0:
                progress(
                    {
                        "epoch": epoch + 1,
                        "epochs": config.epochs,
                        "step": step,
                        "steps": total,
                        "train_loss": loss_sum / seen,
                    }
                )
        record: dict[str, Any] = {
            "epoch": epoch + 1,
            "epochs": config.epochs,
            "step": step,
            "steps": total,
            "train_loss": loss_sum / max(seen, 1),
            "train_accuracy": correct_sum / max(seen, 1),
        }
        history.epoch.append(epoch + 1)
        history.train_loss.append(record["train_loss"])
        history.train_accuracy.append(record["train_accuracy"])
        if eval_data is not None:
            ev = evaluate(model, *eval_data, device=dev, head=config.head)
            history.test_loss.append(ev.loss)
            history.test_accuracy.append(ev.accuracy)
            record.update(test_loss=ev.loss, test_accuracy=ev.accuracy)
        if epoch_callback is not None:
            extra = epoch_callback(model, epoch + 1)
            history.extra.append(extra or {})
        history.seconds.append(time.perf_counter() - t0)
        if progress is not None:
            progress(record)
        if step >= total:
            break
    model.eval()
    return history
