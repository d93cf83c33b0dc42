"""``python -m core merge`` and ``python -m core sweep`` (registered in core.cli.COMMANDS)."""

from __future__ import annotations

import argparse
import sys
from typing import Any


def add_merge_parser(sub: argparse._SubParsersAction) -> None:
    """``merge CONFIG.yaml OUT_DIR [--device] [--overwrite] [--shard-size] [--seed]``."""
    p = sub.add_parser(
        "merge",
        help="merge checkpoints from a mergekit-style YAML config, tensor by tensor",
        description="Streaming merge of safetensors checkpoints (files or model folders with an "
        "index) from a mergekit-style YAML config; bounded memory, output written atomically.",
    )
    p.add_argument("config", help="merge config (mergekit YAML format)")
    p.add_argument(
        "out_dir", help="output folder: new, or a previous merge output with --overwrite"
    )
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (default cpu)")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace OUT_DIR if it holds a previous merge output (never any other folder)",
    )
    p.add_argument("--shard-size", default="5B", help="bytes per output shard: 5B, 500M, 2GB")
    p.add_argument("--seed", type=int, default=0, help="seed of the random methods (DARE)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument(
        "--intermediate-dir",
        default=None,
        help="multi-document configs: folder of the named merges (default OUT_DIR-parts)",
    )
    p.set_defaults(func=_merge)


def _merge(args: argparse.Namespace) -> int:
    """Run the merge; every expected failure is one ``error:`` line and exit code 2."""
    import warnings

    from .._warnings import MixmergeWarning
    from . import DiskFullError, stream_merge
    from .multi import load_documents, stream_multi

    common: dict[str, Any] = {
        "device": args.device,
        "overwrite": args.overwrite,
        "shard_size": args.shard_size,
        "seed": args.seed,
        "progress": not args.quiet,
    }
    reps = None
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", MixmergeWarning)
            if len(load_documents(args.config)) > 1:  # mergekit-multi style: several merges
                reps = stream_multi(
                    args.config, args.out_dir, intermediate_dir=args.intermediate_dir, **common
                )
            else:
                rep = stream_merge(args.config, args.out_dir, **common)
    except DiskFullError as err:
        print(f"error: {err.strerror}", file=sys.stderr)
        return 2
    except (ValueError, TypeError, OSError) as err:  # StreamError is a ValueError
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "interrupted: nothing was published (the partial output was removed)", file=sys.stderr
        )
        return 130
    for w in caught:
        if issubclass(w.category, MixmergeWarning):
            print(f"warning: {w.message}", file=sys.stderr)
        else:
            warnings.showwarning(w.message, w.category, w.filename, w.lineno)
    if reps is not None:
        for r in reps:
            if r is not None:
                print(f"merged {r.n_tensors} tensors into {r.out_dir} in {r.seconds:.1f} s")
        print(f"{sum(r is None for r in reps)} finished intermediate merge(s) reused")
        return 0
    print(
        f"merged {rep.n_tensors} tensors into {rep.out_dir} ({len(rep.shards)} shard(s), "
        f"{rep.bytes_written / 1e9:.2f} GB) in {rep.seconds:.1f} s"
    )
    return 0


def add_sweep_parser(sub: argparse._SubParsersAction) -> None:
    """``sweep SWEEP.yaml [--backend inprocess|ray] [--address ...] [--workspace ...]``."""
    p = sub.add_parser(
        "sweep",
        help="grid or random search over merge methods x hyperparameters on zoo models",
        description="Merge and evaluate every point of a sweep; finished points are stored in "
        "the workspace, so a rerun resumes.",
    )
    p.add_argument("sweep", help="sweep file (YAML)")
    p.add_argument("--backend", choices=["inprocess", "ray"], default="inprocess")
    p.add_argument(
        "--address", default=None, help="Ray cluster address (default: start a local one)"
    )
    p.add_argument("--num-cpus", type=int, default=None, help="CPUs of a local Ray cluster")
    p.add_argument(
        "--workspace",
        default=None,
        help="workspace folder (default: $MIXMERGE_WORKSPACE or ./workspace)",
    )
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=_sweep)


def _sweep(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ..sweep import load_sweep_spec, run_sweep
    from ..zoo import Zoo

    spec = load_sweep_spec(args.sweep)
    zoo = Zoo(args.workspace)
    bar = tqdm(total=None, desc=f"sweep {spec.name}", unit="point")

    def on_progress(info: dict) -> None:
        bar.total = info["total"]
        bar.n = info["done"]
        acc = info["mean_accuracy"]
        bar.set_postfix_str(
            ("skip " if info["skipped"] else "")
            + info["method"]
            + ("" if acc is None else f" acc={acc:.4f}")
        )
        bar.refresh()

    try:
        df = run_sweep(
            spec,
            zoo,
            backend=args.backend,
            address=args.address,
            num_cpus=args.num_cpus,
            device=args.device,
            progress=on_progress,
        )
    except ImportError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    finally:
        bar.close()
    cols = [c for c in df.columns if c.startswith(("param_", "acc_"))]
    print(df[["method", *cols, "mean_accuracy"]].to_string(index=False))
    return 0
