"""The mixing papers' headline claims on their default (tiny, CPU) settings, with seeds and CIs.

    python benchmarks/bench_mix_papers.py [STUDY ...] [--seeds 0 1 2]

Prints one markdown table per study (the rows of ``core.mixup.papers.headline``) and the wall
time, for docs/BENCHMARKS.md "Mixing papers".
"""

from __future__ import annotations

import argparse
import os
import time

from core.device import configure_threads
from core.mixup.papers import _studies, headline


def main() -> None:
    studies = _studies()
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("studies", nargs="*", default=list(studies), choices=list(studies))
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    args = ap.parse_args()
    configure_threads()
    for name in args.studies:
        config_cls, run, _ = studies[name]
        t0 = time.perf_counter()
        record = run(config_cls(), seeds=tuple(args.seeds))
        secs = time.perf_counter() - t0
        rows = headline(record)
        print(f"\n### {name}  ({secs:.0f} s, seeds {args.seeds}, load {os.getloadavg()[0]:.1f})\n")
        cols = list(dict.fromkeys(k for r in rows for k in r))
        print("| " + " | ".join(cols) + " |")
        print("|" + "---|" * len(cols))
        for r in rows:
            cells = [
                f"{r[c]:.3f}" if isinstance(r.get(c), float) else str(r.get(c, "")) for c in cols
            ]
            print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
