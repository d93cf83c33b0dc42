"""Benchmark results: validation, storage in the zoo, the table the page and docs show."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..zoo import Zoo, atomic_write_bytes

RECORD_KIND = "benchmark"
ROW_KEYS = (
    "method",
    "hyperparameters",
    "val_avg",
    "test_avg",
    "test_avg_ci",
    "normalized",
    "per_task",
)
# The field's reference: CLIP ViT-B/32 on 8 tasks, average absolute accuracy in % (AdaMerging
# paper, Table 2; research note merging.md §5A).
CLIP_VIT_B32 = {
    "pretrained": 48.0,
    "individual": 90.5,
    "average": 65.8,
    "fisher": 68.3,
    "regmean": 71.8,
    "task_arithmetic": 69.1,
    "ties": 72.4,
    "pcb": 76.3,
    "adamerging": 80.1,
}


def check_results(res: Any) -> dict[str, Any]:
    """Validate a results record (as written by ``python -m core benchmark``).

    Raises:
        ValueError / TypeError: naming the first field that is missing or malformed.
    """
    if not isinstance(res, Mapping):
        raise TypeError(f"results must be a mapping, got {type(res).__name__}")
    if res.get("suite") not in ("vision", "text"):
        raise ValueError(f"results['suite'] must be 'vision' or 'text', got {res.get('suite')!r}")
    rows = res.get("rows")
    if not isinstance(rows, list) or not rows:
        raise ValueError("results['rows'] must be a non-empty list")
    for i, r in enumerate(rows):
        if not isinstance(r, Mapping):
            raise TypeError(f"results['rows'][{i}] must be a mapping, got {type(r).__name__}")
        missing = [k for k in ROW_KEYS if k not in r]
        if missing:
            raise ValueError(f"results['rows'][{i}] lacks {missing}")
        lo, hi = r["test_avg_ci"]
        for k in ("val_avg", "test_avg", "normalized"):
            if not isinstance(r[k], int | float) or not math.isfinite(r[k]):
                raise ValueError(
                    f"results['rows'][{i}][{k!r}] must be a finite number, got {r[k]!r}"
                )
        if not lo <= r["test_avg"] <= hi:
            raise ValueError(
                f"results['rows'][{i}]: test_avg {r['test_avg']} outside its CI [{lo}, {hi}]"
            )
    return dict(res)


def write_results(res: Mapping[str, Any], path: str | Path, *, zoo: Zoo | None = None) -> Path:
    """Write the JSON atomically (and store it in ``zoo`` under kind "benchmark", key suite)."""
    res = check_results(res)
    out = Path(path).expanduser()
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out, (json.dumps(res, indent=2) + "\n").encode())
    if zoo is not None:
        store_results(zoo, res)
    return out


def store_results(zoo: Zoo, res: Mapping[str, Any]) -> None:
    """Keep the latest results of a suite in the workspace (the Benchmark page reads them)."""
    res = check_results(res)
    zoo.put_record(RECORD_KIND, f"{res['suite']}{'-quick' if res.get('quick') else ''}", res)


def stored_results(zoo: Zoo) -> dict[str, dict[str, Any]]:
    """Stored results by key ("vision", "vision-quick", "text", ...)."""
    return zoo.get_records(RECORD_KIND)


def load_results(path: str | Path) -> dict[str, Any]:
    """Read and validate a results JSON file."""
    p = Path(path).expanduser()
    try:
        return check_results(json.loads(p.read_text()))
    except json.JSONDecodeError as err:
        raise ValueError(f"{p} is not valid JSON: {err}") from None


def results_table(res: Mapping[str, Any]) -> Any:
    """One row per method, sorted by test average: accuracies in %, CI, normalised, McNemar p."""
    import pandas as pd

    res = check_results(res)
    rows = []
    for r in res["rows"]:
        mc = r.get("mcnemar_vs_task_arithmetic") or {}
        rows.append(
            {
                "method": r["method"],
                "test avg %": 100 * r["test_avg"],
                "95% CI": f"[{100 * r['test_avg_ci'][0]:.1f}, {100 * r['test_avg_ci'][1]:.1f}]",
                "val avg %": 100 * r["val_avg"],
                "normalized %": 100 * r["normalized"],
                "p vs TA": mc.get("p_value"),
                "CLIP ViT-B/32 %": CLIP_VIT_B32.get(r["method"]),
                "hyperparameters": json.dumps(r["hyperparameters"]),
                **{f"{t} %": 100 * a for t, a in r["per_task"].items()},
            }
        )
    return pd.DataFrame(rows).sort_values("test avg %", ascending=False, ignore_index=True)


def shape_checks(res: Mapping[str, Any]) -> dict[str, bool | None]:
    """The field's ordering, checked on test averages (None where a method did not run):
    pretrained below every merge, every merge below individual, TIES ≥ TA > averaging,
    RegMean and AdaMerging ≥ TIES."""
    acc = {r["method"]: r["test_avg"] for r in check_results(res)["rows"]}
    merges = [m for m in acc if m not in ("pretrained", "individual")]

    def ge(a: str, b: str, strict: bool = False) -> bool | None:
        if a not in acc or b not in acc:
            return None
        return acc[a] > acc[b] if strict else acc[a] >= acc[b]

    return {
        "pretrained < every merge": all(acc["pretrained"] < acc[m] for m in merges)
        if merges
        else None,
        "every merge < individual": all(acc[m] < acc["individual"] for m in merges)
        if merges
        else None,
        "ties >= task_arithmetic": ge("ties", "task_arithmetic"),
        "task_arithmetic > average": ge("task_arithmetic", "average", strict=True),
        "regmean >= ties": ge("regmean", "ties"),
        "adamerging >= ties": ge("adamerging", "ties"),
    }


__all__ = [
    "CLIP_VIT_B32",
    "check_results",
    "load_results",
    "results_table",
    "shape_checks",
    "store_results",
    "stored_results",
    "write_results",
]
