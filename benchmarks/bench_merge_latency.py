"""Merge Lab slider latency: time from new coefficients to updated per-task metrics.

Measures, on the default zoo (built in a temporary workspace when missing), ~50 random slider
moves for task arithmetic and TIES:

* **lab, subset** — the Merge Lab's path: ``MergeLab.run`` (core.merge.merge on the cached
  source state dicts + functional_call evaluation on the seeded subset, 250 per task);
* **lab, full test** — the same path on the full test sets;
* **naive (peer)** — what a script would do per move: merge, build the model, load the state
  dict, evaluate every task's full test set with ``core.train.evaluate``.

Prints a markdown table with median / p95 and the ratio naive / lab. Run:

    python benchmarks/bench_merge_latency.py [--workspace DIR] [--moves 50] [--threads N]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.data import get_task  # noqa: E402
from core.device import configure_threads, cpu_model  # noqa: E402
from core.merge import merge  # noqa: E402
from core.merge_eval import lab_from_zoo  # noqa: E402
from core.models import create_model  # noqa: E402
from core.train import evaluate  # noqa: E402
from core.zoo import Zoo, default_zoo_ids, ensure_default  # noqa: E402

FT = ["mlp-ft-mnist", "mlp-ft-mnist_inverted", "mlp-ft-mnist_rotated", "mlp-ft-digits"]


def moves(
    method: str, n: int, rng: np.random.Generator, *, scale_only: bool = False
) -> list[dict[str, Any]]:
    """Random slider positions within the sliders' ranges. ``scale_only``: only λ moves (the
    other sliders stay where they are), as when a user drags the λ slider."""
    out = []
    fixed: dict[str, Any] = {"density": 0.2} if method == "ties" else {"weights": [1.0] * len(FT)}
    for _ in range(n):
        h: dict[str, Any] = {"scale": round(float(rng.uniform(0.0, 1.5)), 2)}
        if scale_only:
            h.update(fixed)
        elif method == "task_arithmetic":
            h["weights"] = [round(float(w), 2) for w in rng.uniform(0.0, 1.5, len(FT))]
        else:
            h["density"] = round(float(rng.uniform(0.05, 1.0)), 2)
        out.append(h)
    return out


def summary(ts: list[float]) -> tuple[float, float]:
    arr = np.array(ts) * 1000
    return float(np.median(arr)), float(np.percentile(arr, 95))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument(
        "--workspace", default=None, help="workspace with the default zoo (built if missing)"
    )
    ap.add_argument("--moves", type=int, default=50)
    ap.add_argument("--naive-moves", type=int, default=10)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    threads = configure_threads(args.threads)
    ws = (
        Path(args.workspace) if args.workspace else Path(tempfile.mkdtemp(prefix="mixmerge-bench-"))
    )
    zoo = Zoo(ws)
    if not all(i in zoo for i in default_zoo_ids()):
        print(f"building the default zoo in {ws} …", flush=True)
        ensure_default(zoo, device="cpu")
    t0 = time.perf_counter()
    lab = lab_from_zoo(zoo, FT, base_id="mlp-base", device="cpu")
    lab.references(False)
    lab.references(True)
    setup_s = time.perf_counter() - t0
    models = [zoo.state_dict(i) for i in FT]
    base = zoo.state_dict("mlp-base")
    rec = zoo.get("mlp-base")
    tasks = [get_task(t) for t in lab.tasks]

    def naive(method: str, hyper: dict[str, Any]) -> list[float]:
        sd = merge(method, models, base=base, **hyper)
        model = create_model(rec.arch, seed=None, **rec.arch_kwargs)
        model.load_state_dict(sd)
        return [evaluate(model, ds.x_test, ds.y_test, device="cpu").accuracy for ds in tasks]

    rng = np.random.default_rng(0)
    rows, scale_rows = [], []
    for method in ("task_arithmetic", "ties"):
        mv = moves(method, args.moves, rng)
        for h in mv[:2]:  # warm-up
            lab.run(method, h)
        lab_sub = []
        for h in mv:
            t = time.perf_counter()
            lab.run(method, h)
            lab_sub.append(time.perf_counter() - t)
        lab_full = []
        for h in mv[: args.naive_moves]:
            t = time.perf_counter()
            lab.run(method, h, full=True)
            lab_full.append(time.perf_counter() - t)
        naive_ts = []
        naive(method, mv[0])
        for h in mv[: args.naive_moves]:
            t = time.perf_counter()
            naive(method, h)
            naive_ts.append(time.perf_counter() - t)
        # the fast path gives the same full-test numbers as the naive path
        check = lab.run(method, mv[1], full=True).accuracy
        assert np.allclose(check, naive(method, mv[1]), atol=1e-9), (check, naive(method, mv[1]))
        rows.append((method, summary(lab_sub), summary(lab_full), summary(naive_ts)))
        lab_scale = []
        for h in moves(method, args.moves, rng, scale_only=True):
            t = time.perf_counter()
            lab.run(method, h)
            lab_scale.append(time.perf_counter() - t)
        scale_rows.append((method, summary(lab_scale)))

    n_sub = int(lab.eval_set(False).y.numel())
    n_full = int(lab.eval_set(True).y.numel())
    print(
        f"\nMachine: {cpu_model()}, {len(os.sched_getaffinity(0))} cores visible, "
        f"torch threads {threads}, torch {torch.__version__}; load average "
        f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}"
    )
    print(
        f"Default zoo MLP {rec.arch_kwargs}, {len(FT)} task vectors; subset {n_sub} samples, "
        f"full test {n_full}; lab setup {setup_s:.2f} s (once per selection)\n"
    )
    print(
        "| method | lab, subset median / p95 (ms) | lab, full test median / p95 (ms) | "
        "naive rebuild + full test median / p95 (ms) | naive / lab-subset (median) |"
    )
    print("|---|---|---|---|---|")
    for method, sub, full, nv in rows:
        print(
            f"| {method} | {sub[0]:.0f} / {sub[1]:.0f} | {full[0]:.0f} / {full[1]:.0f} | "
            f"{nv[0]:.0f} / {nv[1]:.0f} | {nv[0] / sub[0]:.1f}x |"
        )
    print("\nλ slider only (other sliders fixed; the cached merged task vector is rescaled):\n")
    print("| method | lab, subset median / p95 (ms) |\n|---|---|")
    for method, sc in scale_rows:
        print(f"| {method} | {sc[0]:.0f} / {sc[1]:.0f} |")
    print(
        f"\nmoves: {args.moves} (lab subset), {args.naive_moves} (full test and naive); "
        f"target p95 < 200 ms for the lab path: "
        + ", ".join(f"{m} {'met' if s[1] < 200 else 'MISSED'} (all sliders)" for m, s, _, _ in rows)
    )


if __name__ == "__main__":
    main()
