"""Train ERM and mixers on one dataset with one seed; store each model and the run.

Every method trains the same architecture from the same initialisation (``seed``) on the same
shuffling order, through :func:`core.train.train` with the mixer's ``mix_fn``. Each trained model
goes into the zoo (role "mixup", recipe = mixer + hyperparameters + switch-off epoch) and the
run goes into the zoo's records (kind ``"mixup_run"``) with the per-epoch history, test
accuracy and its bootstrap CI, calibration (ECE, reliability bins) and per-sample correctness,
so the Mixup Training and Feature Geometry pages can use them.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from .._checks import check_choice, check_int
from ..calibration import model_reliability
from ..models import ARCHITECTURES, create_model
from ..train import TrainConfig, evaluate, train
from ..zoo import Zoo, slugify
from . import MIXERS, mix_fn
from .losses import decoupled_loss_fn

RUN_KIND = "mixup_run"
ERM = "erm"
LOSSES = ("soft_ce", "decoupled")


@dataclass(frozen=True)
class MixMethod:
    """One training recipe: ERM (``mixer=None``) or a mixer with its hyperparameters.

    Attributes:
        mixer: a key of :data:`MIXERS`, or None for plain ERM.
        hyper: keyword arguments for :func:`core.mixup.mix` (``alpha``, ``prob``, ``lam_y``,
            the mixer's own hyperparameters...).
        mix_until_epoch: early-stopped mixup: mixing off from this epoch on (None = always).
        loss: "soft_ce" (soft-target cross-entropy) or "decoupled" (the Decoupled Mixup loss,
            :func:`core.mixup.losses.decoupled_soft_target_loss`).
        loss_params: keyword arguments of the loss ("decoupled": ``eta``, ``mode``, ``power``).
        label: display name (default built from the above).
    """

    mixer: str | None = None
    hyper: Mapping[str, Any] = field(default_factory=dict)
    mix_until_epoch: int | None = None
    loss: str = "soft_ce"
    loss_params: Mapping[str, Any] = field(default_factory=dict)
    label: str = ""

    def __post_init__(self) -> None:
        if self.mixer is not None:
            MIXERS[self.mixer]
        if self.mix_until_epoch is not None:
            check_int("mix_until_epoch", self.mix_until_epoch, 0)
        check_choice("loss", self.loss, LOSSES)
        if self.loss == "soft_ce" and self.loss_params:
            raise ValueError(
                f"loss_params must be empty for loss='soft_ce', got {sorted(self.loss_params)}"
            )
        self.loss_fn()  # checks loss_params now, not at the first batch
        if not self.label:
            name = self.mixer or ERM
            if self.mixer and "alpha" in self.hyper:
                name += f" α={self.hyper['alpha']:g}"
            if self.loss == "decoupled":
                name += f" + DM η={self.loss_params.get('eta', 0.1):g}"
            if self.mix_until_epoch is not None and self.mixer:
                name += f" (off at {self.mix_until_epoch})"
            object.__setattr__(self, "label", name)

    def loss_fn(self) -> Callable[[Tensor, Tensor], Tensor] | None:
        """The ``loss_fn`` for :func:`core.train.train` (None: soft-target cross-entropy)."""
        if self.loss == "decoupled":
            return decoupled_loss_fn(**self.loss_params)
        return None

    def recipe(self) -> dict[str, Any]:
        hyper = {k: v for k, v in self.hyper.items() if not isinstance(v, nn.Module | torch.Tensor)}
        return {
            "mixer": self.mixer or ERM,
            "hyperparameters": hyper,
            "mix_until_epoch": self.mix_until_epoch,
            "loss": self.loss,
            "loss_params": dict(self.loss_params),
        }


def train_mixers(
    zoo: Zoo,
    *,
    task: str,
    methods: Sequence[MixMethod],
    arch: str = "cnn",
    arch_kwargs: Mapping[str, Any] | None = None,
    config: TrainConfig = TrainConfig(),
    n_train: int | None = None,
    run_id: str | None = None,
    device: str | torch.device = "auto",
    progress: Callable[[dict[str, Any]], None] | None = None,
    epoch_callback: Callable[[nn.Module, int], dict[str, Any] | None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    n_bins: int = 15,
) -> dict[str, Any]:
    """Train each method on ``task`` with the same seed; store models and a run record.

    Args:
        zoo: where models and the run record go.
        task: a :func:`core.data.get_task` name.
        methods: the recipes (include ``MixMethod()`` for the ERM baseline).
        arch, arch_kwargs: architecture for every method (input size and classes from the data).
        config: shared hyperparameters and seed; a method's ``mix_until_epoch`` replaces its own.
        n_train: train on a seeded, stratified subset of ``n_train`` training samples (quick
            runs; :func:`core.data.stratified_subset`, seeded by ``config.seed``).
        run_id: record key (default from task, arch, seed and time).
        progress: called with ``method``, ``methods``, ``label`` and core.train's progress keys.
        epoch_callback: passed to :func:`core.train.train` for every method (its dicts land in
            ``history["extra"]``), e.g. neural-collapse metrics per epoch.
        should_stop: polled every step (cancels with :class:`core.train.TrainingCancelled`).
        n_bins: reliability bins.

    Returns:
        The stored run record (also in ``zoo.get_records("mixup_run")[run_id]``).
    """
    from ..data import get_task, stratified_subset
    from ..stats import bootstrap_ci

    if not methods:
        raise ValueError("methods must hold at least one MixMethod, got none")
    for i, m in enumerate(methods):
        if not isinstance(m, MixMethod):
            raise TypeError(f"methods[{i}] must be a MixMethod, got {type(m).__name__}")
    labels = [m.label for m in methods]
    if len(set(labels)) != len(labels):
        raise ValueError(f"methods must have distinct labels, got {labels}")
    ARCHITECTURES[arch]
    ds = get_task(task)
    x, y = ds.x_train, ds.y_train
    if n_train is not None:
        check_int("n_train", n_train, 1)
        idx = stratified_subset(y, n_train, random_state=config.seed, key=f"{task}/train")
        x, y = x[idx], y[idx]
    c, h, w = ds.input_shape
    kwargs = {
        **dict(arch_kwargs or {}),
        "n_classes": ds.n_classes,
        "in_channels": c,
        "image_size": h,
    }
    run_id = run_id or slugify(f"{task}-{arch}-s{config.seed}-{time.strftime('%Y%m%d-%H%M%S')}")
    results: dict[str, Any] = {}
    for k, method in enumerate(methods):
        model = create_model(arch, seed=config.seed, **kwargs)
        cfg = dataclasses.replace(config, mix_until_epoch=method.mix_until_epoch)
        fn = None
        if method.mixer is not None:
            extra = {"model": model} if {"model", "saliency"} & MIXERS[method.mixer].tags else {}
            fn = mix_fn(method.mixer, n_classes=ds.n_classes, **{**extra, **method.hyper})

        def report(info: dict[str, Any], k: int = k, label: str = method.label) -> None:
            if progress is not None:
                progress({**info, "method": k + 1, "methods": len(methods), "label": label})

        hist = train(
            model,
            x,
            y,
            cfg,
            n_classes=ds.n_classes,
            eval_data=(ds.x_test, ds.y_test),
            mix_fn=fn,
            loss_fn=method.loss_fn(),
            device=device,
            progress=report,
            epoch_callback=epoch_callback,
            should_stop=should_stop,
        )
        model = model.cpu().eval()
        ev = evaluate(model, ds.x_test, ds.y_test, device="cpu")
        rel = model_reliability(model, ds.x_test, ds.y_test, n_bins=n_bins)
        ci = bootstrap_ci(ev.correct.numpy(), random_state=config.seed)
        metrics = {"test_accuracy": ev.accuracy, "ece": rel.ece, "mce": rel.mce}
        rec = zoo.add(
            model,
            arch=arch,
            arch_kwargs=kwargs,
            task=task,
            role="mixup",
            name=f"{run_id}-{slugify(method.label)}",
            seed=config.seed,
            train_config=cfg.to_dict(),
            metrics=metrics,
            recipe={**method.recipe(), "run": run_id},
        )
        results[method.label] = {
            **method.recipe(),
            "label": method.label,
            "model_id": rec.id,
            "history": hist.to_dict(),
            "test_accuracy": ev.accuracy,
            "test_loss": ev.loss,
            "ci": {"low": ci.low, "high": ci.high, "level": ci.level},
            "reliability": rel.to_dict(),
            "correct": ev.correct.int().tolist(),
        }
    record = {
        "run_id": run_id,
        "task": task,
        "arch": arch,
        "arch_kwargs": kwargs,
        "seed": config.seed,
        "config": config.to_dict(),
        "n_train": len(x),
        "train_class_counts": {
            str(int(c)): int(k) for c, k in zip(*y.unique(return_counts=True), strict=True)
        },
        "methods": results,
    }
    zoo.put_record(RUN_KIND, run_id, record)
    return record


def load_runs(zoo: Zoo) -> dict[str, dict[str, Any]]:
    """All stored mixup runs, run id -> record, oldest first."""
    return zoo.get_records(RUN_KIND)
