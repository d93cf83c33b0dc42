"""One seed loop for every paper study.

:func:`run_seeds` validates the methods and seeds, runs each method once per seed (seed-major,
so per-seed data is built once and shared by the methods), reports progress as one fraction
over all runs, stops when asked, and returns the per-run outputs by method as
:class:`SeedRuns`, whose helpers pool, average and compare them. A study supplies only what is
its own: ``run_one`` (train and measure one method on one seed) and, where the seed fixes the
data, ``setup``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, is_dataclass
from typing import Any

import numpy as np

from ..._checks import check_int
from ...device import configure_threads
from ...stats import bootstrap_ci, paired_bootstrap_ci
from ._common import ProgressFn, StopFn, check_stop, report


@dataclass(frozen=True)
class SeedRun:
    """One (seed, method) run as a study's ``run_one`` sees it."""

    method: str
    seed: int
    index: int  # position of the seed in ``seeds``: 0 is the run whose figure data is kept
    data: Any  # what ``setup(seed)`` returned for this seed; None without a setup
    progress: ProgressFn  # give the trainer's progress dicts here; run_seeds adds the rest
    should_stop: StopFn | None  # the study's cancel flag, for its trainer

    @property
    def trainer_kwargs(self) -> dict[str, Any]:
        """``seed``, ``progress`` and ``should_stop`` as keyword arguments for a trainer."""
        return {"seed": self.seed, "progress": self.progress, "should_stop": self.should_stop}


@dataclass(frozen=True)
class SeedRuns:
    """The outputs of :func:`run_seeds`, by method and in seed order."""

    methods: tuple[str, ...]
    seeds: tuple[int, ...]
    outputs: dict[str, list[dict[str, Any]]]  # method -> one output mapping per seed
    data: list[Any]  # setup(seed) per seed (None entries without a setup)

    def values(self, method: str, key: str) -> list[Any]:
        """``output[key]`` of each seed's run of ``method``."""
        if method not in self.outputs:
            raise ValueError(f"method must be one of {list(self.methods)}, got {method!r}")
        missing = [i for i, o in enumerate(self.outputs[method]) if key not in o]
        if missing:
            raise ValueError(
                f"key must be in every output of {method!r}, got {key!r} (missing for seeds "
                f"{[self.seeds[i] for i in missing]})"
            )
        return [o[key] for o in self.outputs[method]]

    def pooled(self, method: str, key: str) -> np.ndarray:
        """The per-seed sequences ``output[key]`` of ``method`` concatenated: (sum of lengths,)."""
        return np.concatenate([np.asarray(v) for v in self.values(method, key)])

    def mean_sd(self, method: str, key: str) -> dict[str, Any]:
        """Mean and sample standard deviation (ddof 1; None for one seed) of a per-seed number."""
        v = [float(x) for x in self.values(method, key)]
        return {
            "mean": float(np.mean(v)),
            "sd": float(np.std(v, ddof=1)) if len(v) > 1 else None,
            "n": len(v),
            "per_seed": v,
        }

    def by_method(self, key: str) -> dict[str, list[Any]]:
        """method -> ``output[key]`` per seed (the per-seed lists a record stores)."""
        return {m: self.values(m, key) for m in self.methods}

    def record(self, study: str, config: Any, **fields: Any) -> dict[str, Any]:
        """A study record: study name, config (a dataclass), seeds, methods, then ``fields``."""
        if not is_dataclass(config) or isinstance(config, type):
            raise TypeError(f"config must be a dataclass instance, got {type(config).__name__}")
        head = {"study": study, "config": asdict(config), "seeds": list(self.seeds)}
        return {**head, "methods": list(self.methods), **fields}

    def accuracy_summary(
        self, name: str = "accuracy", per_seed: str = "per_seed", key: str = "correct"
    ) -> dict[str, dict[str, Any]]:
        """method -> {name: pooled accuracy CI, per_seed: accuracy of each seed's run}."""
        return {
            m: {
                name: self.accuracy(m, key),
                per_seed: [float(np.mean(v)) for v in self.values(m, key)],
            }
            for m in self.methods
        }

    def accuracy(self, method: str, key: str = "correct") -> dict[str, Any]:
        """Percentile bootstrap CI of the accuracy over the pooled per-sample correctness."""
        return bootstrap_ci(self.pooled(method, key).astype(bool)).to_dict()

    def paired_gap(self, method: str, ref: str, key: str = "correct") -> dict[str, Any]:
        """Paired bootstrap CI of accuracy(method) − accuracy(ref) on the same pooled samples."""
        a = self.pooled(method, key).astype(bool)
        b = self.pooled(ref, key).astype(bool)
        return paired_bootstrap_ci(a, b).to_dict()


def run_seeds(
    run_one: Callable[[SeedRun], Mapping[str, Any]],
    methods: Sequence[str],
    seeds: Sequence[int],
    allowed: Sequence[str],
    *,
    setup: Callable[[int], Any] | None = None,
    progress: ProgressFn | None = None,
    should_stop: StopFn | None = None,
) -> SeedRuns:
    """Run every method on every seed: for each seed, ``setup(seed)`` once, then ``run_one``
    per method in the given order.

    Progress: each dict that ``run_one`` gives to ``SeedRun.progress`` is passed on with
    ``method``, ``seed`` and ``fraction`` (of all runs, in [0, 1]) added; within a run the
    fraction advances by ``step / steps`` when the dict has both, else ``epoch / epochs``.

    Args:
        run_one: trains and measures one method on one seed; returns a mapping of outputs.
        methods: non-empty, distinct names drawn from ``allowed``.
        seeds: non-empty, distinct ints >= 0.
        allowed: the study's method names.
        setup: builds what the seed fixes for all methods (data, features); None for nothing.
        progress: receives the progress dicts; should_stop: polled before each run (and by
            the trainers ``run_one`` passes it to); raises :class:`core.train.TrainingCancelled`.
    """
    if not callable(run_one):
        raise TypeError(f"run_one must be callable, got {type(run_one).__name__}")
    if setup is not None and not callable(setup):
        raise TypeError(f"setup must be callable or None, got {type(setup).__name__}")
    allowed = tuple(allowed)
    if isinstance(methods, str) or not methods:
        raise ValueError(f"methods must be a non-empty sequence of names, got {methods!r}")
    methods = tuple(methods)
    bad = [m for m in methods if m not in allowed]
    if bad or len(set(methods)) < len(methods):
        raise ValueError(
            f"methods must be distinct names from {list(allowed)}, got {list(methods)}"
        )
    if isinstance(seeds, str) or not seeds:
        raise ValueError(f"seeds must be a non-empty sequence of ints, got {seeds!r}")
    seeds = tuple(check_int("seed", s, 0) for s in seeds)
    if len(set(seeds)) < len(seeds):
        raise ValueError(f"seeds must be distinct, got {list(seeds)}")
    configure_threads()
    total = len(seeds) * len(methods)
    outputs: dict[str, list[dict[str, Any]]] = {m: [] for m in methods}
    data: list[Any] = []
    for si, seed in enumerate(seeds):
        check_stop(should_stop, f"seed {seed}")
        seed_data = setup(seed) if setup is not None else None
        data.append(seed_data)
        for mi, method in enumerate(methods):
            check_stop(should_stop, f"seed {seed}, method {method}")
            done = si * len(methods) + mi

            def prog(
                info: dict[str, Any], done: int = done, m: str = method, s: int = seed
            ) -> None:
                frac = (done + _within(info)) / total
                report(progress, **{"method": m, **info, "seed": s, "fraction": min(frac, 1.0)})

            out = run_one(SeedRun(method, seed, si, seed_data, prog, should_stop))
            if not isinstance(out, Mapping):
                raise TypeError(
                    f"run_one must return a mapping of outputs, got {type(out).__name__} "
                    f"for method {method!r}, seed {seed}"
                )
            outputs[method].append(dict(out))
    return SeedRuns(methods, seeds, outputs, data)


def _within(info: Mapping[str, Any]) -> float:
    """The fraction of one run done, from a trainer's progress dict (0 when it says nothing)."""
    for done, of in (("step", "steps"), ("epoch", "epochs")):
        if done in info and of in info:
            return min(max(float(info[done]) / max(float(info[of]), 1.0), 0.0), 1.0)
    return 0.0
