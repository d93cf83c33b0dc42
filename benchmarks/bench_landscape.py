"""Benchmark: interpolation paths, planes and weight matching on the default zoo's models.

    python benchmarks/bench_landscape.py [--workspace PATH] [--repeats 3]

* Path evaluation, 25 points between mlp-mnist-s1 and mlp-mnist-s2 (MLP 3x512) on 10,000
  inputs (train 8,000 + test 2,000: MNIST and inverted MNIST), both splits, endpoints included:
  ``core.landscape.interpolate`` against loss-landscapes' ``linear_interpolation`` (one metric
  over the same 10,000 inputs, ``deepcopy_model=True`` so it does not mutate the start model)
  and against 25 plain forward passes over the same inputs (the floor: the work itself).
* Plane: 21x21 grid through mlp-mnist-s1, mlp-mnist-s2 and the weight-matched s2, default
  evaluation subset (1,000 per split); time to the coarse picture and to the full grid.
* Weight matching: MLP 3x512 and resnet20 (width 8), s1 vs s2.

Models come from the zoo at ``--workspace`` (default: a folder in the temp dir); missing ones are
trained there exactly as ``core.zoo.ensure_default`` trains them (same plan, seeds and
hyperparameters). On a shared machine run with ``MIXMERGE_THREADS=1``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.align import MatchingInfo, apply_permutation, spec_for, weight_matching  # noqa: E402
from core.data import get_task  # noqa: E402
from core.device import configure_threads, cpu_model  # noqa: E402
from core.landscape import interpolate, plane  # noqa: E402
from core.models import create_model  # noqa: E402
from core.train import TrainConfig, train  # noqa: E402
from core.zoo import DEFAULT_PLAN, Zoo  # noqa: E402


def _models(workspace: Path) -> dict[str, tuple[torch.nn.Module, dict]]:
    """mlp/resnet20 mnist s1/s2 from the zoo at ``workspace``; missing ones are trained exactly
    as ``core.zoo.ensure_default`` trains them (same plan, seeds, hyperparameters) and stored
    there, so a rerun reuses them."""
    want = {
        f"{a}-mnist-s{s}": (a, kw, ep, lr, s)
        for a, kw, ep, lr in DEFAULT_PLAN.independent
        if a in ("mlp", "resnet20")
        for s in DEFAULT_PLAN.independent_seeds
    }
    zoo = Zoo(workspace)
    out = {}
    ds = get_task(DEFAULT_PLAN.independent_task)
    for mid, (arch, kw, epochs, lr, seed) in want.items():
        if mid not in zoo:
            print(f"training {mid} ({epochs} epochs) into {workspace}…", flush=True)
            cfg = TrainConfig(epochs=epochs, lr=lr, seed=seed)
            m = create_model(arch, seed=seed, **kw)
            train(m, ds.x_train, ds.y_train, cfg, device="cpu")
            zoo.add(
                m,
                arch=arch,
                arch_kwargs=kw,
                task=DEFAULT_PLAN.independent_task,
                role="independent",
                name=mid,
                seed=seed,
                train_config=cfg.to_dict(),
                replace=True,
            )
        m = zoo.load_model(mid).eval()
        out[mid] = (m, {k: v.detach().clone() for k, v in m.state_dict().items()})
    return out


def _timeit(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--workspace",
        type=Path,
        default=Path(tempfile.gettempdir()) / "mixmerge-bench-zoo",
        help="zoo holding (or receiving) the default models",
    )
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    configure_threads()
    models = _models(args.workspace)
    mlp, sd_a = models["mlp-mnist-s1"]
    _, sd_b = models["mlp-mnist-s2"]

    mn, inv = get_task("mnist"), get_task("mnist_inverted")
    data = {
        "train": (torch.cat([mn.x_train, inv.x_train]), torch.cat([mn.y_train, inv.y_train])),
        "test": (torch.cat([mn.x_test, inv.x_test]), torch.cat([mn.y_test, inv.y_test])),
    }
    x_all = torch.cat([data["train"][0], data["test"][0]])  # (10000, 1, 28, 28)
    y_all = torch.cat([data["train"][1], data["test"][1]])
    n_in = len(x_all)
    bs = 2048

    def ours() -> None:
        interpolate(mlp, sd_a, sd_b, data, n_points=25, max_examples=None, batch_size=bs)

    def floor() -> None:
        with torch.inference_mode():
            for _ in range(25):
                for xb in x_all.split(bs):
                    mlp(xb)

    rows: list[tuple[str, str, float, str]] = []
    contenders = {"floor": floor, "ours": ours}
    try:
        import loss_landscapes
        from loss_landscapes.metrics import Loss

        end = create_model("mlp", seed=0, **mlp.spec.kwargs).eval()
        end.load_state_dict(sd_b)
        metric = Loss(F.cross_entropy, x_all, y_all)
        contenders["ll"] = lambda: loss_landscapes.linear_interpolation(
            mlp, end, metric, steps=25, deepcopy_model=True
        )
    except ImportError:
        pass
    # interleaved repeats, so drifting load on a shared machine hits every contender alike
    times: dict[str, list[float]] = {k: [] for k in contenders}
    for _ in range(args.repeats):
        for k, fn in contenders.items():
            times[k].append(_timeit(fn, 1))
    t_floor, t_ours = statistics.median(times["floor"]), statistics.median(times["ours"])
    rows.append(
        ("path, 25 points, 10k inputs", "25 plain forward passes (floor)", t_floor, "1.00x")
    )
    rows.append(
        (
            "path, 25 points, 10k inputs",
            "core.landscape.interpolate (train+test, endpoints)",
            t_ours,
            f"{t_ours / t_floor:.2f}x floor",
        )
    )
    if "ll" in times:
        t_ll = statistics.median(times["ll"])
        rows.append(
            (
                "path, 25 points, 10k inputs",
                "loss-landscapes linear_interpolation (one metric, no t=0)",
                t_ll,
                f"ours {t_ours / t_ll:.2f}x; {t_ll / t_floor:.2f}x floor",
            )
        )
    else:
        rows.append(
            ("path, 25 points, 10k inputs", "loss-landscapes (not installed)", float("nan"), "")
        )
    print("path times (s):", {k: [round(t, 2) for t in v] for k, v in times.items()}, flush=True)

    spec = spec_for(mlp)
    info = MatchingInfo()
    t_wm = _timeit(
        lambda: weight_matching(
            spec, sd_a, sd_b, generator=torch.Generator().manual_seed(0), info=info
        ),
        args.repeats,
    )
    rows.append(
        (
            "weight matching",
            f"MLP 3x512 ({info.sweeps // args.repeats} sweeps)",
            t_wm,
            "target < 1 s",
        )
    )
    sd_c = apply_permutation(spec, weight_matching(spec, sd_a, sd_b), sd_b)
    rn, rsa = models["resnet20-mnist-s1"]
    _, rsb = models["resnet20-mnist-s2"]
    rinfo = MatchingInfo()
    t_rwm = _timeit(
        lambda: weight_matching(
            spec_for(rn), rsa, rsb, generator=torch.Generator().manual_seed(0), info=rinfo
        ),
        args.repeats,
    )
    rows.append(
        ("weight matching", f"resnet20 width 8 ({rinfo.sweeps // args.repeats} sweeps)", t_rwm, "")
    )

    marks: dict[str, float] = {}
    start = time.perf_counter()

    def first_level(_res: object) -> None:
        marks.setdefault("coarse", time.perf_counter() - start)

    res = plane(mlp, [sd_a, sd_b, sd_c], data, resolution=21, on_level=first_level)
    total = time.perf_counter() - start
    n_sub = sum(res.n_examples.values())
    rows.append(
        (
            "plane 21x21, 3 MLPs",
            f"coarse 5x5 picture ({n_sub} inputs per point)",
            marks["coarse"],
            "target < 1 s",
        )
    )
    rows.append(("plane 21x21, 3 MLPs", "full grid (441 points)", total, "target < 15 s"))

    print(
        f"\nMachine: {cpu_model()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads; {n_in} inputs; median of {args.repeats}\n"
    )
    print("| task | tool | seconds | ratio |\n|---|---|---|---|")
    for task, tool, sec, ratio in rows:
        print(f"| {task} | {tool} | {sec:.3f} | {ratio} |")


if __name__ == "__main__":
    main()
