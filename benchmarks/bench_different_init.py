"""ZipIt! and PLeaS vs permutation-only merging of two MLPs from different initialisations.

Trains two MLPs (width 64, depth 2, 20 epochs of Adam 3e-3, seeds ``--seed`` and ``--seed+1``)
either on the same task (``--setting same``: both on digits) or on disjoint class splits as in
ZipIt! (``--setting split``: digits_0-4 and digits_5-9, 10-way heads), then runs
:func:`core.papers.different_init.different_init_study` on the full digits test split
(1000 unlabelled training inputs; 95% bootstrap CIs over test samples) and prints one row per
method with its size relative to one model.

    nice -n 10 .venv/bin/python benchmarks/bench_different_init.py --setting split [--json out]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.data import get_task  # noqa: E402
from core.device import configure_threads  # noqa: E402
from core.models import create_model  # noqa: E402
from core.papers.different_init import different_init_study  # noqa: E402
from core.train import TrainConfig, train  # noqa: E402


def fit(task: str, seed: int):
    d = get_task(task)
    m = create_model("mlp", width=64, depth=2, seed=seed)
    train(
        m,
        d.x_train,
        d.y_train,
        TrainConfig(epochs=20, lr=3e-3, seed=seed),
        n_classes=10,
        device="cpu",
    )
    return m, {k: v.detach().clone() for k, v in m.state_dict().items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--setting", choices=["same", "split"], default="split")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    configure_threads()
    t0 = time.perf_counter()
    ta, tb = ("digits", "digits") if args.setting == "same" else ("digits_0-4", "digits_5-9")
    model, sd_a = fit(ta, args.seed)
    _, sd_b = fit(tb, args.seed + 1)
    t_train = time.perf_counter() - t0
    study = different_init_study(model, sd_a, sd_b, get_task("digits"), n_examples=1000, seed=0)
    t_study = time.perf_counter() - t0 - t_train
    for r in study.rows:
        ratio = "" if r["ratio"] is None else f" r={r['ratio']}"
        print(
            f"{r['method'] + ratio:36s} size {r['size']:.2f}  acc {100 * r['accuracy']:.1f} "
            f"[{100 * r['low']:.1f}, {100 * r['high']:.1f}]"
        )
    print(f"training {t_train:.0f} s, study {t_study:.0f} s")
    if args.json:
        args.json.write_text(json.dumps({"setting": args.setting, "rows": study.rows}, indent=1))


if __name__ == "__main__":
    main()
