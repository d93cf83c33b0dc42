"""Latency of a Merge Lab slider move on a suite zoo (core.suite_lab.SuiteLab.run).

Builds (or reuses) a vision suite zoo with tiny training settings (1 fine-tuning step, small
split caps: the weights' quality does not matter for latency, the shapes do: all six tasks,
EfficientNet-Lite0 at the suite's 32 px), then times slider moves with the default evaluation
subset (64 validation examples per task):

* ``task_arithmetic`` λ moves (θ₀ + λ Σ τᵢ written into the live backbone);
* ``ties`` λ moves (merged task vector cached per density);
* the peer: the same λ moves done the plain way, ``core.merge.merge`` then
  ``core.benchmark.protocol.evaluate_backbone`` on the same subsets.

Usage: ``PYTHONPATH=. python benchmarks/bench_suite_lab.py [--workspace DIR] [--moves 20] [--device cpu]``.
``--existing`` times the suite models already built in ``--workspace`` (e.g. the full suite of
``python -m core zoo build --suite vision``) and builds nothing; without it the tiny
configuration is built there (refused if the workspace holds a suite built otherwise).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import time

import numpy as np
import torch

from core.benchmark import protocol as P
from core.benchmark.zoo_build import build_suite_zoo
from core.data.suites import SuiteSizes
from core.device import cpu_model
from core.merge import merge
from core.suite_lab import DEFAULT_N_PER_TASK, SuiteLab, stratified_subset
from core.zoo import Zoo

BENCH_CONFIG = P.SuiteConfig(
    "vision",
    sizes=SuiteSizes(train=64, val=80, test=64),
    resolution=32,
    steps=1,
    batch_size=8,
)


def _stats(ts: list[float]) -> str:
    a = np.asarray(ts) * 1000
    return f"p50 {np.percentile(a, 50):7.1f} ms  p95 {np.percentile(a, 95):7.1f} ms  n={len(a)}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--workspace", default="/tmp/mixmerge-bench-suite-lab")
    ap.add_argument("--moves", type=int, default=20)
    ap.add_argument("--device", default="cpu")
    ap.add_argument(
        "--existing", action="store_true", help="time the workspace's built suite; build nothing"
    )
    args = ap.parse_args()
    zoo = Zoo(args.workspace)
    t0 = time.perf_counter()
    if not args.existing:
        build_suite_zoo(zoo, BENCH_CONFIG, device=args.device)
        print(f"zoo ready in {time.perf_counter() - t0:.1f} s ({args.workspace})")
    t0 = time.perf_counter()
    lab = SuiteLab(zoo, "vision", n_per_task=DEFAULT_N_PER_TASK, device=args.device)
    lab.references()
    print(
        f"lab loaded in {time.perf_counter() - t0:.1f} s: {len(lab.tasks)} tasks, "
        f"{lab.n_per_task} examples, {sum(v.numel() for v in lab.base.values()) / 1e6:.2f} M "
        "backbone values"
    )
    scales = np.linspace(0.1, 1.5, args.moves).tolist()
    lab.run("task_arithmetic", {"scale": 0.3})  # warm-up
    ta = []
    for s in scales:
        ta.append(lab.run("task_arithmetic", {"scale": float(s)}).seconds)
    t0 = time.perf_counter()
    lab.run("ties", {"density": 0.2, "scale": 1.0})
    ties_first = time.perf_counter() - t0
    ties = [lab.run("ties", {"density": 0.2, "scale": float(s)}).seconds for s in scales]
    # peer: merge() + evaluate_backbone on the same subsets, no caches
    subs = []
    for task in lab.suite_tasks:
        i = stratified_subset(task.y_val, DEFAULT_N_PER_TASK, seed=0)
        subs.append(dataclasses.replace(task, x_val=task.x_val[i], y_val=task.y_val[i]))
    trunk = P.new_backbone(lab.config, pretrained=False).trunk
    peer = []
    for s in scales[: max(3, args.moves // 4)]:
        t0 = time.perf_counter()
        sd = merge("task_arithmetic", lab.finetunes, base=lab.base, scale=float(s))
        P.evaluate_backbone(trunk, sd, lab.heads, subs, "val", device=args.device)
        peer.append(time.perf_counter() - t0)
    load = os.getloadavg()
    print(
        f"machine: {cpu_model()}, {os.cpu_count()} cores, torch threads "
        f"{torch.get_num_threads()}, load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}, "
        f"python {platform.python_version()}, torch {torch.__version__}, device {lab.device}"
    )
    print(f"task_arithmetic λ move : {_stats(ta)}")
    print(f"ties λ move (cached)   : {_stats(ties)}   (first merge {ties_first * 1000:.0f} ms)")
    print(f"peer merge()+evaluate  : {_stats(peer)}")
    print(f"ratio peer / lab (p50, task arithmetic): {np.median(peer) / np.median(ta):.2f}x")


if __name__ == "__main__":
    main()
