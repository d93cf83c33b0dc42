"""Reference outputs of mergekit's merge functions, for tests/merge/test_merge_mergekit.py.

mergekit cannot be installed beside the workbench's pinned packages, so it lives in its own
virtualenv and this script runs there:

    python3 -m venv .venv-mergekit
    .venv-mergekit/bin/pip install torch==2.13.0 mergekit        # mergekit 0.1.5
    .venv-mergekit/bin/python tests/helpers/mergekit_reference.py tests/helpers/mergekit_reference.safetensors

It builds seeded inputs for every case in :data:`CASES`, runs mergekit's own function on them
(``mergekit.merge_methods.api.merge_tensors``, ``karcher_merge_tensors`` for weighted Karcher
means, ``TaskVectorDecompositionTask`` of ``mergekit-extract-lora``) and stores inputs and
outputs in one safetensors file, the case list as JSON in its metadata. DELLA draws its keep
mask with ``torch.bernoulli`` from the global RNG; here ``torch.bernoulli(p)`` is replaced by
``torch.rand(p.shape, generator=g) < p`` with ``g`` seeded per case, which are exactly the
draws of the workbench's DELLA under the same seed, so the random method is compared exactly.

The test compares against the stored file (so it runs where mergekit is not installed) and,
where ``.venv-mergekit`` exists, reruns this script and checks the file is current.
"""

from __future__ import annotations

import json
import sys
from typing import Any

# name, mergekit method, mergekit parameters, shape, number of non-base models (n), base
# (default true), delta scale (default 0.1), sparsity (fraction of delta entries set to 0)
CASES: list[dict[str, Any]] = [
    # DELLA with mergekit's L1 rescale (rescale: true) and without (rescale: false)
    {
        "name": "della_l1",
        "method": "della",
        "shape": [24, 40],
        "n": 3,
        "params": {"weight": [1.0, 0.5, 1.5], "density": 0.6, "epsilon": 0.15, "lambda": 1.2},
    },
    {
        "name": "della_l1_1d",
        "method": "della",
        "shape": [300],
        "n": 3,
        "params": {"weight": 1.0, "density": 0.4, "epsilon": 0.2},
    },
    {
        "name": "della_norescale",
        "method": "della",
        "shape": [24, 40],
        "n": 4,
        "params": {"weight": 1.0, "density": 0.5, "epsilon": 0.1, "rescale": False},
    },
    {
        "name": "della_sum",
        "method": "della",
        "shape": [16, 30],
        "n": 3,
        "params": {"weight": [2.0, 1.0, 0.5], "density": 0.7, "epsilon": 0.1, "normalize": False},
    },
    {
        "name": "della_linear_l1",
        "method": "della_linear",
        "shape": [24, 40],
        "n": 3,
        "params": {"weight": [1.0, 0.5, 1.5], "density": 0.6, "epsilon": 0.15, "lambda": 0.8},
    },
    # Breadcrumbs + TIES, mergekit's per-tensor ranking, sum (default) and mean (normalize)
    {
        "name": "breadcrumbs_ties_sum",
        "method": "breadcrumbs_ties",
        "shape": [30, 40],
        "n": 3,
        "params": {"weight": [1.0, 0.5, 2.0], "density": 0.5, "gamma": 0.05, "lambda": 1.5},
    },
    {
        "name": "breadcrumbs_ties_mean",
        "method": "breadcrumbs_ties",
        "shape": [500],
        "n": 4,
        "params": {"weight": 1.0, "density": 0.3, "gamma": 0.1, "normalize": True},
    },
    # SCE without and with the variance selection
    {"name": "sce_all", "method": "sce", "shape": [30, 40], "n": 3, "params": {}},
    {
        "name": "sce_top30",
        "method": "sce",
        "shape": [30, 40],
        "n": 4,
        "params": {"select_topk": 0.3},
    },
    # RAM and RAM+ (tensor-local) on sparse task vectors
    {"name": "ram", "method": "ram", "shape": [40, 50], "n": 3, "sparsity": 0.7, "params": {}},
    {
        "name": "ramplus_tl",
        "method": "ramplus_tl",
        "shape": [40, 50],
        "n": 3,
        "sparsity": 0.7,
        "params": {"r": 0.5, "alpha": 0.3},
    },
    {
        "name": "ramplus_tl_eps",
        "method": "ramplus_tl",
        "shape": [40, 50],
        "n": 4,
        "sparsity": 0.9,
        "params": {"r": 2.0, "alpha": 1.5, "epsilon": 0.01},
    },
    # NuSLERP: whole tensors, per slice along the last / first axis, with and without base
    {
        "name": "nuslerp_flat_base",
        "method": "nuslerp",
        "shape": [20, 30],
        "n": 2,
        "params": {"weight": [0.3, 0.7]},
    },
    {
        "name": "nuslerp_flat",
        "method": "nuslerp",
        "shape": [20, 30],
        "n": 2,
        "base": False,
        "params": {"weight": [1.0, 3.0]},
    },
    {
        "name": "nuslerp_last_axis",
        "method": "nuslerp",
        "shape": [20, 30],
        "n": 2,
        "params": {"weight": [0.4, 0.6], "nuslerp_flatten": False},
    },
    {
        "name": "nuslerp_first_axis",
        "method": "nuslerp",
        "shape": [20, 30],
        "n": 2,
        "base": False,
        "params": {"weight": [0.4, 0.6], "nuslerp_flatten": False, "nuslerp_row_wise": True},
    },
    # Multi-SLERP with and without base, normalised and not
    {
        "name": "multislerp_base",
        "method": "multislerp",
        "shape": [25, 20],
        "n": 3,
        "params": {"weight": [0.2, 0.5, 0.3]},
    },
    {
        "name": "multislerp",
        "method": "multislerp",
        "shape": [500],
        "n": 4,
        "base": False,
        "params": {"weight": [1.0, 2.0, 1.0, 0.5]},
    },
    {
        "name": "multislerp_raw",
        "method": "multislerp",
        "shape": [25, 20],
        "n": 3,
        "base": False,
        "params": {"weight": [0.2, 0.3, 0.1], "normalize_weights": False},
    },
    # Karcher mean: mergekit's equal weights, and its weighted function
    {
        "name": "karcher",
        "method": "karcher",
        "shape": [30, 20],
        "n": 4,
        "base": False,
        "scale": 1.0,
        "params": {},
    },
    {
        "name": "karcher_weighted",
        "method": "karcher_weighted",
        "shape": [600],
        "n": 3,
        "base": False,
        "scale": 1.0,
        "params": {"alphas": [0.5, 0.3, 0.2], "max_iter": 30},
    },
    # NearSwap and Arcee Fusion (base + one model)
    {"name": "nearswap", "method": "nearswap", "shape": [30, 40], "n": 1, "params": {"t": 0.05}},
    {"name": "arcee_fusion", "method": "arcee_fusion", "shape": [40, 50], "n": 1, "params": {}},
    {"name": "arcee_fusion_1d", "method": "arcee_fusion", "shape": [999], "n": 1, "params": {}},
    # LoRA extraction (one task vector, rank 5)
    {
        "name": "extract_lora",
        "method": "extract_lora",
        "shape": [40, 30],
        "n": 1,
        "params": {"max_rank": 5},
    },
]


def make_inputs(case: dict[str, Any]):  # type: ignore[no-untyped-def]
    """(base or None, [models]) for a case, seeded by its position in :data:`CASES`."""
    import torch

    seed = CASES.index(case)
    g = torch.Generator().manual_seed(1000 + seed)
    shape = case["shape"]
    base = torch.randn(shape, generator=g) * 0.5
    scale = case.get("scale", 0.1)
    models = []
    for _ in range(case["n"]):
        delta = torch.randn(shape, generator=g) * scale
        if case.get("sparsity"):
            delta *= torch.rand(shape, generator=g) >= case["sparsity"]
        models.append(base + delta)
    return (base if case.get("base", True) else None), models


def generate(path: str) -> None:
    """Run mergekit on every case and write inputs, outputs and the case list to ``path``."""
    from importlib.metadata import version

    import torch
    from mergekit.merge_methods.api import merge_tensors
    from mergekit.merge_methods.karcher import karcher_merge_tensors
    from safetensors.torch import save_file

    real_bernoulli = torch.bernoulli
    out: dict[str, torch.Tensor] = {}
    for case in CASES:
        base, models = make_inputs(case)
        name, method, params = case["name"], case["method"], dict(case["params"])
        g = torch.Generator().manual_seed(7 + CASES.index(case))

        torch.bernoulli = _seeded_bernoulli(g)  # type: ignore[assignment]
        try:
            if method == "karcher_weighted":
                res = karcher_merge_tensors(models, params["alphas"], max_iter=params["max_iter"])
            elif method == "extract_lora":
                res = _extract(models[0] - base, params["max_rank"])
            elif base is None:
                res = merge_tensors(models, method, parameters=params)
            else:
                res = merge_tensors([base, *models], method, parameters=params, base_index=0)
        finally:
            torch.bernoulli = real_bernoulli  # type: ignore[assignment]
        if base is not None:
            out[f"{name}/base"] = base.contiguous()
        for i, m in enumerate(models):
            out[f"{name}/in{i}"] = m.contiguous()
        out[f"{name}/out"] = res.contiguous()
    meta = {"cases": json.dumps(CASES), "mergekit": version("mergekit"), "torch": torch.__version__}
    save_file(out, path, metadata=meta)


def _seeded_bernoulli(g):  # type: ignore[no-untyped-def]
    """torch.bernoulli(p) drawn as rand(p.shape, generator=g) < p (the workbench's draws)."""
    import torch

    def drawn(p: torch.Tensor, *args: Any, **kw: Any) -> torch.Tensor:
        return (torch.rand(p.shape, generator=g, dtype=p.dtype) < p).to(p.dtype)

    return drawn


def _extract(tau, rank: int):  # type: ignore[no-untyped-def]
    """mergekit-extract-lora's decomposition of one task vector -> B A (its product)."""
    from mergekit.architecture import WeightInfo
    from mergekit.common import ModelReference
    from mergekit.io.tasks import LoadTensor
    from mergekit.scripts.extract_lora import TaskVectorDecompositionTask, TaskVectorTask

    load = LoadTensor(model=ModelReference.parse("m"), tensor="w")
    task = TaskVectorDecompositionTask(
        weight_info=WeightInfo(name="w"),
        input_task=TaskVectorTask(base_tensor=load, model_tensor=load),
        max_rank=rank,
    )
    a, b = task.execute(task_vector=tau)
    return b @ a


if __name__ == "__main__":
    generate(sys.argv[1])
