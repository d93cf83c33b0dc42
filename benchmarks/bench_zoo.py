"""Default zoo build: wall time and every model's test accuracy.

Run: ``python benchmarks/bench_zoo.py [--workspace DIR]`` (a fresh temporary workspace by default).
The peer is the budget the issue sets: "about a minute on a 2-core CPU"; the ratio printed is
measured time / 60 s.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from datetime import date

import torch

from core.device import configure_threads, cpu_model
from core.zoo import Zoo, ensure_default


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--workspace", default=None)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    threads = configure_threads()
    ws = args.workspace or tempfile.mkdtemp(prefix="zoo-bench-")
    t0 = time.perf_counter()
    done: dict[str, float] = {}
    last = [t0]

    def on_progress(info: dict) -> None:
        if "done" in info.get("message", ""):
            now = time.perf_counter()
            done[info["id"]] = now - last[0]
            last[0] = now

    recs = ensure_default(Zoo(ws), device=args.device, progress=on_progress)
    total = time.perf_counter() - t0
    print(
        f"machine: {cpu_model()}, {threads} torch threads, torch {torch.__version__}, {date.today()}"
    )
    print("| model | role | task | test accuracy | seconds |")
    print("|---|---|---|---|---|")
    for r in recs:
        print(
            f"| {r.id} | {r.role} | {r.task} | {r.test_accuracy:.4f} | {done.get(r.id, float('nan')):.1f} |"
        )
    print(
        f"\ntotal: {total:.1f} s for {len(recs)} models; ratio to the 60 s budget: {total / 60:.2f}"
    )


if __name__ == "__main__":
    main()
