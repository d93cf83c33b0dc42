"""The mixing papers' headline claims on their default (tiny, CPU) settings, with seeds and CIs.

    python benchmarks/bench_mix_papers.py [STUDY ...] [--seeds 0 1 2] [--methods M ...]
        [--set FIELD=VALUE ...] [--out records.json]

Prints one markdown table per study (the rows of ``core.mixup.papers.headline``) and the wall
time, for docs/BENCHMARKS.md "Mixing papers". ``--set`` overrides config fields (e.g.
``--set task=fashion buffer_size=500``), ``--methods`` the study's default methods, and
``--out`` writes the records as JSON (study -> record). In a worktree run it from the root
with ``PYTHONPATH=$PWD`` (the venv's ``core`` is otherwise the main checkout's).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from pathlib import Path
from typing import Any

from core.device import configure_threads
from core.mixup.papers import _studies, headline


def _overrides(config_cls: type, pairs: list[str]) -> dict[str, Any]:
    """``FIELD=VALUE`` strings -> config kwargs, each value parsed by its field's default type."""
    fields = {f.name: f for f in dataclasses.fields(config_cls)}
    out: dict[str, Any] = {}
    for pair in pairs:
        name, sep, raw = pair.partition("=")
        if not sep or name not in fields:
            raise SystemExit(
                f"--set must be FIELD=VALUE with FIELD in {sorted(fields)}, got {pair!r}"
            )
        default = fields[name].default
        if raw == "None":
            out[name] = None
        elif isinstance(default, bool):
            out[name] = raw.lower() in ("1", "true", "yes")
        elif isinstance(default, int) or (default is None and raw.lstrip("-").isdigit()):
            out[name] = int(raw)
        elif isinstance(default, float):
            out[name] = float(raw)
        else:
            out[name] = raw
    return out


def main() -> None:
    studies = _studies()
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("studies", nargs="*", default=list(studies), choices=list(studies))
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--methods", nargs="+", default=None)
    ap.add_argument("--set", nargs="+", default=[], dest="overrides", metavar="FIELD=VALUE")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    configure_threads()
    records = {}
    for name in args.studies:
        config_cls, run, _ = studies[name]
        config = config_cls(**_overrides(config_cls, args.overrides))
        kwargs = {"methods": tuple(args.methods)} if args.methods else {}
        t0 = time.perf_counter()
        record = run(config, seeds=tuple(args.seeds), **kwargs)
        secs = time.perf_counter() - t0
        records[name] = record
        rows = headline(record)
        print(f"\n### {name}  ({secs:.0f} s, seeds {args.seeds}, load {os.getloadavg()[0]:.1f})\n")
        if args.overrides:
            print(f"config overrides: {' '.join(args.overrides)}\n")
        cols = list(dict.fromkeys(k for r in rows for k in r))
        print("| " + " | ".join(cols) + " |")
        print("|" + "---|" * len(cols))
        for r in rows:
            cells = [
                f"{r[c]:.3f}" if isinstance(r.get(c), float) else str(r.get(c, "")) for c in cols
            ]
            print("| " + " | ".join(cells) + " |")
        if args.out is not None:
            args.out.write_text(json.dumps(records, separators=(",", ":")))


if __name__ == "__main__":
    main()
