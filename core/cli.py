"""Command line: ``python -m core zoo build|list [--suite vision|text]``, ``benchmark``.

Further subcommands (merge, sweep) register themselves in ``COMMANDS``.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence

COMMANDS: dict[str, Callable[[argparse._SubParsersAction], None]] = {}


def _zoo_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "zoo",
        help="build or list the model zoo, or repair its index",
        description="build: train the missing default models; list: show the index; repair: "
        "rebuild a damaged or emptied index from the checkpoints in models/ (the damaged index "
        "is kept beside it)",
    )
    p.add_argument("action", choices=["build", "list", "repair"])
    p.add_argument(
        "--workspace",
        default=None,
        help="workspace folder (default: $MIXMERGE_WORKSPACE or ./workspace)",
    )
    p.add_argument("--device", default="auto")
    p.add_argument(
        "--suite",
        choices=["vision", "text"],
        default=None,
        help="build a benchmark suite's zoo (pretrained backbone + one fine-tune per task)",
    )
    p.add_argument(
        "--steps",
        type=int,
        default=None,
        help="with --suite: fine-tuning steps per task instead of the suite's default",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="with --suite: replace suite models built with another configuration "
        "(default: refuse, the workspace's models are kept)",
    )
    p.set_defaults(func=_zoo)


def _zoo(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .zoo import Zoo, ensure_default, repair

    if args.action == "repair":
        report = repair(args.workspace)
        print(report.summary())
        return 0
    zoo = Zoo(args.workspace)
    if args.action == "list":
        print(zoo.table().to_string(index=False))
        return 0
    if args.suite is not None:
        from .benchmark.cli import build_suite_command

        return build_suite_command(
            args.suite, args.workspace, args.device, steps=args.steps, overwrite=args.overwrite
        )
    t0 = time.perf_counter()
    bar = tqdm(total=None, desc="default zoo", unit="model")

    def on_progress(info: dict) -> None:
        bar.total = info["models"]
        bar.n = info["model"] - (0 if "done" in info["message"] else 1)
        bar.set_postfix_str(info["message"])
        bar.refresh()

    recs = ensure_default(zoo, device=args.device, progress=on_progress)
    bar.close()
    for r in recs:
        print(f"{r.id:28s} {r.role:12s} test accuracy {r.test_accuracy:.4f}")
    print(f"default zoo ready in {time.perf_counter() - t0:.1f} s at {zoo.root}")
    return 0


COMMANDS["zoo"] = _zoo_parser

# Streaming merges and sweeps (core/stream/cli.py; heavy imports happen inside the commands)
from .stream.cli import add_merge_parser, add_sweep_parser  # noqa: E402

COMMANDS["merge"] = add_merge_parser
COMMANDS["sweep"] = add_sweep_parser

# CMA-ES search over merge coefficients (core/search.py)
from .search import add_search_parser  # noqa: E402

COMMANDS["search"] = add_search_parser

# The merging benchmark on real pretrained backbones (core/benchmark/cli.py)
from .benchmark.cli import add_benchmark_parser  # noqa: E402

COMMANDS["benchmark"] = add_benchmark_parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:2] == ["zoo", "import-external"]:  # its own parser (core/zoo/import_cli.py)
        from .zoo.import_cli import main as import_external_main

        return import_external_main(argv[2:])
    parser = argparse.ArgumentParser(
        prog="python -m core", description="Mixmerge Workbench command line"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for add in COMMANDS.values():
        add(sub)
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, KeyError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
