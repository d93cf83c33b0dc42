"""The Merge Lab and the zoo: a lab over zoo models, and a merged model saved with its recipe."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from .._checks import check_choice
from ..merge import METHODS
from .align_step import ALIGNMENTS, align_lab
from .evalset import DEFAULT_N_PER_TASK
from .lab import DATA_N_PER_TASK, MergeLab


def lab_from_zoo(
    zoo: Any,
    model_ids: Sequence[str],
    *,
    base_id: str | None = None,
    tasks: Sequence[str] | None = None,
    n_per_task: int = DEFAULT_N_PER_TASK,
    random_state: int = 0,
    device: str | torch.device = "cpu",
    align: str = "none",
) -> MergeLab:
    """A :class:`MergeLab` over zoo models (all of one architecture).

    Args:
        zoo: a :class:`core.zoo.Zoo`.
        model_ids: the models to merge (at least one).
        base_id: the pre-trained model for the task-vector setting, or None.
        align: "none", or "weight" / "activation": permute models 2..n onto the first one
            before any merge (:func:`core.merge_eval.align_lab`).
    """
    check_choice("align", align, ALIGNMENTS)
    if isinstance(model_ids, str) or not model_ids:
        raise ValueError(f"model_ids must be a non-empty list of zoo ids, got {model_ids!r}")
    if len(set(model_ids)) != len(model_ids):
        raise ValueError(f"model_ids must not repeat, got {list(model_ids)}")
    if base_id is not None and base_id in model_ids:
        raise ValueError(f"base_id {base_id!r} must not also be one of model_ids")
    recs = [zoo.get(i) for i in model_ids]
    brec = zoo.get(base_id) if base_id is not None else None
    for r in [*recs[1:], *([brec] if brec else [])]:
        if (r.arch, r.arch_kwargs) != (recs[0].arch, recs[0].arch_kwargs):
            raise ValueError(
                f"all models must share one architecture: {recs[0].id} is {recs[0].arch} "
                f"{recs[0].arch_kwargs}, {r.id} is {r.arch} {r.arch_kwargs}"
            )
    lab = MergeLab(
        [zoo.state_dict(i) for i in model_ids],
        arch=recs[0].arch,
        arch_kwargs=recs[0].arch_kwargs,
        model_tasks=[r.task for r in recs],
        base=zoo.state_dict(base_id) if base_id else None,
        tasks=tasks,
        model_ids=model_ids,
        base_id=base_id,
        n_per_task=n_per_task,
        random_state=random_state,
        device=device,
    )
    return align_lab(lab, align, random_state=random_state)


def save_merged(
    zoo: Any,
    lab: MergeLab,
    method: str,
    hyperparameters: Mapping[str, Any],
    *,
    name: str | None = None,
    seed: int = 0,
    recompute_bn: bool = False,
    note: str = "",
) -> Any:
    """Merge, evaluate on the full test sets and store the result in the zoo (role "merged").

    The recipe records the method, its hyperparameters, the source ids, the base id, the seed
    and which data-dependent inputs were used, so the model can be rebuilt; metrics hold the
    per-task, average and normalised accuracy on the full test sets.

    Returns:
        The stored :class:`core.zoo.ModelRecord`.
    """
    hyper = dict(hyperparameters)
    sd = lab.merge(method, hyper, seed=seed, recompute_bn=recompute_bn, exact=True)
    ev = lab.evaluate(sd, full=True)
    data = (
        sorted(lab.data_arguments(method, hyper))
        if "data_dependent" in METHODS[method].tags
        else []
    )
    recipe = {
        "method": method,
        "hyperparameters": hyper,
        "source_ids": list(lab.model_ids),
        "base_id": lab.base_id,
        "seed": seed,
        "setting": lab.setting,
        "recompute_bn": recompute_bn,
        "data_inputs": data,
        "data_n_per_task": DATA_N_PER_TASK if data or recompute_bn else None,
    }
    metrics = {
        "test_accuracy": ev.average,
        "task_accuracy": dict(zip(ev.tasks, ev.accuracy, strict=True)),
        "normalized_accuracy": ev.average_normalized,
    }
    return zoo.add(
        sd,
        arch=lab.arch,
        arch_kwargs=lab.arch_kwargs,
        task="+".join(lab.tasks),
        role="merged",
        name=name or f"merged-{method}",
        base_id=lab.base_id,
        recipe=recipe,
        metrics=metrics,
        note=note,
    )
