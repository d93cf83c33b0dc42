"""Every figure builder of core.figures with a realistic input (long model ids, ten classes,
several tasks), for the layout tests. A new ``*_figure`` function must be added here:
tests/figures/test_figure_layout.py fails while one is missing."""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import cache
from pathlib import Path

import numpy as np
import plotly.graph_objects as go
import torch

from core.figures import adapters as fad
from core.figures import benchmark as fb
from core.figures import cluster as fc
from core.figures import geometry as fg
from core.figures import interference as fi
from core.figures import landscape as fl
from core.figures import merge as fm
from core.figures import mix_papers as fmp
from core.figures import mixup as fx
from core.figures import papers as fp
from core.figures import scale as fsc
from core.figures import search as fse
from core.figures import suite as fs
from core.figures import training as ft
from core.landscape.curves import CurveResult
from core.landscape.path import BarrierReport, PathResult
from core.landscape.plane import PlaneResult
from core.merge_eval import ComparisonResult, ComparisonRow, LandscapeResult, MergeEval, SweepResult
from core.papers.merging_at_scale import ScaleStudy

TASKS = ("mnist", "mnist_inverted", "mnist_rotated", "digits")
CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
RNG = np.random.default_rng(0)


def _eval(full: bool = False) -> MergeEval:
    return MergeEval(
        tasks=TASKS,
        accuracy=(0.81, 0.62, 0.7, 0.9),
        loss=(0.6, 1.1, 0.9, 0.3),
        reference=(0.97, 0.95, 0.96, 0.98),
        base=(0.9, 0.1, 0.3, 0.85),
        correct=np.ones(1000, dtype=bool),
        groups=np.repeat(np.arange(4), 250),
        full=full,
    )


def _row(method: str, avg: float, p: float | None) -> ComparisonRow:
    return ComparisonRow(
        method, method, avg, avg - 0.02, avg + 0.02, avg / 0.96, (avg,) * 4, p, 3, 40
    )


def _comparison() -> ComparisonResult:
    names = ["task_arithmetic", "average", "ties", "dare_ties", "breadcrumbs", "model_stock"]
    rows = tuple(
        _row(m, 0.55 + 0.05 * k, None if k == 0 else 10.0 ** -(3 * k)) for k, m in enumerate(names)
    )
    return ComparisonResult(
        rows, TASKS, "task_arithmetic", 0.95, False, (0.97, 0.95, 0.96, 0.98), (0.9, 0.1, 0.3, 0.85)
    )


def _path(label: str, shift: float) -> PathResult:
    t = list(np.linspace(0, 1, 25))
    bump = np.sin(np.pi * np.asarray(t))
    return PathResult(
        t=t,
        loss={"train": list(0.1 + shift * bump), "test": list(0.2 + shift * bump)},
        accuracy={
            "train": list(0.98 - 0.5 * shift * bump),
            "test": list(0.95 - 0.5 * shift * bump),
        },
        n_examples={"train": 5000, "test": 1000},
        n_total={"train": 60000, "test": 10000},
        label=label,
    )


def _paths() -> dict[str, PathResult]:
    return {
        "naive": _path("naive", 1.5),
        "weight matching": _path("weight matching", 0.3),
        "activation matching": _path("activation matching", 0.2),
    }


def _plane() -> PlaneResult:
    xs = list(np.linspace(-0.5, 1.5, 9))
    ys = list(np.linspace(-0.5, 1.5, 9))
    loss = [[0.2 + (x - 0.5) ** 2 + (y - 0.3) ** 2 for x in xs] for y in ys]
    acc = [[max(0.0, 1 - v / 3) for v in row] for row in loss]
    return PlaneResult(
        x=xs,
        y=ys,
        loss={"test": loss, "train": loss},
        accuracy={"test": acc, "train": acc},
        positions=[(0.0, 0.0), (1.0, 0.0), (0.4, 0.9)],
        labels=["mlp-mnist-s1", "mlp-mnist-s2", "π(mlp-mnist-s2)"],
        scale=12.3,
        n_examples={"test": 500, "train": 500},
        n_total={"test": 10000, "train": 60000},
    )


def _reports() -> list[BarrierReport]:
    cols = ("loss_barrier", "loss_barrier_linear", "accuracy_barrier")
    return [
        BarrierReport(name, {s: dict.fromkeys(cols, v) for s in ("train", "test")}, 25)
        for name, v in (("naive", 1.2), ("weight matching", 0.2), ("activation matching", 0.1))
    ]


def _landscape() -> LandscapeResult:
    lams = np.linspace(0, 1, 5)
    acc = RNG.uniform(0.3, 0.9, size=(4, 5, 5))
    return LandscapeResult(
        lams, lams, acc, acc.mean(0), acc.mean(0) / 0.96, TASKS, ("mlp-ft-mnist", "mlp-ft-digits")
    )


def _sweep() -> SweepResult:
    vals = np.linspace(0, 1, 11)
    acc = np.stack([0.5 + 0.4 * np.sin(vals * (k + 1)) / 2 for k in range(4)])
    return SweepResult(
        "task_arithmetic",
        "scale",
        vals,
        acc,
        acc.mean(0),
        acc.mean(0) / 0.96,
        TASKS,
        (0.97, 0.95, 0.96, 0.98),
    )


def _features(n: int = 400) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    labels = np.arange(n) % 10
    means = RNG.normal(size=(10, 2)) * 4
    coords = means[labels] + RNG.normal(size=(n, 2))
    anchors = {
        "class_means": means,
        "classifier_tips": means * 1.3,
        "global_mean": means.mean(0, keepdims=True),
    }
    return coords, labels, anchors


def _nc_runs() -> dict[str, list[dict[str, float]]]:
    keys = ("nc1", "nc2_equinorm", "nc2_equiangular", "etf_distance", "nc3", "nc4")
    return {
        run: [{"epoch": e, **{k: 1.0 / (e + 1 + s) for k in keys}} for e in range(1, 9)]
        for s, run in enumerate(("ERM", "mixup α=1", "CutMix α=1"))
    }


def _photos() -> tuple[torch.Tensor, list[str]]:
    from core.data import load_photos

    photos = load_photos(32)
    names = list(photos)[:6]
    return torch.stack([photos[k] for k in names]), names


def _mix_run() -> dict:
    def method(mixer: str, acc: float, stop: int | None) -> dict:
        return {
            "mixer": mixer,
            "test_accuracy": acc,
            "ci": {"low": acc - 0.02, "high": acc + 0.02, "level": 0.95},
            "mix_until_epoch": stop,
            "reliability": {
                "ece": 0.05,
                "confidence": list(np.linspace(0.05, 0.95, 10)),
                "accuracy": list(np.linspace(0.1, 0.9, 10)),
                "count": [10] * 10,
            },
            "history": {
                "epoch": list(range(1, 9)),
                "train_loss": list(np.linspace(2, 0.3, 8)),
                "test_loss": list(np.linspace(2, 0.5, 8)),
                "test_accuracy": list(np.linspace(0.3, acc, 8)),
            },
        }

    methods = {
        "ERM": method("erm", 0.88, None),
        "mixup (α=1.0)": method("mixup", 0.9, None),
        "CutMix (α=1.0)": method("cutmix", 0.91, None),
        "mixup, stop at 4": method("mixup", 0.9, 4),
        "manifold mixup": method("manifold_mixup", 0.89, None),
    }
    return {
        "task": "fashion_mnist",
        "arch": "cnn",
        "seed": 0,
        "config": {"epochs": 8},
        "methods": methods,
    }


def _benchmark() -> dict:
    names = [
        "pretrained",
        "individual",
        "average",
        "task_arithmetic",
        "ties",
        "regmean",
        "adamerging",
    ]
    rows = [
        {
            "method": m,
            "hyperparameters": {},
            "val_avg": 0.4 + 0.07 * k,
            "test_avg": 0.4 + 0.07 * k,
            "test_avg_ci": [0.39 + 0.07 * k, 0.41 + 0.07 * k],
            "normalized": 0.5 + 0.05 * k,
            "per_task": {t: 0.4 + 0.07 * k for t in TASKS},
        }
        for k, m in enumerate(names)
    ]
    return {"suite": "vision", "rows": rows}


def _gallery() -> dict:
    from core.mixup.gallery import gallery

    x, names = _photos()
    return gallery("cutmix", x, names, seed=0)


def _lam_grid() -> dict:
    from core.mixup.gallery import lam_grid

    x, _ = _photos()
    return {**lam_grid("mixup", x[:2], [0.0, 0.25, 0.5, 0.75, 1.0]), "title": "Mixup"}


def _methods() -> dict:
    from core.mixup.gallery import methods_side_by_side

    x, _ = _photos()
    return methods_side_by_side(x[:2])


def _contingency() -> go.Figure:
    labels = np.arange(300) % 10
    pred = (labels + (RNG.uniform(size=300) < 0.2)) % 10
    return fc.contingency_figure(labels, pred, class_names=list(CLASSES))


def _ppp_result() -> dict:
    """A ``core.recipes.cluster.ppp_clustering``-shaped result for the PPP wrappers."""
    coords, labels = _features()[:2]
    truth = np.arange(len(labels)) % 10
    return {
        "ks": list(range(2, 11)),
        "scores": {
            k: list(RNG.uniform(size=9))
            for k in ("bic", "aic", "stability", "agreement", "confidence", "score")
        },
        "k": 5,
        "truth": truth,
        "labels": labels,
        "class_names": list(CLASSES),
        "coords": coords,
        "posterior": RNG.uniform(0.5, 1.0, size=len(labels)),
    }


def _curve() -> go.Figure:
    res = CurveResult(curve=_path("Bezier curve", 0.1), line=_path("straight line", 1.0), bend={})
    return fl.curve_figure(res)


def _mixup_lambda() -> go.Figure:
    coords, labels, anchors = _features(300)
    lam = RNG.uniform(size=300)
    return fg.mixup_lambda_figure(
        coords,
        lam,
        RNG.uniform(size=300) < 0.3,
        anchors=anchors,
        class_names=list(CLASSES),
        anchor_classes=list(range(10)),
    )


def _search() -> dict:
    """A stored 48-evaluation search, as core.search.load_search returns it."""
    import pandas as pd

    acc = np.clip(0.55 + 0.3 * np.sqrt(np.arange(48) / 48) + RNG.normal(0, 0.04, 48), 0, 1)
    evals = pd.DataFrame(
        {"objective": -acc, "mean_val_accuracy": acc, "best_so_far": np.minimum.accumulate(-acc)}
    )
    summary = {
        "search": "task-arithmetic-layers-mlp-ft-mnist_rotated",
        "objective": "accuracy",
        "test": {"mean_accuracy": float(acc.max()) - 0.02},
    }
    return {"summary": summary, "evals": evals}


def _scale_study() -> ScaleStudy:
    tasks = ["mnist", "fashion", "animal", "faces", "textures", "photos"]
    methods = ["average", "task_arithmetic", "ties", "dare_ties"]
    study = ScaleStudy("vision", tasks, methods, [tasks, tasks[::-1], tasks[1:] + tasks[:1]])
    for o in range(3):
        for k in range(1, 7):
            for j, m in enumerate(methods):
                study.rows.append(
                    {
                        "order": o,
                        "k": k,
                        "method": m,
                        "held_in": 1.0 - (0.06 - 0.01 * j) * (k - 1) - 0.01 * o,
                        "held_out": 1.0 + 0.01 * j * k + 0.005 * o if k < 6 else float("nan"),
                    }
                )
    study.pretrained = {t: 0.6 for t in tasks}
    study.individual = {t: 0.9 for t in tasks}
    return study


def _interference():  # real diagnostics of small task vectors with a network's key names
    from core.merge.diagnostics import interference

    g = torch.Generator().manual_seed(0)
    keys = [f"blocks.{i}.{p}" for i in range(6) for p in ("conv.weight", "bn.weight")]
    base = {k: torch.randn(64, 32, generator=g) for k in keys}
    tvs = [
        {k: 0.1 * torch.randn(64, 32, generator=g) + 0.05 * j * v for k, v in base.items()}
        for j in range(4)
    ]
    return interference(tvs, names=[f"efficientnet-lite0-ft-{t}" for t in TASKS])


@cache
def _mix_paper_records() -> dict:
    """Real records of the mixing-paper studies on tiny settings (make_figure_records.py)."""
    path = Path(__file__).resolve().parent / "data" / "mix_paper_records.json"
    return json.loads(path.read_text())


def _mix_paper(name: str) -> go.Figure:
    return fmp.FIGURES[name](_mix_paper_records()[name])


def _singular():  # a real analysis of two small MLPs
    from core.align import compare_singular_alignment
    from core.models import create_model

    model = create_model("mlp", width=32, depth=2, seed=0)
    sd_b = create_model("mlp", width=32, depth=2, seed=1).state_dict()
    x = torch.rand(64, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    return compare_singular_alignment(
        model,
        model.state_dict(),
        sd_b,
        matchers=("weight matching", "activation matching"),
        x=x,
        top_k=8,
        generator=torch.Generator().manual_seed(0),
    )


def _soup():
    from core.papers.sparse_soups import SoupCycle, SoupResult

    cycles = [
        SoupCycle(
            c,
            1 - 0.5**c,
            [0.9 - 0.02 * c + 0.01 * i for i in range(3)],
            [1 - 0.5**c] * 3,
            0.93 - 0.02 * c,
            1 - 0.5**c,
            0.7 - 0.1 * c,
        )
        for c in (1, 2, 3)
    ]
    return SoupResult(0.95, cycles, {}, task="fashion_mnist")


def _bn_stream():
    from core.papers.unmix_bn import StreamStudy

    rows = [{"stream": "no recompute", "classes_per_batch": 0, "method": "stored", "accuracy": 0.4}]
    for stream, k in (("shuffled", 0), ("label-sorted 1/batch", 1), ("label-sorted 2/batch", 2)):
        for method, acc in (("cumulative", 0.8 - 0.2 / max(k, 0.5)), ("unmixed", 0.82)):
            rows.append(
                {"stream": stream, "classes_per_batch": k, "method": method, "accuracy": acc}
            )
    return StreamStudy(rows, "fashion_mnist")


def _different_init():
    from core.papers.different_init import DifferentInitStudy

    def row(method: str, family: str, ratio: float | None, size: float, acc: float) -> dict:
        ci = {"low": acc - 0.02, "high": acc + 0.02}
        return {
            "method": method,
            "family": family,
            "ratio": ratio,
            "size": size,
            "accuracy": acc,
        } | ci

    rows = [
        row("model A", "endpoint", None, 1.0, 0.9),
        row("model B", "endpoint", None, 1.0, 0.88),
        row("ensemble", "endpoint", None, 2.0, 0.95),
        row("weight matching", "permutation", None, 1.0, 0.6),
        row("activation matching", "permutation", None, 1.0, 0.65),
        row("ZipIt! (partial, 1 layer)", "ZipIt!", None, 1.3, 0.8),
    ]
    for r in (0.0, 0.25, 0.5, 1.0):
        rows.append(row("PLeaS", "PLeaS", r, 1.0 + r, 0.78 + 0.1 * r))
        rows.append(row("partial permutation (no LS)", "PLeaS", r, 1.0 + r, 0.6 + 0.2 * r))
    return DifferentInitStudy(rows, task="digits")


def _ortho():
    from core.papers.orthogonal_adaptation import OrthoStudy

    tasks = ["mnist", "fashion", "animal", "digits", "textures", "photos"]
    variants = ["orthogonal", "lora", "random_fixed"]
    study = OrthoStudy("vision", tasks, variants, rank=4, n_layers=31)
    study.pretrained = {t: 0.6 + 0.03 * i for i, t in enumerate(tasks)}
    study.alone = {v: {t: 0.8 + 0.02 * i for i, t in enumerate(tasks)} for v in variants}
    study.summed = {
        v: {t: 0.5 + 0.1 * k + 0.01 * i for i, t in enumerate(tasks)}
        for k, v in enumerate(variants)
    }
    study.overlap = {"orthogonal": 0.0, "lora": 0.12, "random_fixed": 0.05}
    return study


def _mc_smoe():
    from core.papers.mc_smoe import MCSMoEStudy

    rows = [{"method": "full SMoE", "n_groups": 8, "memory_kb": 420.0, "accuracy": 0.91}]
    for k, method in enumerate(("M-SMoE (frequency-weighted)", "MC-SMoE", "uniform average")):
        for g in (6, 4, 2, 1):
            acc = 0.9 - 0.03 * k - 0.02 * (6 - g)
            rows.append(
                {"method": method, "n_groups": g, "memory_kb": 60.0 * g / (1 + (k == 1)) + 50}
                | {"accuracy": acc}
            )
    for r in rows:
        r |= {"low": r["accuracy"] - 0.02, "high": r["accuracy"] + 0.02, "compressed": False}
    return MCSMoEStudy(rows, task="fashion_mnist")


def _projection_result() -> go.Figure:
    coords, labels, anchors = _features()
    report = {"labels": labels, "class_names": list(CLASSES), "classes": np.arange(10)}
    return fg.projection_result_figure(
        {"report": report, "projection": {"coords": coords, "anchors": anchors}}
    )


def _mixup_result() -> go.Figure:
    coords, _, anchors = _features(300)
    return fg.mixup_result_figure(
        {
            "coords": coords,
            "lam": RNG.uniform(size=300),
            "same_class": RNG.uniform(size=300) < 0.3,
            "anchors": anchors,
            "class_names": list(CLASSES),
            "classes": np.arange(10),
        }
    )


FIGURES: dict[str, Callable[[], go.Figure]] = {
    "task_accuracy_figure": lambda: fm.task_accuracy_figure(_eval()),
    "task_radar_figure": lambda: fm.task_radar_figure(_eval()),
    "landscape_figure": lambda: fm.landscape_figure(_landscape(), point=(0.3, 0.3)),
    "sweep_figure": lambda: fm.sweep_figure(_sweep(), current=0.3),
    "comparison_figure": lambda: fm.comparison_figure(_comparison()),
    "comparison_task_figure": lambda: fm.comparison_task_figure(_comparison()),
    "merge_accuracy_figure": lambda: fm.merge_accuracy_figure(_eval(), chart="radar"),
    "merge_landscape_figure": lambda: fm.merge_landscape_figure(
        {"landscape": _landscape(), "pair": (0, 1), "n_models": 4},
        method="task_arithmetic",
        hyperparameters={"scale": 0.3},
    ),
    "merge_sweep_figure": lambda: fm.merge_sweep_figure({"sweep": _sweep(), "current": 0.3}),
    "merge_comparison_figure": lambda: fm.merge_comparison_figure(_comparison(), chart="tasks"),
    "path_figure": lambda: fl.path_figure(_paths(), title="mlp-mnist-s1 → mlp-mnist-s2 on mnist"),
    "barrier_figure": lambda: fl.barrier_figure(_reports()),
    "interpolation_paths_figure": lambda: fl.interpolation_paths_figure(
        {"paths": _paths(), "barriers": _reports()}, title="mlp-mnist-s1 → mlp-mnist-s2 on mnist"
    ),
    "interpolation_barriers_figure": lambda: fl.interpolation_barriers_figure(
        {"paths": _paths(), "barriers": _reports()}, column="accuracy_barrier", title="Barriers"
    ),
    "plane_figure": lambda: fl.plane_figure(_plane()),
    "curve_figure": _curve,
    "direction_figure": lambda: fl.direction_figure(_path("random direction", 0.5)),
    "nc_epochs_figure": lambda: fg.nc_epochs_figure(_nc_runs()),
    "projection_figure": lambda: fg.projection_figure(
        *_features()[:2], class_names=list(CLASSES), anchors=_features()[2]
    ),
    "etf_figure": lambda: fg.etf_figure(
        np.eye(10) - 0.1, np.eye(10) - 1 / 9, class_names=list(CLASSES)
    ),
    "mixup_lambda_figure": _mixup_lambda,
    "k_selection_figure": lambda: fc.k_selection_figure(
        range(2, 11),
        {
            k: list(RNG.uniform(size=9))
            for k in ("bic", "aic", "stability", "agreement", "confidence", "score")
        },
        chosen=5,
    ),
    "contingency_figure": _contingency,
    "cluster_scatter_figure": lambda: fc.cluster_scatter_figure(*_features()[:2]),
    "ppp_k_figure": lambda: fc.ppp_k_figure(_ppp_result()),
    "ppp_contingency_figure": lambda: fc.ppp_contingency_figure(_ppp_result()),
    "ppp_scatter_figure": lambda: fc.ppp_scatter_figure(_ppp_result()),
    "run_reliability_figure": lambda: fx.run_reliability_figure(_mix_run()),
    "gallery_figure": lambda: fx.gallery_figure(_gallery()),
    "lam_grid_figure": lambda: fx.lam_grid_figure(_lam_grid()),
    "methods_figure": lambda: fx.methods_figure(_methods()),
    "gallery_result_figure": lambda: fx.gallery_result_figure({"gallery": _gallery()}),
    "lam_grid_result_figure": lambda: fx.lam_grid_result_figure({"grid": _lam_grid()}),
    "methods_result_figure": lambda: fx.methods_result_figure({"methods": _methods()}),
    "projection_result_figure": _projection_result,
    "mixup_result_figure": _mixup_result,
    "etf_result_figure": lambda: fg.etf_result_figure(
        {
            "gram": np.eye(10) - 0.1,
            "ideal": np.eye(10) - 1 / 9,
            "class_names": list(CLASSES),
            "classes": list(range(10)),
        }
    ),
    "nc_run_figure": lambda: fg.nc_run_figure(
        {"histories": _nc_runs(), "task": "mnist", "arch": "mlp"}
    ),
    "reliability_figure": lambda: fx.reliability_figure(
        {k: v["reliability"] for k, v in _mix_run()["methods"].items()}
    ),
    "accuracy_figure": lambda: fx.accuracy_figure(_mix_run()),
    "curves_figure": lambda: fx.curves_figure(_mix_run()),
    "early_stopping_figure": lambda: fx.early_stopping_figure(_mix_run()),
    "lam_histogram_figure": lambda: fx.lam_histogram_figure(list(RNG.beta(1, 1, size=500))),
    "history_figure": lambda: ft.history_figure(
        {k: v["history"] for k, v in _mix_run()["methods"].items()}
    ),
    "benchmark_figure": lambda: fb.benchmark_figure(_benchmark()),
    "merging_at_scale_figure": lambda: fsc.merging_at_scale_figure(_scale_study()),
    "search_figure": lambda: fse.search_figure(_search()),
    "cosine_figure": lambda: fi.cosine_figure(_interference()),
    "layer_profile_figure": lambda: fi.layer_profile_figure(_interference()),
    "keep_figure": lambda: fi.keep_figure(_interference(), "dare_ties"),
    "interference_figure": lambda: fi.interference_figure(_interference(), "keep", "ties"),
    "feature_learning_figure": lambda: _mix_paper("feature_learning"),
    "neural_collapse_figure": lambda: _mix_paper("neural_collapse"),
    "supremix_figure": lambda: _mix_paper("supremix"),
    "mochi_figure": lambda: _mix_paper("mochi"),
    "adamixup_figure": lambda: _mix_paper("adamixup"),
    "adautomix_figure": lambda: _mix_paper("adautomix"),
    "attention_labels_figure": lambda: _mix_paper("attention_labels"),
    "dualmix_figure": lambda: _mix_paper("dualmix"),
    "singular_alignment_figure": lambda: fp.singular_alignment_figure(_singular()),
    "singular_overlap_figure": lambda: fp.singular_overlap_figure(
        _singular()["activation matching"]
    ),
    "sparse_soup_figure": lambda: fp.sparse_soup_figure(_soup()),
    "bn_stream_figure": lambda: fp.bn_stream_figure(_bn_stream()),
    "different_init_figure": lambda: fp.different_init_figure(_different_init()),
    "mc_smoe_figure": lambda: fp.mc_smoe_figure(_mc_smoe()),
    "orthogonal_adaptation_figure": lambda: fad.orthogonal_adaptation_figure(_ortho()),
    "nc_models_figure": lambda: fs.nc_models_figure(
        {
            "pretrained": {"nc1": 4.2, "nc2_equinorm": 0.3, "nc3": 0.9, "nc4": 0.2},
            "faces": {"nc1": 0.8, "nc2_equinorm": 0.1, "nc3": 0.4, "nc4": 0.01},
        }
    ),
}
