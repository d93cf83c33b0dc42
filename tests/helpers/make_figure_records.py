"""Write tests/helpers/data/mix_paper_records.json: real records of every mixing-paper study on
tiny settings (seeds 0 and 1), the inputs of their figures in the layout tests. Rerun after a
study's record format changes:

    .venv/bin/python -m tests.helpers.make_figure_records
"""

from __future__ import annotations

import json
from pathlib import Path

from core.mixup.papers import adamixup as am
from core.mixup.papers import adautomix as aa
from core.mixup.papers import attention_labels as al
from core.mixup.papers import feature_learning as fl
from core.mixup.papers import mochi as mc
from core.mixup.papers import neural_collapse as nc
from core.mixup.papers import supremix as sr

OUT = Path(__file__).resolve().parent / "data" / "mix_paper_records.json"
SEEDS = (0, 1)


def records() -> dict[str, dict]:
    return {
        "feature_learning": fl.run_feature_learning(
            fl.FeatureNoiseConfig(n_train=20, n_test=40, dim=40, steps=6, log_every=3, mix_until=3),
            seeds=SEEDS,
        ),
        "neural_collapse": nc.run_neural_collapse(
            nc.CollapseConfig(width=16, epochs=1, n_mix=60, n_figure=30), seeds=SEEDS
        ),
        "supremix": sr.run_supremix(
            sr.SupReMixConfig(n_train=64, n_test=40, width=16, epochs=1, batch_size=32),
            seeds=SEEDS,
        ),
        "mochi": mc.run_mochi(
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
        "adamixup": am.run_adamixup(
            am.AdaMixUpConfig(n_train=64, width=4, epochs=2, batch_size=32), seeds=SEEDS
        ),
        "adautomix": aa.run_adautomix(
            aa.AdAutoMixConfig(n_train=64, width=4, epochs=1, batch_size=32, gen_width=4),
            seeds=SEEDS,
        ),
        "attention_labels": al.run_attention_labels(
            al.AttentionLabelConfig(
                n_train=64, width=16, depth=1, heads=2, epochs=1, batch_size=32
            ),
            seeds=SEEDS,
        ),
    }


def main() -> None:
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(records(), separators=(",", ":")))
    print(f"{OUT}: {OUT.stat().st_size / 1e3:.0f} kB")


if __name__ == "__main__":
    main()
