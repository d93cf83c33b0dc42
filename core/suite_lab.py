"""Live merging on a suite zoo (real pretrained backbones): what the Merge Lab's sliders call.

The protocol is :mod:`core.benchmark.protocol`'s (Ilharco et al., ICLR 2023, arXiv:2212.04089):
the fine-tuned *backbones* are merged and the merged backbone is scored with every task's own
fixed head. A :class:`SuiteLab` loads once what a slider move must not redo:

* the pretrained backbone θ₀, the fine-tunes θᵢ, their task vectors τᵢ = θᵢ − θ₀ and the fixed
  heads (W, b) of every task;
* per task a seeded, stratified subset of the validation (or test) split, already turned into
  the backbone's input (normalised float images / padding-trimmed token ids) on the device;
* one backbone module in evaluation mode whose tensors are overwritten in place by each merge
  (no model rebuild, no ``load_state_dict`` copy), and the individual fine-tunes' accuracy on
  the same samples (for normalised accuracy), computed once;
* for the methods whose result is θ₀ + λ·f(τ) (:data:`core.merge_eval.SCALE_LINEAR`), the
  merged task vector f per setting of the other hyperparameters, so that a λ move costs one
  axpy and the forward passes; task arithmetic is Σ (λ wᵢ) τᵢ written straight into the module.

EfficientNet-Lite0 has BatchNorm. Its fine-tunes keep the ImageNet running statistics
(``freeze_bn``), so by default the merged backbone is evaluated in eval mode with the stored
statistics; ``recompute_bn=True`` re-estimates them on a few training batches of every task
(:func:`core.merge.recompute_batchnorm`, the reset of REPAIR, Jordan et al., arXiv:2211.08403).

:func:`lab_for` keeps one lab per (workspace, suite, settings) and rebuilds it when a model of
the suite was replaced in the zoo (its :func:`fingerprint` changed).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ._checks import check_choice, check_int
from .benchmark.protocol import Head, backbone_input, new_backbone, trunk_state
from .benchmark.zoo_build import base_id, finetune_id, load_suite_zoo
from .data.suites import SUITES, SuiteTask, load_task
from .device import configure_threads, resolve_device
from .merge import METHODS, merge, recompute_batchnorm
from .merge_eval import SCALE_LINEAR
from .params import StateDict, combine_task_vectors
from .zoo import Zoo

DEFAULT_N_PER_TASK = 64  # evaluation examples per task on the slider path (stratified)
DEFAULT_BN_EXAMPLES = 64  # training examples per task for a BatchNorm recompute
MERGED_TV_CACHE = 8  # merged task vectors kept per lab
LAB_CACHE = 4  # labs kept by lab_for
ProgressFn = Callable[[int, int, str], None]  # (done, total, message)


# ----------------------------------------------------------------------------- subsets
def stratified_subset(y: Tensor, n: int, *, seed: int = 0) -> Tensor:
    """Sorted indices of a seeded, stratified subset of ``n`` of the labels ``y``.

    Every class present gets round(n · its share) examples, at least one (and never more than
    it has); the rounding remainder goes to the largest classes. ``n >= len(y)`` gives all.

    Args:
        y: (N,) integer labels.
        n: subset size.
        seed: draws the examples within each class.
    """
    if not isinstance(y, Tensor) or y.ndim != 1 or y.is_floating_point():
        raise TypeError(f"y must be a 1-D integer Tensor, got {type(y).__name__}")
    check_int("n", n, 1)
    if n >= len(y):
        return torch.arange(len(y))
    yn = y.cpu().numpy()
    classes, counts = np.unique(yn, return_counts=True)
    n = max(n, len(classes))
    want = np.maximum(1, np.floor(n * counts / counts.sum()).astype(int))
    want = np.minimum(want, counts)
    for c in np.argsort(-counts, kind="stable"):  # hand out the remainder, largest first
        if want.sum() >= n:
            break
        if want[c] < counts[c]:
            want[c] += 1
    while want.sum() > n:  # the at-least-one rule overshot: trim the largest classes
        c = int(np.argmax(want))
        want[c] -= 1
    rng = np.random.default_rng(seed)
    picked = [
        rng.permutation(np.flatnonzero(yn == c))[:k] for c, k in zip(classes, want, strict=True)
    ]
    return torch.from_numpy(np.sort(np.concatenate(picked))).long()


# ----------------------------------------------------------------------------- records
@dataclass(frozen=True)
class SuiteEval:
    """One merged backbone scored with every task's own head on the lab's subsets.

    Attributes:
        method: the merge method ("pretrained" / "individual" for the references).
        hyperparameters: as passed (JSON-ready).
        per_task: task -> accuracy on its subset.
        individual: task -> accuracy of the task's own fine-tune on the same subset.
        pretrained: task -> accuracy of the pretrained backbone on the same subset.
        split: "val" or "test"; n_per_task: task -> examples scored.
        recompute_bn: whether BatchNorm statistics were re-estimated for the merged backbone.
        seconds: wall time of the merge and the evaluation.
        correct: task -> (n,) bool per-sample correctness (for core.stats).
    """

    method: str
    hyperparameters: dict[str, Any]
    per_task: dict[str, float]
    individual: dict[str, float]
    pretrained: dict[str, float]
    split: str
    n_per_task: dict[str, int]
    recompute_bn: bool
    seconds: float
    correct: dict[str, Tensor] = field(repr=False, default_factory=dict)

    @property
    def average(self) -> float:
        """Mean accuracy over tasks."""
        return float(np.mean(list(self.per_task.values())))

    @property
    def normalized(self) -> dict[str, float]:
        """Per task: merged accuracy / the fine-tune's accuracy on the same samples."""
        return {
            t: a / self.individual[t] if self.individual[t] > 0 else 0.0
            for t, a in self.per_task.items()
        }

    @property
    def average_normalized(self) -> float:
        return float(np.mean(list(self.normalized.values())))

    # The views below make a SuiteEval the shape of core.merge_eval.MergeEval, so the Merge
    # Lab's figures (core.figures.merge.task_accuracy_figure, task_radar_figure) take it.
    @property
    def tasks(self) -> tuple[str, ...]:
        return tuple(self.per_task)

    @property
    def accuracy(self) -> tuple[float, ...]:
        return tuple(self.per_task.values())

    @property
    def reference(self) -> tuple[float, ...]:
        """Per task: the task's own fine-tune on the same samples."""
        return tuple(self.individual[t] for t in self.per_task)

    @property
    def base(self) -> tuple[float, ...]:
        """Per task: the pretrained backbone with the task's head on the same samples."""
        return tuple(self.pretrained[t] for t in self.per_task)

    @property
    def full(self) -> bool:
        return False  # always a (possibly complete) subset of one split; ``split`` says which

    @property
    def groups(self) -> np.ndarray:
        """(M,) task index of each scored sample, tasks in order."""
        return np.repeat(np.arange(len(self.per_task)), [self.n_per_task[t] for t in self.per_task])

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready record (no per-sample tensors)."""
        return {
            "method": self.method,
            "hyperparameters": self.hyperparameters,
            "per_task": self.per_task,
            "average": self.average,
            "normalized": self.normalized,
            "average_normalized": self.average_normalized,
            "individual": self.individual,
            "pretrained": self.pretrained,
            "split": self.split,
            "n_per_task": self.n_per_task,
            "recompute_bn": self.recompute_bn,
            "seconds": self.seconds,
        }


def fingerprint(zoo: Zoo, suite: str) -> tuple[tuple[str, str, str], ...]:
    """(id, sha256, created) of the suite's base and fine-tunes: changes when one is replaced.

    Raises:
        KeyError: the suite zoo is not built (the message gives the command).
    """
    sz = load_suite_zoo(zoo, suite)
    recs = [sz.base, *sz.finetunes.values()]
    return tuple((r.id, r.sha256, r.created) for r in recs)


# ----------------------------------------------------------------------------- the lab
class SuiteLab:
    """Merge a suite zoo's fine-tuned backbones and score them per task, fast.

    Args:
        zoo: the workspace zoo holding ``<suite>-base`` and ``<suite>-ft-<task>``.
        suite: "vision" or "text".
        split: "val" (the default: tuning by eye must not see test) or "test".
        n_per_task: examples per task, a seeded stratified subset of the split (None: all).
        seed: seed of the subsets and of random methods (DARE).
        bn_examples: training examples per task for ``recompute_bn``.
        batch_size: examples per forward pass.
        device: "cpu", "cuda" or "auto".
    """

    def __init__(
        self,
        zoo: Zoo,
        suite: str,
        *,
        split: str = "val",
        n_per_task: int | None = DEFAULT_N_PER_TASK,
        seed: int = 0,
        bn_examples: int = DEFAULT_BN_EXAMPLES,
        batch_size: int = 256,
        device: str | torch.device = "cpu",
    ):
        if not isinstance(zoo, Zoo):
            raise TypeError(f"zoo must be a core.zoo.Zoo, got {type(zoo).__name__}")
        check_choice("suite", suite, list(SUITES))
        check_choice("split", split, ("val", "test"))
        if n_per_task is not None:
            check_int("n_per_task", n_per_task, 1)
        check_int("seed", seed, 0, 2**31 - 1)
        check_int("bn_examples", bn_examples, 1)
        check_int("batch_size", batch_size, 1)
        configure_threads()
        self.zoo, self.suite, self.split = zoo, suite, split
        self.n_per_task_arg, self.seed = n_per_task, seed
        self.batch_size = batch_size
        self.device = resolve_device(device)
        self.fingerprint = fingerprint(zoo, suite)
        sz = load_suite_zoo(zoo, suite)
        self.config = sz.config
        self.tasks: list[str] = list(sz.config.task_names)
        cfg = sz.config
        self.suite_tasks: list[SuiteTask] = [
            load_task(t, sizes=cfg.sizes, resolution=cfg.resolution, max_length=cfg.max_length)
            for t in self.tasks
        ]
        dev = self.device
        self.base: StateDict = {
            k: v.to(dev) for k, v in trunk_state(zoo.state_dict(base_id(suite))).items()
        }
        self.finetunes: list[StateDict] = []
        self.heads: list[Head] = []
        for t in self.tasks:
            sd = zoo.state_dict(finetune_id(suite, t))
            self.heads.append(
                Head(sd["head.weight"].float().to(dev), sd["head.bias"].float().to(dev))
            )
            self.finetunes.append({k: v.to(dev) for k, v in trunk_state(sd).items()})
        self.float_keys = [k for k, v in self.base.items() if v.is_floating_point()]
        self.task_vectors: list[StateDict] = [  # τᵢ = θᵢ − θ₀, floating keys
            {k: ft[k] - self.base[k] for k in self.float_keys} for ft in self.finetunes
        ]
        self.trunk = new_backbone(cfg, pretrained=False).trunk.to(dev).eval()
        for p in self.trunk.parameters():
            p.requires_grad_(False)
        self._live = {"trunk." + k: v for k, v in self.trunk.state_dict().items()}
        missing = set(self.base) ^ set(self._live)
        if missing:
            raise ValueError(
                f"stored backbone keys differ from the architecture's: {sorted(missing)[:5]}"
            )
        # evaluation subsets, pre-transformed, on the device
        self.eval_x: list[Tensor] = []
        self.eval_y: list[Tensor] = []
        for task in self.suite_tasks:
            x, y = task.split(split)
            idx = stratified_subset(y, n_per_task or len(y), seed=seed)
            self.eval_x.append(backbone_input(suite, x[idx]).to(dev))
            self.eval_y.append(y[idx].to(dev))
        self.bn_examples = bn_examples
        self._bn_x: Tensor | None = None
        self._merged_tv: OrderedDict[tuple[Any, ...], StateDict] = OrderedDict()
        self._lock = threading.Lock()
        self._refs: dict[str, dict[str, Any]] = {}

    # ---------------------------------------------------------------- properties
    @property
    def n_models(self) -> int:
        return len(self.finetunes)

    @property
    def n_per_task(self) -> dict[str, int]:
        return {t: len(y) for t, y in zip(self.tasks, self.eval_y, strict=True)}

    @property
    def has_batchnorm(self) -> bool:
        return any(
            isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in self.trunk.modules()
        )

    def available_methods(self) -> list[str]:
        """Registered methods a slider can run here (data-free, one merged model, N models)."""
        out = []
        for e in METHODS.entries():
            if "two_models" in e.tags and self.n_models != 2:
                continue
            if "data_dependent" in e.tags or "per_task" in e.tags:
                continue
            out.append(e.name)
        return out

    def is_stale(self) -> bool:
        """True when a model of the suite was replaced in the zoo since the lab loaded it."""
        try:
            return fingerprint(self.zoo, self.suite) != self.fingerprint
        except KeyError:
            return True

    # ---------------------------------------------------------------- merging
    def _check(self, method: str, hyper: Mapping[str, Any]) -> dict[str, Any]:
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS.names()}, got {method!r}")
        if method not in self.available_methods():
            raise ValueError(
                f"method {method!r} does not run on the slider path of a {self.n_models}-task "
                f"suite (data-dependent, per-task or two-model); expected one of "
                f"{self.available_methods()}"
            )
        if not isinstance(hyper, Mapping):
            raise TypeError(f"hyperparameters must be a mapping, got {type(hyper).__name__}")
        names = {p.name for p in METHODS[method].params}
        unknown = sorted(set(hyper) - names)
        if unknown:
            raise ValueError(
                f"hyperparameters of {method!r} must be among {sorted(names)}, got {unknown}"
            )
        hyper = dict(hyper)
        w = hyper.get("weights")
        if w is not None:
            if isinstance(w, Mapping):  # per-task weights by task name
                bad = sorted(set(w) - set(self.tasks))
                if bad:
                    raise ValueError(f"weights must name tasks among {self.tasks}, got {bad}")
                w = [float(w.get(t, 1.0)) for t in self.tasks]
            if len(w) != self.n_models:
                raise ValueError(f"weights must have {self.n_models} entries, got {len(w)}")
            hyper["weights"] = [float(v) for v in w]
        return hyper

    def merge(self, method: str, hyperparameters: Mapping[str, Any] | None = None) -> StateDict:
        """The merged backbone (``trunk.*`` keys) of ``method`` with ``hyperparameters``.

        ``weights`` may be a list (task order) or a mapping task -> weight.
        """
        hyper = self._check(method, hyperparameters or {})
        if method == "task_arithmetic":
            return self.combine(self._coefficients(hyper))
        if method in SCALE_LINEAR:
            return self._incremental(method, hyper)
        gen = torch.Generator().manual_seed(self.seed)
        base = self.base if "needs_base" in METHODS[method].tags else None
        return merge(method, self.finetunes, base=base, generator=gen, **hyper)

    def _coefficients(self, hyper: Mapping[str, Any]) -> list[float]:
        scale = float(hyper.get("scale", METHODS["task_arithmetic"].defaults().get("scale", 1.0)))
        weights = hyper.get("weights") or [1.0] * self.n_models
        return [scale * float(w) for w in weights]

    def combine(self, coefficients: Sequence[float]) -> StateDict:
        """θ₀ + Σᵢ cᵢ τᵢ from the cached task vectors."""
        if len(coefficients) != self.n_models:
            raise ValueError(
                f"coefficients must have {self.n_models} entries, got {len(coefficients)}"
            )
        return combine_task_vectors(self.base, self.task_vectors, coefficients, self.float_keys)

    def _incremental(self, method: str, hyper: Mapping[str, Any]) -> StateDict:
        """θ₀ + λ·f(τ) with f cached per (method, other hyperparameters)."""
        scale = float(hyper.get("scale", METHODS[method].defaults().get("scale", 1.0)))
        rest = {k: v for k, v in hyper.items() if k != "scale"}
        key = (method, repr(sorted(rest.items())), self.seed)
        with self._lock:
            tau = self._merged_tv.get(key)
            if tau is not None:
                self._merged_tv.move_to_end(key)
        if tau is None:
            gen = torch.Generator().manual_seed(self.seed)
            merged = merge(method, self.finetunes, base=self.base, generator=gen, scale=1.0, **rest)
            tau = {k: merged[k] - self.base[k] for k in self.float_keys}
            with self._lock:
                self._merged_tv[key] = tau
                while len(self._merged_tv) > MERGED_TV_CACHE:
                    self._merged_tv.popitem(last=False)
        out = dict(self.base)
        for k in self.float_keys:
            out[k] = torch.add(self.base[k], tau[k], alpha=scale)
        return out

    # ---------------------------------------------------------------- evaluation
    def bn_inputs(self) -> Tensor:
        """``bn_examples`` training inputs of every task (seeded, stratified), cached."""
        if self._bn_x is None:
            if self.suite != "vision":
                raise ValueError(f"recompute_bn needs a BatchNorm backbone; {self.suite} has none")
            xs = []
            for task in self.suite_tasks:
                idx = stratified_subset(task.y_train, self.bn_examples, seed=self.seed)
                xs.append(backbone_input(self.suite, task.x_train[idx]))
            self._bn_x = torch.cat(xs).to(self.device)
        return self._bn_x

    def _load(self, sd: Mapping[str, Tensor]) -> None:
        missing = set(self._live) - set(sd)
        if missing:
            raise ValueError(f"sd must hold every backbone key; missing {sorted(missing)[:5]}")
        with torch.no_grad():
            for k, live in self._live.items():
                live.copy_(sd[k])

    @torch.inference_mode()
    def predict(self, sd: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Task -> (n,) bool correctness of the backbone ``sd`` with each task's own head."""
        self._load(sd)
        out = {}
        for t, x, y, head in zip(self.tasks, self.eval_x, self.eval_y, self.heads, strict=True):
            preds = []
            for xb in x.split(self.batch_size):
                f = self.trunk(xb).float()  # (B, D)
                preds.append((f @ head.weight.T + head.bias).argmax(1))
            out[t] = (torch.cat(preds) == y).cpu()
        return out

    def references(self) -> dict[str, dict[str, Any]]:
        """Accuracy per task of the pretrained backbone and of each task's own fine-tune on
        the same subsets (computed once)."""
        if not self._refs:
            pre = self.predict(self.base)
            ind = {}
            for k, t in enumerate(self.tasks):
                ind[t] = self.predict(self.finetunes[k])[t]
            self._refs = {
                "pretrained": {t: float(c.float().mean()) for t, c in pre.items()},
                "individual": {t: float(c.float().mean()) for t, c in ind.items()},
            }
        return self._refs

    def run(
        self,
        method: str,
        hyperparameters: Mapping[str, Any] | None = None,
        *,
        recompute_bn: bool = False,
        progress: ProgressFn | None = None,
    ) -> SuiteEval:
        """Merge with ``method`` and score the merged backbone on every task.

        Args:
            method: a name from :meth:`available_methods`.
            hyperparameters: the method's hyperparameters (``weights``: list or task -> w).
            recompute_bn: re-estimate BatchNorm statistics on training batches first.
            progress: ``progress(done, total, message)`` after the merge and each task.
        """
        if not isinstance(recompute_bn, bool):
            raise TypeError(f"recompute_bn must be a bool, got {type(recompute_bn).__name__}")
        refs = self.references()
        t0 = time.perf_counter()
        total = len(self.tasks) + 1 + int(recompute_bn)
        sd = self.merge(method, hyperparameters)
        done = 1
        if progress is not None:
            progress(done, total, f"merged with {method}")
        if recompute_bn:
            sd = self.recompute_bn(sd)
            done += 1
            if progress is not None:
                progress(done, total, "BatchNorm statistics recomputed")
        correct: dict[str, Tensor] = {}
        self._load(sd)
        with torch.inference_mode():
            for t, x, y, head in zip(self.tasks, self.eval_x, self.eval_y, self.heads, strict=True):
                preds = [
                    (self.trunk(xb).float() @ head.weight.T + head.bias).argmax(1)
                    for xb in x.split(self.batch_size)
                ]
                correct[t] = (torch.cat(preds) == y).cpu()
                done += 1
                if progress is not None:
                    progress(done, total, f"scored {t}")
        return SuiteEval(
            method=method,
            hyperparameters=_jsonable(hyperparameters or {}),
            per_task={t: float(c.float().mean()) for t, c in correct.items()},
            individual=dict(refs["individual"]),
            pretrained=dict(refs["pretrained"]),
            split=self.split,
            n_per_task=self.n_per_task,
            recompute_bn=recompute_bn,
            seconds=time.perf_counter() - t0,
            correct=correct,
        )

    def recompute_bn(self, sd: Mapping[str, Tensor]) -> StateDict:
        """``sd`` with BatchNorm statistics re-estimated on :meth:`bn_inputs`."""
        plain = {k.removeprefix("trunk."): v for k, v in sd.items()}
        new = recompute_batchnorm(self.trunk, plain, self.bn_inputs(), batch_size=self.batch_size)
        return {"trunk." + k: v for k, v in new.items()}


def _jsonable(d: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, Mapping):
            out[k] = {str(a): float(b) for a, b in v.items()}
        elif isinstance(v, list | tuple):
            out[k] = [float(x) if isinstance(x, int | float) else x for x in v]
        else:
            out[k] = v
    return out


_LABS: OrderedDict[tuple[Any, ...], SuiteLab] = OrderedDict()
_LABS_LOCK = threading.Lock()


def lab_for(
    zoo: Zoo,
    suite: str,
    *,
    split: str = "val",
    n_per_task: int | None = DEFAULT_N_PER_TASK,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> SuiteLab:
    """A cached :class:`SuiteLab` (at most :data:`LAB_CACHE`), rebuilt when a model of the suite
    was replaced in the zoo since it was loaded."""
    if not isinstance(zoo, Zoo):
        raise TypeError(f"zoo must be a core.zoo.Zoo, got {type(zoo).__name__}")
    key = (str(zoo.root), suite, split, n_per_task, seed, str(resolve_device(device)))
    with _LABS_LOCK:
        lab = _LABS.get(key)
    if lab is not None and not lab.is_stale():
        with _LABS_LOCK:
            _LABS.move_to_end(key)
        return lab
    lab = SuiteLab(zoo, suite, split=split, n_per_task=n_per_task, seed=seed, device=device)
    with _LABS_LOCK:
        _LABS[key] = lab
        while len(_LABS) > LAB_CACHE:
            _LABS.popitem(last=False)
    return lab


# ----------------------------------------------------------------------------- comparison
def validation_tuned_comparison(
    zoo: Zoo,
    suite: str,
    *,
    methods: Sequence[str] | None = None,
    quick: bool = True,
    device: str | torch.device = "cpu",
    settings: Any = None,
    store: bool = True,
    progress: ProgressFn | None = None,
) -> dict[str, Any]:
    """The Merge Lab's comparison tab on a suite: every applicable method with its
    hyperparameters tuned on validation and its test accuracy with a bootstrap CI.

    This is :func:`core.benchmark.run.run_benchmark` (the papers' grids, test untouched while
    tuning, stratified bootstrap over tasks, McNemar against task arithmetic), reshaped for a
    table: ``{"suite", "rows": [{"method", "hyperparameters", "val_avg", "test_avg",
    "test_avg_ci", "normalized", "per_task", ...}], "skipped", "searched", ...}`` — the
    benchmark's own record, stored in the workspace like ``python -m core benchmark`` does
    when ``store`` (the Benchmark page then shows it too).

    Args:
        zoo, suite, device: as for :class:`SuiteLab`.
        methods: restrict to these registered methods (default: every applicable one).
        quick: the quick grids and cheaper data-dependent methods (the default: seconds to
            minutes on a CPU); False for the papers' full grids.
        settings: a :class:`core.benchmark.run.BenchmarkSettings` overriding the costs.
        store: keep the record in the workspace (:func:`core.benchmark.report.store_results`).
        progress: ``progress(done, total, message)`` per method and grid point.
    """
    from .benchmark.report import check_results, store_results
    from .benchmark.run import BenchmarkSettings, run_benchmark

    if not isinstance(zoo, Zoo):
        raise TypeError(f"zoo must be a core.zoo.Zoo, got {type(zoo).__name__}")
    check_choice("suite", suite, list(SUITES))
    if not isinstance(quick, bool):
        raise TypeError(f"quick must be a bool, got {type(quick).__name__}")
    if settings is not None and not isinstance(settings, BenchmarkSettings):
        raise TypeError(f"settings must be a BenchmarkSettings, got {type(settings).__name__}")
    if methods is not None:
        if isinstance(methods, str):
            raise TypeError("methods must be a sequence of method names, got a str")
        unknown = [m for m in methods if m not in METHODS]
        if unknown:
            raise ValueError(f"methods must be among {METHODS.names()}, got {unknown}")

    def relay(info: dict[str, Any]) -> None:
        if progress is not None:
            progress(int(info["k"]), int(info["n"]), str(info["message"]))

    res = run_benchmark(
        zoo, suite, quick=quick, methods=methods, device=device, settings=settings, progress=relay
    )
    res = check_results(res)
    if store:
        store_results(zoo, res)
    return res


def comparison_rows(res: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The comparison's rows for a table, merges sorted by test average (references first):
    method, tuned hyperparameters, validation / test average, CI bounds, normalised accuracy,
    McNemar p against task arithmetic."""
    from .benchmark.report import check_results

    res = check_results(res)
    refs = [r for r in res["rows"] if r["method"] in ("pretrained", "individual")]
    merges = sorted(
        (r for r in res["rows"] if r["method"] not in ("pretrained", "individual")),
        key=lambda r: -r["test_avg"],
    )
    out = []
    for r in [*refs, *merges]:
        mc = r.get("mcnemar_vs_task_arithmetic") or {}
        out.append(
            {
                "method": r["method"],
                "hyperparameters": dict(r["hyperparameters"]),
                "val_avg": r["val_avg"],
                "test_avg": r["test_avg"],
                "ci_low": r["test_avg_ci"][0],
                "ci_high": r["test_avg_ci"][1],
                "normalized": r["normalized"],
                "p_vs_task_arithmetic": mc.get("p_value"),
                "per_task": dict(r["per_task"]),
            }
        )
    return out


__all__ = [
    "DEFAULT_N_PER_TASK",
    "SuiteEval",
    "SuiteLab",
    "comparison_rows",
    "fingerprint",
    "lab_for",
    "stratified_subset",
    "validation_tuned_comparison",
]
