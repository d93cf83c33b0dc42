"""Write tests/helpers/data/mix_paper_records.json: real records of every mixing-paper study on
tiny settings (seeds 0 and 1), the inputs of their figures in the layout tests. Rerun after a
study's record format changes (naming studies rewrites only their records):

    .venv/bin/python -m tests.helpers.make_figure_records [STUDY ...]
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

from core.mixup.papers import adamixup as am
from core.mixup.papers import adautomix as aa
from core.mixup.papers import attention_labels as al
from core.mixup.papers import dualmix as dm
from core.mixup.papers import feature_learning as fl
from core.mixup.papers import mochi as mc
from core.mixup.papers import neural_collapse as nc
from core.mixup.papers import supremix as sr

OUT = Path(__file__).resolve().parent / "data" / "mix_paper_records.json"
SEEDS = (0, 1)


def builders() -> dict[str, Callable[[], dict]]:
    """study -> the tiny run that makes its record."""
    return {
        "feature_learning": lambda: fl.run_feature_learning(
            fl.FeatureNoiseConfig(n_train=20, n_test=40, dim=40, steps=6, log_every=3, mix_until=3),
            seeds=SEEDS,
        ),
        "neural_collapse": lambda: nc.run_neural_collapse(
            nc.CollapseConfig(width=16, epochs=1, n_mix=60, n_figure=30), seeds=SEEDS
        ),
        "supremix": lambda: sr.run_supremix(
            sr.SupReMixConfig(n_train=64, n_test=40, width=16, epochs=1, batch_size=32),
            seeds=SEEDS,
        ),
        "mochi": lambda: mc.run_mochi(
            mc.MoChiConfig(
                n_train=128,
                width=16,
                embed_dim=8,
                epochs=1,
                batch_size=32,
                queue=64,
                n_hard=8,
                s1=4,
                s2=2,
                probe_epochs=5,
            ),
            seeds=SEEDS,
        ),
        "adamixup": lambda: am.run_adamixup(
            am.AdaMixUpConfig(n_train=64, width=4, epochs=2, batch_size=32), seeds=SEEDS
        ),
        "adautomix": lambda: aa.run_adautomix(
            aa.AdAutoMixConfig(n_train=64, width=4, epochs=1, batch_size=32, gen_width=4),
            seeds=SEEDS,
        ),
        "attention_labels": lambda: al.run_attention_labels(
            al.AttentionLabelConfig(
                n_train=64, width=16, depth=1, heads=2, epochs=1, batch_size=32
            ),
            seeds=SEEDS,
        ),
        "dualmix": lambda: dm.run_dualmix(
            dm.DualMixConfig(
                task="digits", n_train=200, buffer_size=20, width=4, eval_every=5, n_eval=100
            ),
            seeds=SEEDS,
        ),
    }


def records(names: list[str] | None = None) -> dict[str, dict]:
    """The records of ``names`` (all studies when None)."""
    todo = builders()
    return {k: make() for k, make in todo.items() if names is None or k in names}


def main() -> None:
    names = sys.argv[1:] or None
    unknown = sorted(set(names or []) - set(builders()))
    if unknown:
        raise SystemExit(f"studies must be among {sorted(builders())}, got {unknown}")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    stored = json.loads(OUT.read_text()) if names and OUT.exists() else {}
    OUT.write_text(json.dumps({**stored, **records(names)}, separators=(",", ":")))
    print(f"{OUT}: {OUT.stat().st_size / 1e3:.0f} kB")


if __name__ == "__main__":
    main()
