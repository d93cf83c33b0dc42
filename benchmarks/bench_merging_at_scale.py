"""Merging at scale (Yadav et al., 2024) on a built suite zoo: held-in and held-out performance
of Averaging, Task Arithmetic, TIES and DARE-TIES as 1..N experts are merged.

Runs :func:`core.papers.merging_at_scale.merging_at_scale_study` on the suite of
``--workspace`` (build it first: ``python -m core zoo build --suite text --workspace WS``),
prints the per-(method, k) summary as a Markdown table (mean and min-max over task orders) and
the base strength, and writes the full study to ``--json``. It only reads the workspace.

    MIXMERGE_THREADS=2 nice -n 10 .venv/bin/python benchmarks/bench_merging_at_scale.py \\
        --workspace /work/suitews --suite text --orders 3 --json out.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.papers.merging_at_scale import DEFAULT_METHODS, merging_at_scale_study  # noqa: E402
from core.zoo import Zoo  # noqa: E402


def _cell(r: dict, key: str) -> str:
    if math.isnan(r[key]):
        return "—"
    if r["orders"] == 1:
        return f"{r[key]:.3f}"
    return f"{r[key]:.3f} [{r[key + '_min']:.3f}, {r[key + '_max']:.3f}]"


def _no_nan(value: Any) -> Any:
    """``value`` with NaN (held-out at k = N) written as null: strict JSON."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _no_nan(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_no_nan(v) for v in value]
    return value


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workspace", type=Path, required=True)
    ap.add_argument("--suite", choices=["vision", "text"], required=True)
    ap.add_argument("--orders", type=int, default=3)
    ap.add_argument("--val-per-task", type=int, default=128)
    ap.add_argument("--test-per-task", type=int, default=None, help="default: the whole split")
    ap.add_argument("--methods", nargs="+", default=list(DEFAULT_METHODS))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    if not (args.workspace / "index.sqlite").exists():
        sys.exit(f"--workspace {args.workspace} holds no zoo (no index.sqlite)")
    zoo = Zoo(args.workspace)
    t0 = time.perf_counter()
    last = [0.0]

    def progress(done: int, total: int) -> None:
        now = time.perf_counter()
        if now - last[0] > 30 or done == total:
            last[0] = now
            print(f"  {done}/{total} merges scored, {now - t0:.0f} s", file=sys.stderr)

    study = merging_at_scale_study(
        zoo,
        args.suite,
        methods=args.methods,
        n_orders=args.orders,
        val_per_task=args.val_per_task,
        test_per_task=args.test_per_task,
        seed=args.seed,
        progress=progress,
    )
    wall = time.perf_counter() - t0
    print(
        f"suite {args.suite}: tasks {study.tasks}, {len(study.orders)} orders, test examples "
        f"{study.n_per_task}; {wall:.0f} s, load {os.getloadavg()[0]:.1f}"
    )
    print(
        f"pretrained {sum(study.pretrained.values()) / len(study.tasks):.3f}, experts "
        f"{sum(study.individual.values()) / len(study.tasks):.3f}, base strength "
        f"{study.base_strength:.3f}\n"
    )
    print("| method | k | held-in (÷ expert) | held-out (÷ pretrained) |")
    print("|---|---|---|---|")
    for r in study.summary():
        print(f"| {r['method']} | {r['k']} | {_cell(r, 'held_in')} | {_cell(r, 'held_out')} |")
    if args.json:
        out = dataclasses.asdict(study) | {
            "summary": study.summary(),
            "base_strength": study.base_strength,
            "wall_s": wall,
        }
        args.json.write_text(json.dumps(_no_nan(out), indent=1, default=str, allow_nan=False))


if __name__ == "__main__":
    main()
