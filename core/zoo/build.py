"""Training into the zoo: the default zoo built from its plan, and one custom model."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from ..models import create_model
from .plan import DEFAULT_PLAN, ModelSpec, ZooPlan, check_default_ids, pretrain_data
from .store import ModelRecord, Zoo

ProgressFn = Callable[[dict[str, Any]], None]


def ensure_default(
    zoo: Zoo,
    plan: ZooPlan = DEFAULT_PLAN,
    *,
    device: str | torch.device = "auto",
    progress: ProgressFn | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> list[ModelRecord]:
    """Train whatever part of the default zoo is missing; return the default zoo's records.

    Models already present (by id) are kept, so an interrupted build resumes where it stopped.
    ``progress`` receives dicts with ``model`` (k), ``models`` (n), ``id``, ``epoch``,
    ``epochs``, ``test_accuracy`` and ``message``.
    """
    if not isinstance(zoo, Zoo):
        raise TypeError(f"zoo must be a Zoo, got {type(zoo).__name__}")
    specs = plan.models()
    listed = {r.id for r in zoo.list()}
    if all(s.id in listed for s in specs):  # nothing to train: the zoo is used as it is
        return [zoo.get(s.id) for s in specs]
    zoo._check_writable()
    check_default_ids(zoo, plan)  # before any training
    n_total = len(specs)
    records: list[ModelRecord] = []
    for k, spec in enumerate(specs, start=1):
        if _built(zoo, spec.id):
            records.append(zoo.get(spec.id))
            continue

        def report(info: dict[str, Any], k: int = k, spec: ModelSpec = spec) -> None:
            if progress is not None:
                where = f"epoch {info.get('epoch')}/{info.get('epochs')}"
                progress(
                    {
                        **info,
                        "model": k,
                        "models": n_total,
                        "id": spec.id,
                        "message": f"model {k}/{n_total} {spec.id}: {where}",
                    }
                )

        rec = _build_one(zoo, plan, spec, device, report, should_stop)
        records.append(rec)
        if progress:
            progress(
                {
                    "model": k,
                    "models": n_total,
                    "id": spec.id,
                    "test_accuracy": rec.metrics["test_accuracy"],
                    "message": f"model {k}/{n_total} {spec.id} done",
                }
            )
    return records


def _build_one(
    zoo: Zoo,
    plan: ZooPlan,
    spec: ModelSpec,
    device: str | torch.device,
    progress: ProgressFn,
    should_stop: Callable[[], bool] | None,
) -> ModelRecord:
    """Train one model of the plan and store it under its id."""
    from ..data import get_task
    from ..train import TrainConfig, evaluate, train

    cfg = TrainConfig(epochs=spec.epochs, lr=spec.lr, seed=spec.seed, max_steps=plan.max_steps)
    eval_data: tuple[Tensor, Tensor] | None = None
    note = ""
    if spec.train_task is None:
        x, y, pre_what = pretrain_data(plan)
        note = f"pre-trained on {pre_what}"
    else:
        ds = get_task(spec.train_task)
        x, y, eval_data = ds.x_train, ds.y_train, (ds.x_test, ds.y_test)
    model: nn.Module
    if spec.parent_id is None:
        model = create_model(spec.arch, seed=spec.seed, **spec.arch_kwargs)
    else:
        model = zoo.load_model(spec.parent_id)
    hist = train(
        model,
        x,
        y,
        cfg,
        eval_data=eval_data,
        device=device,
        progress=progress,
        should_stop=should_stop,
    )
    metrics: dict[str, Any] = {}
    if spec.eval_tasks:
        per = {
            t: evaluate(model, get_task(t).x_test, get_task(t).y_test, device=device).accuracy
            for t in spec.eval_tasks
        }
        metrics["task_accuracy"] = per
        mean = sum(per.values()) / len(per)
        metrics["test_accuracy"] = per.get(spec.task, mean)  # a fine-tune: its own task
    else:
        metrics["test_accuracy"] = hist.test_accuracy[-1]
    metrics["history"] = hist.to_dict()
    return zoo.add(
        model,
        arch=spec.arch,
        arch_kwargs=spec.arch_kwargs,
        task=spec.task,
        role=spec.role,
        note=note,
        name=spec.id,
        seed=spec.seed,
        parent_id=spec.parent_id,
        base_id=spec.parent_id,
        train_config=cfg.to_dict(),
        metrics=metrics,
        replace=True,
    )


def _built(zoo: Zoo, model_id: str) -> bool:
    """Listed with its checkpoint file (a row whose file was deleted is built again)."""
    return model_id in {r.id for r in zoo.list()}


def train_custom(
    zoo: Zoo,
    *,
    arch: str,
    task: str,
    epochs: int = 5,
    width: int | None = None,
    seed: int = 0,
    lr: float | None = None,
    name: str | None = None,
    device: str | torch.device = "auto",
    progress: ProgressFn | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> ModelRecord:
    """Train one model on ``task`` and store it (role "custom")."""
    from ..data import get_task
    from ..models import ARCHITECTURES
    from ..train import TrainConfig, train

    ARCHITECTURES[arch]  # raises a clear error for an unknown architecture
    ds = get_task(task)
    kwargs: dict[str, Any] = {}
    if width is not None:
        kwargs["width"] = width
    lr = lr if lr is not None else (1e-3 if arch == "mlp" else 1e-2)
    cfg = TrainConfig(epochs=epochs, lr=lr, seed=seed)
    model = create_model(arch, seed=seed, **kwargs)
    hist = train(
        model,
        ds.x_train,
        ds.y_train,
        cfg,
        eval_data=(ds.x_test, ds.y_test),
        device=device,
        progress=progress,
        should_stop=should_stop,
    )
    metrics = {"test_accuracy": hist.test_accuracy[-1], "history": hist.to_dict()}
    return zoo.add(
        model,
        arch=arch,
        arch_kwargs=kwargs,
        task=task,
        role="custom",
        name=name or f"{arch}-{task}-s{seed}",
        seed=seed,
        train_config=cfg.to_dict(),
        metrics=metrics,
    )
