"""Interpolation, feature geometry and clustering on a suite zoo (real pretrained backbones).

Adapters that turn a suite model (the pretrained backbone ``"pretrained"`` or a task's
fine-tune, named by its task) into what :mod:`core.landscape`, :mod:`core.geometry` and
:mod:`core.cluster` already take:

* :func:`suite_interpolation` — loss / accuracy along θ(α) = (1 − α) θ_A + α θ_B between two
  suite backbones, scored with a task's own fixed head, through
  :func:`core.landscape.interpolate`. For EfficientNet-Lite0 ``recompute_bn=True`` (the
  default) re-estimates the BatchNorm statistics at every point from the task's training
  images (the BN reset of REPAIR, Jordan et al., arXiv:2211.08403). The Lite0 trunk freezes
  its BatchNorm layers in train mode (``freeze_bn``), which would make a reset a no-op that
  zeroes the statistics; the adapter's private copy unfreezes them.
* :func:`suite_features` — penultimate features (Lite0's pooled 1280-d ImageNet features, or
  MiniLM's mean-pooled, unit-norm 384-d sentence embeddings) of a suite model on a seeded,
  stratified subset of a task's split: ``(N, D)`` float32 features, ``(N,)`` labels and the
  task's head as a ``(weight, bias)`` pair, the inputs of :func:`core.geometry.neural_collapse`,
  :func:`core.geometry.project` and :func:`core.cluster.ppp`.
* :func:`nc_across_finetuning` — neural-collapse metrics of the pretrained and the fine-tuned
  backbone's features on the same examples, with the task's fixed head as classifier.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ._checks import check_choice, check_int
from .benchmark.protocol import Head, TaskRouter, new_backbone, router_inputs, trunk_state
from .benchmark.zoo_build import base_id, finetune_id, load_suite_zoo
from .data.suites import SUITES, SuiteTask, load_task
from .device import resolve_device
from .landscape import PathResult, interpolate
from .params import StateDict
from .suite_lab import stratified_subset
from .zoo import Zoo

PRETRAINED = "pretrained"
ProgressFn = Any


def suite_models(zoo: Zoo, suite: str) -> list[str]:
    """Names a suite model can be given by: ``"pretrained"`` and every task (its fine-tune)."""
    return [PRETRAINED, *load_suite_zoo(zoo, suite).config.task_names]


def _task(zoo: Zoo, suite: str, task: str) -> SuiteTask:
    cfg = load_suite_zoo(zoo, suite).config
    check_choice("task", task, list(cfg.task_names))
    return load_task(task, sizes=cfg.sizes, resolution=cfg.resolution, max_length=cfg.max_length)


def _head(zoo: Zoo, suite: str, task: str) -> Head:
    sd = zoo.state_dict(finetune_id(suite, task))
    return Head(sd["head.weight"].float(), sd["head.bias"].float())


def _backbone(zoo: Zoo, suite: str, model: str, arg: str = "model") -> StateDict:
    names = suite_models(zoo, suite)
    check_choice(arg, model, names)
    mid = base_id(suite) if model == PRETRAINED else finetune_id(suite, model)
    return trunk_state(zoo.state_dict(mid))


def _check_common(zoo: Zoo, suite: str, split: str) -> None:
    if not isinstance(zoo, Zoo):
        raise TypeError(f"zoo must be a core.zoo.Zoo, got {type(zoo).__name__}")
    check_choice("suite", suite, list(SUITES))
    check_choice("split", split, ("train", "val", "test"))


def _router_model(zoo: Zoo, suite: str, head: Head) -> nn.Module:
    trunk = new_backbone(load_suite_zoo(zoo, suite).config, pretrained=False).trunk
    if hasattr(trunk, "freeze_bn"):
        setattr(trunk, "freeze_bn", False)  # noqa: B010  (BN resets run the layers in train mode)
    return TaskRouter(trunk, [head], suite, task=0)


def _with_head(sd: Mapping[str, Tensor], head: Head) -> StateDict:
    return {**sd, "heads.0.weight": head.weight, "heads.0.bias": head.bias}


# ----------------------------------------------------------------------------- interpolation
def suite_interpolation(
    zoo: Zoo,
    suite: str,
    model_a: str,
    model_b: str,
    *,
    task: str | None = None,
    split: str = "val",
    n_points: int = 11,
    n_examples: int = 128,
    recompute_bn: bool | None = None,
    bn_examples: int = 128,
    batch_size: int = 128,
    device: str | torch.device = "cpu",
    progress: ProgressFn = None,
) -> PathResult:
    """Loss and accuracy along the straight line between two suite backbones.

    Args:
        zoo: the workspace zoo with the built suite.
        suite: "vision" or "text".
        model_a, model_b: ``"pretrained"`` or a task name (that task's fine-tune).
        task: whose head and data score the path (default: ``model_b``'s task, else
            ``model_a``'s).
        split: the evaluation split besides "train" ("val" or "test").
        n_points: points on [0, 1], endpoints included.
        n_examples: examples per split, a seeded stratified subset.
        recompute_bn: re-estimate BatchNorm statistics at every point (default: True for the
            vision suite, whose Lite0 has BatchNorm; the text backbone has none).
        bn_examples: training examples for each BatchNorm reset.
        batch_size: forward-pass batch size.
        device: "cpu", "cuda" or "auto".
        progress: ``progress(done, n_points)``.

    Returns:
        A :class:`core.landscape.PathResult` with splits "train" and ``split``; ``meta`` names
        the suite, the task and the endpoints.
    """
    _check_common(zoo, suite, split)
    if split == "train":
        raise ValueError("split must be 'val' or 'test' (train is always evaluated), got 'train'")
    sd_a = _backbone(zoo, suite, model_a, "model_a")
    sd_b = _backbone(zoo, suite, model_b, "model_b")
    if model_a == model_b:
        raise ValueError(f"model_a and model_b must differ, got {model_a!r} twice")
    if task is None:
        task = model_b if model_b != PRETRAINED else model_a
    check_int("n_examples", n_examples, 1)
    check_int("bn_examples", bn_examples, 1)
    if recompute_bn is None:
        recompute_bn = suite == "vision"
    if not isinstance(recompute_bn, bool):
        raise TypeError(f"recompute_bn must be a bool or None, got {type(recompute_bn).__name__}")
    t = _task(zoo, suite, task)
    head = _head(zoo, suite, task)
    data = {}
    for s in ("train", split):
        x, y = t.split(s)
        idx = stratified_subset(y, n_examples if s == split else max(n_examples, bn_examples))
        data[s] = (router_inputs(suite, x[idx]), y[idx])
    model = _router_model(zoo, suite, head)
    res = interpolate(
        model,
        _with_head(sd_a, head),
        _with_head(sd_b, head),
        data,
        n_points=n_points,
        recompute_bn=recompute_bn,
        max_examples=None,
        bn_examples=bn_examples,
        batch_size=batch_size,
        device=resolve_device(device),
        label=f"{model_a} → {model_b} ({task})",
        progress=progress,
    )
    res.meta.update(
        {"suite": suite, "task": task, "model_a": model_a, "model_b": model_b, "split": split}
    )
    return res


# ----------------------------------------------------------------------------- features
@dataclass(frozen=True)
class SuiteFeatures:
    """Penultimate features of one suite model on a task's subset.

    Attributes:
        features: (N, D) float32, CPU.
        labels: (N,) int64.
        classifier: the task's fixed head as (weight (C, D), bias (C,)).
        class_names: one per class of the task.
        model, task, split, suite: what was extracted.
        indices: (N,) positions of the examples in the split.
    """

    features: Tensor
    labels: Tensor
    classifier: tuple[Tensor, Tensor]
    class_names: tuple[str, ...]
    model: str
    task: str
    split: str
    suite: str
    indices: Tensor


@torch.no_grad()
def suite_features(
    zoo: Zoo,
    suite: str,
    model: str,
    task: str,
    *,
    split: str = "test",
    n_examples: int | None = 500,
    state_dict: Mapping[str, Tensor] | None = None,
    seed: int = 0,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
) -> SuiteFeatures:
    """Features of a suite model on a seeded, stratified subset of a task's split.

    Args:
        zoo, suite: the built suite zoo.
        model: ``"pretrained"`` (ImageNet Lite0 / MiniLM features), a task name (its
            fine-tune), or any label when ``state_dict`` is given.
        task: the task whose data (and head) are used.
        split: "train", "val" or "test".
        n_examples: subset size (None: the whole split).
        state_dict: a backbone with ``trunk.*`` keys (e.g. a merged one) instead of a stored
            model.
        seed: seed of the subset.
        batch_size: examples per forward pass.
        device: "cpu", "cuda" or "auto".
    """
    _check_common(zoo, suite, split)
    if n_examples is not None:
        check_int("n_examples", n_examples, 1)
    if state_dict is None:
        sd = _backbone(zoo, suite, model)
    else:
        if not isinstance(state_dict, Mapping):
            raise TypeError(f"state_dict must be a mapping, got {type(state_dict).__name__}")
        sd = trunk_state(state_dict)
        if not sd:
            raise ValueError("state_dict must hold the backbone's trunk.* keys, got none")
    t = _task(zoo, suite, task)
    head = _head(zoo, suite, task)
    x, y = t.split(split)
    idx = stratified_subset(y, n_examples or len(y), seed=seed)
    dev = resolve_device(device)
    trunk = new_backbone(load_suite_zoo(zoo, suite).config, pretrained=False).trunk
    trunk.load_state_dict({k.removeprefix("trunk."): v for k, v in sd.items()})
    trunk.to(dev).eval()
    xs = router_inputs(suite, x[idx])
    feats = [
        trunk(xb.to(dev) if suite == "vision" else xb.long().to(dev)).float().cpu()
        for xb in xs.split(batch_size)
    ]
    return SuiteFeatures(
        features=torch.cat(feats),
        labels=y[idx].clone(),
        classifier=(head.weight, head.bias),
        class_names=t.class_names,
        model=model,
        task=task,
        split=split,
        suite=suite,
        indices=idx,
    )


def nc_across_finetuning(
    zoo: Zoo,
    suite: str,
    task: str,
    *,
    models: Sequence[str] | None = None,
    split: str = "test",
    n_examples: int | None = 500,
    device: str | torch.device = "cpu",
) -> dict[str, dict[str, float]]:
    """Neural-collapse metrics (:func:`core.geometry.neural_collapse`) of several suite models'
    features on the same examples of ``task``, with the task's fixed head as classifier.

    Args:
        models: which models (default: ``["pretrained", task]``, before / after fine-tuning;
            other tasks' fine-tunes show what fine-tuning elsewhere does to this task).

    Returns:
        model -> metric -> value (all metrics → 0 at collapse), in ``models`` order.
    """
    from .geometry import neural_collapse

    models = list(models) if models is not None else [PRETRAINED, task]
    if not models:
        raise ValueError("models must name at least one suite model, got none")
    out: dict[str, dict[str, float]] = {}
    for m in models:
        f = suite_features(zoo, suite, m, task, split=split, n_examples=n_examples, device=device)
        out[m] = neural_collapse(f.features, f.labels, f.classifier)
    return out


# ----------------------------------------------------------------------------- page records
def built_suites(zoo: Zoo) -> list[str]:
    """The suites whose zoo is complete in ``zoo`` (base and every fine-tune of its config)."""
    if not isinstance(zoo, Zoo):
        raise TypeError(f"zoo must be a core.zoo.Zoo, got {type(zoo).__name__}")
    out = []
    for suite in SUITES:
        try:
            load_suite_zoo(zoo, suite)
        except KeyError:
            continue
        out.append(suite)
    return out


def suite_model_ids(zoo: Zoo) -> set[str]:
    """Zoo ids of the base and fine-tunes of every built suite."""
    ids: set[str] = set()
    for suite in built_suites(zoo):
        sz = load_suite_zoo(zoo, suite)
        ids |= {sz.base.id, *(r.id for r in sz.finetunes.values())}
    return ids


def suite_feature_report(
    zoo: Zoo,
    suite: str,
    model: str,
    task: str,
    *,
    split: str = "test",
    n_examples: int | None = 500,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> dict[str, Any]:
    """:func:`core.geometry.feature_report`'s record for a suite model's features on a task
    (the task's fixed head as classifier), plus ``class_names``, ``model``, ``task``."""
    from .geometry import report_from_features

    f = suite_features(
        zoo, suite, model, task, split=split, n_examples=n_examples, seed=seed, device=device
    )
    rep = report_from_features(f.features, f.labels, *f.classifier)
    rep.update({"class_names": list(f.class_names), "model": model, "task": task})
    return rep


def suite_cluster(
    zoo: Zoo,
    suite: str,
    model: str,
    task: str,
    *,
    split: str = "train",
    n_examples: int | None = 500,
    k_max: int = 10,
    n_seeds: int = 4,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> dict[str, Any]:
    """PPP (:func:`core.cluster.ppp`) on a suite model's features of a task, with the
    agreement of the clusters with the labels and a PCA view: the record the Clustering page
    draws (``k``, ``ks``, ``scores``, ``labels``, ``truth``, ``posterior``, ``coords``,
    ``agreement``, ``stability``, ``dim``, ``class_names``)."""
    from .cluster import agreement, ppp
    from .geometry import project

    check_int("k_max", k_max, 2)
    check_int("n_seeds", n_seeds, 1)
    f = suite_features(
        zoo, suite, model, task, split=split, n_examples=n_examples, seed=seed, device=device
    )
    if len(f.labels) <= k_max:
        raise ValueError(
            f"k_max must be below the number of examples ({len(f.labels)}), got {k_max}"
        )
    res = ppp(
        f.features,
        k_max=k_max,
        random_state=seed,
        n_seeds=n_seeds,
        n_components=min(16, len(f.labels) - 1, int(f.features.shape[1])),
        device=str(resolve_device(device)),
    )
    truth = f.labels.numpy()
    return {
        "k": res.k,
        "ks": res.ks,
        "scores": res.scores,
        "labels": res.labels,
        "truth": truth,
        "posterior": res.posterior,
        "coords": project(f.features.float(), "pca").coords,
        "agreement": agreement(truth, res.labels),
        "stability": res.scores["stability"][res.ks.index(res.k)],
        "dim": int(f.features.shape[1]),
        "class_names": list(f.class_names),
    }


__all__ = [
    "PRETRAINED",
    "SuiteFeatures",
    "built_suites",
    "nc_across_finetuning",
    "suite_cluster",
    "suite_feature_report",
    "suite_features",
    "suite_interpolation",
    "suite_model_ids",
    "suite_models",
]
