"""Reference outputs from FusionBench's own functions, run in FusionBench's virtualenv.

Usage (by tests/merge/test_merge_fusionbench.py): ``.venv-fusionbench/bin/python
tests/helpers/fusionbench_driver.py IN.pt OUT.pt``. IN holds ``tvs`` (task vectors, list of dicts of
float64 tensors), ``base`` (θ₀), ``weights``, ``wudi_steps``, ``mask_lambda`` and ``regmean``
(weights, grams, ratio of one linear layer); OUT maps a job name to FusionBench's result.
Nothing here is imported by the project; it only calls fusion_bench (0.2.33) as published.
"""

from __future__ import annotations

import sys

import torch
from fusion_bench.method.emr_merging.utils import emr_merge
from fusion_bench.method.isotropic_merging.iso_utils import iso_c, iso_cts
from fusion_bench.method.magmax.magmax import _magmax_select
from fusion_bench.method.regmean_plusplus.regmean_plusplus import regmean_params_merge
from fusion_bench.method.tall_mask.utils import generate_task_masks
from fusion_bench.method.task_singular_vector.utils.TSVM_utils import (
    compute_and_sum_svd_mem_reduction,
)
from fusion_bench.method.wudi.wudi import wudi_merging


def _clone(tvs):
    return [{k: v.clone() for k, v in tv.items()} for tv in tvs]


def main(src: str, dst: str) -> None:
    data = torch.load(src, weights_only=True)
    tvs, base = data["tvs"], data["base"]
    keys = list(tvs[0])
    out: dict[str, object] = {}
    out["tsv"] = compute_and_sum_svd_mem_reduction(_clone(tvs), exclude_keys=[], accelerator="cpu")
    weighted = [
        {k: v * w for k, v in tv.items()} for tv, w in zip(tvs, data["weights"], strict=True)
    ]
    out["tsv_weighted"] = compute_and_sum_svd_mem_reduction(
        weighted, exclude_keys=[], accelerator="cpu"
    )
    out["iso_c"] = iso_c(_clone(tvs), accelerator="cpu")
    out["iso_cts"] = iso_cts(_clone(tvs), common_space_fraction=0.8, accelerator="cpu")
    out["iso_cts_half"] = iso_cts(_clone(tvs), common_space_fraction=0.5, accelerator="cpu")
    wudi = wudi_merging(_clone(tvs), accelerator="cpu", iter_num=data["wudi_steps"])
    out["wudi"] = {k: v.detach().clone() for k, v in wudi.items()}
    unified, masks, rescalers = emr_merge(_clone(tvs))
    out["emr_unified"] = unified
    out["emr_masks"] = {k: torch.stack(v) for k, v in masks.items()}
    out["emr_rescalers"] = rescalers
    out["magmax"] = _magmax_select(_clone(tvs))
    flat_tv = torch.stack([torch.cat([tv[k].reshape(-1) for k in keys]) for tv in tvs])  # (T, P)
    flat_ptm = torch.cat([base[k].reshape(-1) for k in keys])  # (P,)
    flat_ft = flat_tv + flat_ptm  # (T, P)
    out["tall_masks"] = generate_task_masks(
        flat_tv, flat_ft, flat_ptm, tall_mask_lambda=data["mask_lambda"]
    )
    rm = data["regmean"]
    out["regmean_layer"] = regmean_params_merge(
        rm["weights"], rm["grams"], reduce_non_diagonal_ratio=rm["ratio"]
    )
    torch.save(out, dst)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
