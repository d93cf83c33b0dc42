"""``python -m core zoo import-external``: bring your own models (and data) into the zoo.

    python -m core zoo import-external FT_FOLDER [FT_FOLDER ...] --base BASE_FOLDER [--data D]
    python -m core zoo import-external torch.nn:Linear --kwargs '{"in_features": 4, ...}'
    python -m core zoo import-external timm:resnet18 --weights resnet18.safetensors

Sources are Hugging Face folders (config.json + safetensors), ``timm:<name>`` (needs timm) or
``package.module:factory``. With ``--base`` the sources are fine-tunes of that base and form a
task-vector set; everything is checked before anything is written.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m core zoo import-external",
        description="Import external models (Hugging Face folders, timm names, "
        "package.module:factory) into the zoo",
    )
    p.add_argument("sources", nargs="+", help="model sources (fine-tunes when --base is given)")
    p.add_argument("--base", default=None, help="the pre-trained model of a task-vector set")
    p.add_argument(
        "--kind", choices=["hf", "timm", "factory"], default=None, help="default: detected"
    )
    p.add_argument("--weights", default=None, help="weights file for a single timm/factory source")
    p.add_argument("--kwargs", default="{}", help="JSON keyword arguments of the factory / timm")
    p.add_argument("--names", nargs="+", default=None, help="zoo ids, one per source")
    p.add_argument("--base-name", default=None, help="zoo id of the base")
    p.add_argument("--tasks", nargs="+", default=None, help="task (data) name per source")
    p.add_argument(
        "--data", default=None, help="evaluation data (ImageFolder, .npz, IDX, text CSV)"
    )
    p.add_argument("--replace", action="store_true", help="overwrite existing ids")
    p.add_argument("--workspace", default=None, help="default: $MIXMERGE_WORKSPACE or ./workspace")
    return p


def main(argv: Sequence[str]) -> int:
    from ..models.external import import_external, parse_source
    from . import Zoo

    args = parser().parse_args(list(argv))
    try:
        kwargs = json.loads(args.kwargs)
    except json.JSONDecodeError as err:
        print(f"error: --kwargs must be JSON: {err}", file=sys.stderr)
        return 2
    if args.weights is not None and len(args.sources) != 1:
        print("error: --weights needs exactly one source", file=sys.stderr)
        return 2
    try:
        sources = [
            parse_source(s, kind=args.kind, weights=args.weights, kwargs=kwargs)
            for s in args.sources
        ]
        base = None if args.base is None else parse_source(args.base, kind=args.kind, kwargs=kwargs)
        recs = import_external(
            Zoo(args.workspace),
            sources,
            base=base,
            names=args.names,
            base_name=args.base_name,
            tasks=args.tasks,
            data=args.data,
            replace=args.replace,
        )
    except (ValueError, ImportError, FileNotFoundError, TypeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for r in recs:
        print(f"{r.id:28s} {r.role:10s} {r.n_params:>12,d} parameters  {r.note}")
    return 0
