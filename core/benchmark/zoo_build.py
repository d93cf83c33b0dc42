"""Build a suite's zoo: the pretrained backbone and one fine-tune per task, stored in the zoo.

``python -m core zoo build --suite vision|text`` runs :func:`build_suite_zoo`. Each model is
stored as soon as it is trained (atomic zoo writes), so an interrupted build resumes with the
next missing task; models built with a different :class:`SuiteConfig` are rebuilt. Ids:
``<suite>-base`` (the pretrained backbone) and ``<suite>-ft-<task>`` (its fine-tune on the task,
with the task's fixed head as ``head.*``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from ..data.suites import load_task
from ..device import resolve_device
from ..models import Classifier
from ..zoo import ModelRecord, Zoo
from .protocol import (
    Head,
    ProgressFn,
    SuiteConfig,
    backbone_kwargs,
    evaluate_backbone,
    finetune,
    make_head,
    new_backbone,
)


def base_id(suite: str) -> str:
    return f"{suite}-base"


def finetune_id(suite: str, task: str) -> str:
    return f"{suite}-ft-{task}"


@dataclass(frozen=True)
class SuiteZoo:
    """The records of a built suite zoo and the config they were built with."""

    config: SuiteConfig
    base: ModelRecord
    finetunes: dict[str, ModelRecord]


def _arch_kwargs(n_classes: int, config: SuiteConfig) -> dict[str, Any]:
    return {"n_classes": n_classes, "pretrained": False, **backbone_kwargs(config)}


# Bumped whenever a backbone's state-dict layout changes: older checkpoints are rebuilt.
LAYOUT_VERSION = 2


def _matches(rec: ModelRecord, config: SuiteConfig) -> bool:
    tc = rec.train_config
    return tc.get("suite_config") == config.to_dict() and tc.get("layout") == LAYOUT_VERSION


def suite_conflicts(zoo: Zoo, config: SuiteConfig) -> dict[str, dict[str, tuple[Any, Any]]]:
    """Models of ``config``'s suite already in ``zoo`` that were built with another config (same
    checkpoint layout): model id -> {setting: (stored value, requested value)}. Building would
    replace them."""
    wanted = config.to_dict()
    out: dict[str, dict[str, tuple[Any, Any]]] = {}
    ids = [base_id(config.suite)] + [finetune_id(config.suite, t) for t in config.task_names]
    for mid in ids:
        if mid not in zoo:
            continue
        tc = zoo.get(mid).train_config
        stored = tc.get("suite_config")
        if tc.get("layout") != LAYOUT_VERSION or not isinstance(stored, dict) or stored == wanted:
            continue  # an outdated layout cannot be loaded any more: rebuilding loses nothing
        keys = sorted(set(stored) | set(wanted), key=str)
        out[mid] = {
            k: (stored.get(k), wanted.get(k)) for k in keys if stored.get(k) != wanted.get(k)
        }
    return out


def ensure_no_conflict(zoo: Zoo, config: SuiteConfig) -> None:
    """Raise ``ValueError`` naming the models and settings when building ``config`` into ``zoo``
    would replace models built with another configuration."""
    conflicts = suite_conflicts(zoo, config)
    if conflicts:
        mid, diff = next(iter(conflicts.items()))
        shown = ", ".join(f"{k}: stored {a!r}, requested {b!r}" for k, (a, b) in diff.items())
        raise ValueError(
            f"the workspace {zoo.root} already holds the {config.suite} suite built with another "
            f"configuration ({len(conflicts)} model(s), e.g. {mid}: {shown}); building would "
            "replace them. Use another workspace, or pass overwrite=True (--overwrite on the "
            "command line) to rebuild them."
        )


def build_suite_zoo(
    zoo: Zoo,
    config: SuiteConfig,
    *,
    device: str | torch.device = "auto",
    progress: ProgressFn | None = None,
    should_stop: Callable[[], bool] | None = None,
    show_progress: bool = False,
    overwrite: bool = False,
) -> SuiteZoo:
    """Store the pretrained backbone and train whatever fine-tune is missing or stale.

    Args:
        zoo: the workspace zoo.
        config: the suite's configuration (tests pass tiny ones).
        device: "auto" uses CUDA when present.
        progress: receives ``{"stage", "task", "k", "n", "step", "steps", "loss", "message"}``.
        should_stop: polled every step; True stops with :class:`TrainingCancelled`.
        show_progress: draw tqdm bars on stderr (the command line does).
        overwrite: replace suite models built with another configuration (default: refuse with
            ``ValueError``, see :func:`ensure_no_conflict`; missing models are always built and
            matching ones kept).

    Returns:
        The :class:`SuiteZoo`.
    """
    if not isinstance(zoo, Zoo):
        raise TypeError(f"zoo must be a Zoo, got {type(zoo).__name__}")
    if not isinstance(config, SuiteConfig):
        raise TypeError(f"config must be a SuiteConfig, got {type(config).__name__}")
    if not overwrite:
        ensure_no_conflict(zoo, config)
    dev = resolve_device(device)
    suite, names = config.suite, config.task_names
    cfg_d = config.to_dict()
    bar = _Bars(show_progress, len(names) * max(config.steps, 1))

    def say(info: dict[str, Any]) -> None:
        if progress is not None:
            progress(info)
        bar.update(info)

    bid = base_id(suite)
    base_model: Classifier | None = None
    if not (bid in zoo and _matches(zoo.get(bid), config)):
        base_model = new_backbone(config)
        zoo.add(
            base_model,
            arch=config.arch,
            arch_kwargs=_arch_kwargs(base_model.n_classes, config),
            task=f"{suite}:pretrained",
            role="base",
            name=bid,
            train_config={"suite_config": cfg_d, "layout": LAYOUT_VERSION},
            note="pretrained backbone (shipped weights); task heads live in the fine-tunes",
            replace=True,
        )
    say({"stage": "base", "k": 0, "n": len(names), "message": f"{bid} ready"})
    finetunes: dict[str, ModelRecord] = {}
    for k, name in enumerate(names, start=1):
        fid = finetune_id(suite, name)
        if fid in zoo and _matches(zoo.get(fid), config):
            finetunes[name] = zoo.get(fid)
            bar.skip(config.steps)
            say(
                {
                    "stage": "cached",
                    "task": name,
                    "k": k,
                    "n": len(names),
                    "message": f"{fid} cached",
                }
            )
            continue
        if base_model is None:
            base_model = zoo.load_model(bid)
        task = load_task(
            name, sizes=config.sizes, resolution=config.resolution, max_length=config.max_length
        )
        say(
            {
                "stage": "head",
                "task": name,
                "k": k,
                "n": len(names),
                "message": f"{name}: fitting the head",
            }
        )
        head = make_head(base_model.trunk, task, config, device=dev)
        model = _with_head(base_model, head, config)
        pre = _val_test(model, head, task, dev)

        def step_cb(info: dict[str, Any], name: str = name, k: int = k) -> None:
            say(
                {
                    **info,
                    "stage": "finetune",
                    "task": name,
                    "k": k,
                    "n": len(names),
                    "message": f"{name} ({k}/{len(names)}): step {info['step']}/{info['steps']}",
                }
            )

        t0 = time.perf_counter()
        hist = finetune(model, task, config, device=dev, progress=step_cb, should_stop=should_stop)
        post = _val_test(model, head, task, dev)
        finetunes[name] = zoo.add(
            model,
            arch=config.arch,
            arch_kwargs=_arch_kwargs(task.n_classes, config),
            task=f"{suite}:{name}",
            role="finetune",
            name=fid,
            seed=config.seed,
            parent_id=bid,
            base_id=bid,
            train_config={"suite_config": cfg_d, "layout": LAYOUT_VERSION},
            metrics={
                "test_accuracy": post["test"],
                "val_accuracy": post["val"],
                "pretrained_test_accuracy": pre["test"],
                "pretrained_val_accuracy": pre["val"],
                "head": head.info,
                "seconds": time.perf_counter() - t0,
                "loss": hist["loss"][:: max(1, len(hist["loss"]) // 50)],
                "sources": [list(s) for s in task.sources],
            },
            note=f"fine-tuned backbone with the fixed head of {suite}/{name}",
            replace=True,
        )
        say(
            {
                "stage": "done",
                "task": name,
                "k": k,
                "n": len(names),
                "test_accuracy": post["test"],
                "message": f"{fid}: pretrained {pre['test']:.3f} -> fine-tuned {post['test']:.3f}",
            }
        )
    bar.close()
    return SuiteZoo(config, zoo.get(bid), finetunes)


def _with_head(base: Classifier, head: Head, config: SuiteConfig) -> Classifier:
    model = new_backbone(config, pretrained=False)
    if model.n_classes != head.weight.shape[0]:
        model = Classifier(model.trunk, model.feature_dim, head.weight.shape[0])
        from ..models import ModelSpec

        model.spec = ModelSpec(config.arch, _arch_kwargs(head.weight.shape[0], config))
    model.trunk.load_state_dict(base.trunk.state_dict())
    with torch.no_grad():
        model.head.weight.copy_(head.weight)
        model.head.bias.copy_(head.bias)
    return model


def _val_test(model: Classifier, head: Head, task: Any, dev: torch.device) -> dict[str, float]:
    return {
        s: float(
            evaluate_backbone(model.trunk, None, [head], [task], s, device=dev)[task.name]
            .float()
            .mean()
        )
        for s in ("val", "test")
    }


def load_suite_zoo(zoo: Zoo, suite: str) -> SuiteZoo:
    """The built zoo of ``suite``, with the config it was built with.

    Raises:
        KeyError: not built yet (the message gives the command), or a task is missing.
    """
    bid = base_id(suite)
    if bid not in zoo:
        raise KeyError(
            f"the {suite} suite zoo is not built in {zoo.root}: run "
            f"`python -m core zoo build --suite {suite}` first"
        )
    base = zoo.get(bid)
    config = SuiteConfig.from_dict(base.train_config["suite_config"])
    finetunes = {}
    for name in config.task_names:
        fid = finetune_id(suite, name)
        if fid not in zoo or not _matches(zoo.get(fid), config):
            raise KeyError(
                f"{fid} is missing or was built with another configuration: rerun "
                f"`python -m core zoo build --suite {suite}` (it resumes)"
            )
        finetunes[name] = zoo.get(fid)
    return SuiteZoo(config, base, finetunes)


class _Bars:
    """tqdm progress over all fine-tuning steps (no-op when disabled)."""

    def __init__(self, enabled: bool, total: int):
        self.bar = None
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="step", desc="zoo build", dynamic_ncols=True)

    def update(self, info: dict[str, Any]) -> None:
        if self.bar is None:
            return
        if info.get("stage") == "finetune":
            self.bar.update(1)
            self.bar.set_postfix_str(f"{info['task']} loss {info['loss']:.3f}")
        elif "message" in info and info.get("stage") != "finetune":
            self.bar.write(info["message"])

    def skip(self, n: int) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


__all__ = ["SuiteZoo", "base_id", "build_suite_zoo", "finetune_id", "load_suite_zoo"]
