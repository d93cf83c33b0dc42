"""The default zoo's plan: which models it holds, as a list of :class:`ModelSpec`.

:meth:`ZooPlan.models` turns the plan's few knobs into one spec per model in build order
(the base, one fine-tune per domain, then the independently initialised models); the build
(:func:`core.zoo.ensure_default`), the id checks and the Home page all read that one list.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch
from torch import Tensor

from .store import Zoo


class ArchRun(NamedTuple):
    """One architecture of the mode-connectivity setting: trained once per seed."""

    arch: str
    kwargs: dict[str, Any]
    epochs: int
    lr: float


@dataclass(frozen=True)
class ModelSpec:
    """One model of the default zoo: its id, what it is, and how it is trained."""

    id: str
    arch: str
    arch_kwargs: dict[str, Any]
    role: str  # "base" | "finetune" | "independent"
    task: str  # the task stored in its record
    seed: int
    epochs: int
    lr: float
    train_task: str | None  # the task it trains on; None: the plan's pre-training data
    parent_id: str | None = None  # trained on from this model's weights; None: a fresh init
    eval_tasks: tuple[str, ...] = ()  # measured one by one into metrics["task_accuracy"]


@dataclass(frozen=True)
class ZooPlan:
    """What the default zoo holds and how it is trained.

    The task-vector setting: a base MLP pre-trained on another task than the fine-tunes'
    (``pretrain_classes``: only digits 0-4 of every domain, a 5-way task), then one fine-tune
    per digit domain on all ten digits (the domains share the digit label space, so task
    vectors can be added). The base is thus clearly weaker than every fine-tune on its task
    (it never predicts 5-9), as a pretrained backbone is before fine-tuning: the regime the
    merging papers study. A base pre-trained on the ten-way target tasks themselves was nearly
    as good as the fine-tunes and every merge fell below it; one pre-trained on Fashion-MNIST
    alone was at chance and its task vectors did not combine (docs/BENCHMARKS.md). The
    mode-connectivity setting: ``independent_seeds`` models per architecture trained from
    different initialisations on the same data.
    """

    base_arch: str = "mlp"
    base_kwargs: dict[str, Any] = field(default_factory=lambda: {"width": 512, "depth": 3})
    domains: tuple[str, ...] = ("mnist", "mnist_inverted", "mnist_rotated", "digits")
    pretrain_tasks: tuple[str, ...] | None = None  # the base's domains (None: ``domains``)
    pretrain_classes: tuple[int, ...] | None = (0, 1, 2, 3, 4)  # the base's task: these only
    base_per_task: int | None = None  # training examples per domain before the class filter
    base_epochs: int = 2
    finetune_epochs: int = 8
    finetune_lr: float = 5e-4
    independent: tuple[ArchRun, ...] = (
        ArchRun("mlp", {"width": 512, "depth": 3}, epochs=6, lr=1e-3),
        ArchRun("cnn", {"width": 16}, epochs=4, lr=1e-2),
        ArchRun("resnet20", {"width": 8}, epochs=3, lr=1e-2),
    )
    independent_task: str = "mnist"
    independent_seeds: tuple[int, ...] = (1, 2)
    max_steps: int | None = None  # caps every run (tests use tiny plans)

    def __post_init__(self) -> None:  # plain (arch, kwargs, epochs, lr) tuples are accepted
        object.__setattr__(self, "independent", tuple(ArchRun(*run) for run in self.independent))

    def models(self) -> list[ModelSpec]:
        """Every model of the plan, in build order."""
        base_id = f"{self.base_arch}-base"
        specs = [
            ModelSpec(
                id=base_id,
                arch=self.base_arch,
                arch_kwargs=dict(self.base_kwargs),
                role="base",
                task="+".join(self.domains),
                seed=0,
                epochs=self.base_epochs,
                lr=1e-3,
                train_task=None,
                eval_tasks=self.domains,
            )
        ]
        specs += [
            ModelSpec(
                id=f"{self.base_arch}-ft-{task}",
                arch=self.base_arch,
                arch_kwargs=dict(self.base_kwargs),
                role="finetune",
                task=task,
                seed=100 + i,
                epochs=self.finetune_epochs,
                lr=self.finetune_lr,
                train_task=task,
                parent_id=base_id,
                eval_tasks=self.domains,
            )
            for i, task in enumerate(self.domains)
        ]
        specs += [
            ModelSpec(
                id=f"{run.arch}-{self.independent_task}-s{seed}",
                arch=run.arch,
                arch_kwargs=dict(run.kwargs),
                role="independent",
                task=self.independent_task,
                seed=seed,
                epochs=run.epochs,
                lr=run.lr,
                train_task=self.independent_task,
            )
            for run in self.independent
            for seed in self.independent_seeds
        ]
        return specs

    def n_models(self) -> int:
        return len(self.models())


DEFAULT_PLAN = ZooPlan()


def pretrain_data(plan: ZooPlan) -> tuple[Tensor, Tensor, str]:
    """The base's training data: the pooled ``pretrain_tasks`` (default: the domains), kept
    to ``pretrain_classes``; with a one-line description for the zoo's note."""
    from ..data import mixture

    tasks = list(plan.pretrain_tasks or plan.domains)
    x, y = mixture(tasks, n_per_task=plan.base_per_task, generator=torch.Generator().manual_seed(0))
    what = "+".join(tasks)
    if plan.pretrain_classes is not None:
        keep = torch.isin(y, torch.tensor(plan.pretrain_classes))
        if not bool(keep.any()):
            raise ValueError(
                f"pretrain_classes {plan.pretrain_classes} selects no example of {tasks}"
            )
        x, y = x[keep], y[keep]
        what += f", classes {','.join(map(str, plan.pretrain_classes))} only"
    return x, y, what


def default_zoo_ids(plan: ZooPlan = DEFAULT_PLAN) -> list[str]:
    """Ids of the default zoo's models, in build order."""
    return [spec.id for spec in plan.models()]


def check_default_ids(zoo: Zoo, plan: ZooPlan = DEFAULT_PLAN) -> None:
    """Refuse to build when a model that is not the plan's holds one of its ids.

    A model imported or trained under a default id (another architecture, width or role)
    would otherwise be fine-tuned from, or kept as, a default model.

    Raises:
        ValueError: naming each such id, what it holds, what the plan needs, and the way out.
    """
    problems = []
    for spec in plan.models():
        if spec.id not in zoo:
            continue
        rec = zoo.get(spec.id)
        if (rec.arch, rec.arch_kwargs, rec.role) != (spec.arch, spec.arch_kwargs, spec.role):
            problems.append(
                f"{spec.id!r} is a {rec.role} {rec.arch} {rec.arch_kwargs}, the default zoo "
                f"needs a {spec.role} {spec.arch} {spec.arch_kwargs}"
            )
    if problems:
        raise ValueError(
            "the default zoo cannot be built: models that are not the default ones hold its "
            f"ids: {'; '.join(problems)}. Delete or re-import them under another name "
            "(Model Zoo page), or use another workspace"
        )
