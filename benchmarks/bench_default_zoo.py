"""The default (fast) zoo in the task-vector regime: build it, then merge with tuned λ.

Builds the default zoo's task-vector part (base + one fine-tune per digit domain; the
independent models too unless ``--no-independent``) into a workspace and times it, then scores
on the full test sets, split per task by a seeded permutation into a validation half (where λ
and the TIES density are chosen, the papers' grids) and a test half (reported):

    pretrained, individual (each fine-tune on its own task), averaging, task arithmetic
    (λ ∈ {0.05, ..., 1.5}), TIES (λ ∈ {0.1, ..., 1.5} × density {0.1, 0.2, 0.3}), Fisher and
    RegMean (their defaults, on the lab's training subsets).

    nice -n 10 .venv/bin/python benchmarks/bench_default_zoo.py [--workspace DIR] [--json out]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.device import configure_threads  # noqa: E402
from core.merge_eval import lab_from_zoo  # noqa: E402
from core.zoo import DEFAULT_PLAN, Zoo, ensure_default, pretrain_data  # noqa: E402

TA_GRID = [round(0.05 * i, 2) for i in range(1, 31)]
TIES_GRID = [round(0.1 * i, 1) for i in range(1, 16)]
DENSITIES = [0.1, 0.2, 0.3]


def split_halves(sizes: tuple[int, ...], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Per task, a seeded half of its test samples for validation, the rest for test."""
    rng = np.random.default_rng(seed)
    val, test, start = [], [], 0
    for n in sizes:
        idx = start + rng.permutation(n)
        val.append(idx[: n // 2])
        test.append(idx[n // 2 :])
        start += n
    return np.concatenate(val), np.concatenate(test)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workspace", default=None, help="zoo folder (default: a temporary one)")
    ap.add_argument("--no-independent", action="store_true", help="skip the independent models")
    ap.add_argument("--json", default=None, help="write the table as JSON here")
    ap.add_argument("--pretrain", nargs="+", default=None, help="override: pre-training tasks")
    ap.add_argument("--base-per-task", type=int, default=None, help="override")
    ap.add_argument("--base-epochs", type=int, default=None, help="override")
    ap.add_argument("--finetune-epochs", type=int, default=None, help="override")
    args = ap.parse_args()
    configure_threads()
    plan = DEFAULT_PLAN
    if args.no_independent:
        plan = dataclasses.replace(plan, independent=())
    for field, value in (
        ("pretrain_tasks", None if args.pretrain is None else tuple(args.pretrain)),
        ("base_per_task", args.base_per_task),
        ("base_epochs", args.base_epochs),
        ("finetune_epochs", args.finetune_epochs),
    ):
        if value is not None:
            plan = dataclasses.replace(plan, **{field: value})
    ws = Path(args.workspace or tempfile.mkdtemp(prefix="zoo-bench-"))
    zoo = Zoo(ws)
    t0 = time.perf_counter()
    ensure_default(zoo, plan, device="cpu")
    build_s = time.perf_counter() - t0
    pre = pretrain_data(plan)[2]
    print(f"build {build_s:.1f} s ({plan.n_models()} models) · base pre-trained on {pre}")
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")

    ft = [f"{plan.base_arch}-ft-{t}" for t in plan.domains]
    lab = lab_from_zoo(zoo, ft, base_id=f"{plan.base_arch}-base", device="cpu")
    es = lab.eval_set(full=True)
    groups = es.groups
    val_idx, test_idx = split_halves(es.sizes)
    y = es.y.numpy()

    def per_task(pred: np.ndarray, idx: np.ndarray) -> list[float]:
        ok = pred[idx] == y[idx]
        g = groups[idx]
        return [float(ok[g == j].mean()) for j in range(len(lab.tasks))]

    def score(sd) -> tuple[list[float], list[float]]:
        pred = lab.predict(sd, full=True)[0].numpy()
        return per_task(pred, val_idx), per_task(pred, test_idx)

    rows = []

    def add(method: str, hyper: dict, val: list[float], test: list[float]) -> None:
        rows.append(
            {
                "method": method,
                "hyperparameters": hyper,
                "val_avg": float(np.mean(val)),
                "test_avg": float(np.mean(test)),
                "per_task": dict(zip(lab.tasks, test, strict=True)),
            }
        )

    add("pretrained", {}, *score(lab.base))
    own = [score(sd) for sd in lab.models]  # model i is the fine-tune of task i
    add(
        "individual",
        {},
        [own[i][0][i] for i in range(len(ft))],
        [own[i][1][i] for i in range(len(ft))],
    )
    add("average", {}, *score(lab.merge("average", {}, exact=True)))

    def tuned(method: str, grid: list[dict]) -> None:
        best = None
        for h in grid:
            val, test = score(lab.merge(method, h, exact=True))
            if best is None or np.mean(val) > np.mean(best[1]):
                best = (h, val, test)
        assert best is not None
        add(method, *best)

    tuned("task_arithmetic", [{"scale": s} for s in TA_GRID])
    tuned("ties", [{"scale": s, "density": d} for d in DENSITIES for s in TIES_GRID])
    for method in ("fisher", "regmean"):
        add(method, {}, *score(lab.merge(method, {}, exact=True)))

    base_avg = rows[0]["test_avg"]
    print(
        f"\n{'method':<16} {'val avg':>8} {'test avg':>9}  "
        + "  ".join(f"{t:>14}" for t in lab.tasks)
    )
    for r in rows:
        cells = "  ".join(f"{r['per_task'][t]:>14.3f}" for t in lab.tasks)
        print(
            f"{r['method']:<16} {r['val_avg']:>8.3f} {r['test_avg']:>9.3f}  {cells}  {r['hyperparameters']}"
        )
    merges = [r for r in rows if r["method"] not in ("pretrained", "individual")]
    print(f"\nbest merge / pretrained: {max(r['test_avg'] for r in merges) / base_avg:.2f}x")
    if args.json:
        Path(args.json).write_text(
            json.dumps({"build_seconds": build_s, "pretrain": pre, "rows": rows}, indent=2)
        )


if __name__ == "__main__":
    main()
