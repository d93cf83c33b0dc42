"""``python -m core benchmark SUITE [--quick] --out results.json`` and ``zoo build --suite``."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def add_benchmark_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "benchmark",
        help="run every applicable merge method on a suite zoo (validation-tuned, test CIs)",
    )
    p.add_argument("suite", choices=["vision", "text"])
    p.add_argument("--quick", action="store_true", help="small grids and cheap data methods")
    p.add_argument("--out", required=True, help="JSON file to write")
    p.add_argument("--methods", default=None, help="comma-separated subset of merge methods")
    p.add_argument("--workspace", default=None, help="workspace folder (default ./workspace)")
    p.add_argument("--device", default="auto")
    p.set_defaults(func=benchmark_command)


def benchmark_command(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ..zoo import Zoo
    from .report import write_results
    from .run import run_benchmark

    out = Path(args.out)
    if out.exists() and out.is_dir():
        raise ValueError(f"--out must be a file path, got the folder {out}")
    methods = [m.strip() for m in args.methods.split(",") if m.strip()] if args.methods else None
    bar = tqdm(total=None, desc=f"benchmark {args.suite}", unit="method", dynamic_ncols=True)

    def on_progress(info: dict) -> None:
        bar.total = info["n"]
        bar.n = info["k"] - 1
        bar.set_postfix_str(info["message"][:60])
        bar.refresh()

    t0 = time.perf_counter()
    res = run_benchmark(
        Zoo(args.workspace),
        args.suite,
        quick=args.quick,
        methods=methods,
        device=args.device,
        progress=on_progress,
    )
    bar.close()
    write_results(res, out, zoo=Zoo(args.workspace))
    for r in sorted(res["rows"], key=lambda r: -r["test_avg"]):
        lo, hi = r["test_avg_ci"]
        print(
            f"{r['method']:18s} test {r['test_avg']:.4f} [{lo:.4f}, {hi:.4f}]  val {r['val_avg']:.4f}  normalized {r['normalized']:.4f}"
        )
    for m, why in res["skipped"].items():
        print(f"{m:18s} skipped: {why}", file=sys.stderr)
    print(f"wrote {out} in {time.perf_counter() - t0:.1f} s")
    return 0


def build_suite_command(
    suite: str,
    workspace: str | None,
    device: str,
    *,
    steps: int | None = None,
    overwrite: bool = False,
) -> int:
    import dataclasses

    from ..zoo import Zoo
    from .protocol import default_config
    from .zoo_build import build_suite_zoo

    t0 = time.perf_counter()
    zoo = Zoo(workspace)
    config = default_config(suite)
    if steps is not None:
        config = dataclasses.replace(config, steps=steps)
    try:
        built = build_suite_zoo(zoo, config, device=device, show_progress=True, overwrite=overwrite)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for rec in built.finetunes.values():
        m = rec.metrics
        print(
            f"{rec.id:28s} pretrained {m['pretrained_test_accuracy']:.4f} -> fine-tuned {m['test_accuracy']:.4f}"
        )
    print(f"{suite} suite zoo ready in {time.perf_counter() - t0:.1f} s at {zoo.root}")
    print(json.dumps({"suite": suite, "seconds": time.perf_counter() - t0}))
    return 0
