"""The FusionBench family and LoRA combinations: ours against FusionBench's / PEFT's code.

    python3 -m venv .venv-fusionbench                           # once: FusionBench beside torch
    echo "$PWD/.venv/lib/python3.11/site-packages" > \\
        .venv-fusionbench/lib/python3.11/site-packages/_main_venv.pth
    .venv-fusionbench/bin/pip install fusion-bench==0.2.33      # uses the installed CPU torch
    python benchmarks/bench_merge_methods.py                    # 4 task vectors of 25.2M
    python benchmarks/bench_merge_methods.py --tasks 8 --quick  # smaller matrices

Task vectors: ``--n-matrices`` float32 matrices of ``--dim`` x ``--dim`` (96 x 512² = 25.2M
entries each by default) plus one bias vector per matrix, seeded. Both sides run in one
benchmark run on the same tensors (saved once to a temporary file): ours in this process,
FusionBench's functions (``iso_c``, ``iso_cts``, ``compute_and_sum_svd_mem_reduction``,
``wudi_merging``, ``emr_merge``, ``_magmax_select``, the flat ``generate_task_masks`` plus the
sum that feeds it) in a subprocess of ``.venv-fusionbench``; each timing covers the merge only
(no loading), best of ``--repeats``, with the same torch thread count (``--threads``, 1 by
default on the shared machine). The SVD-based methods also report one ``torch.linalg.svd``
of every matrix they must decompose (TSV: each task matrix; Iso-C: each summed matrix;
Iso-CTS: both), their floor. WUDI runs ``--wudi-steps`` Adam steps on both sides (300 in the
paper; fewer here to keep the run short — the per-step cost is what differs). LoRA: four
rank-16 adapters on ``--n-matrices`` modules, ``combine_adapters`` against PEFT's
``add_weighted_adapter`` for ``svd``, ``ties`` and ``cat``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
FB_PYTHON = Path(
    os.environ.get("MIXMERGE_FUSIONBENCH_PYTHON", ROOT / ".venv-fusionbench" / "bin" / "python")
)


def _best(fn: Callable[[], Any], repeats: int) -> float:
    """Best wall time of ``repeats`` calls (after one untimed call when ``repeats`` > 1)."""
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def make_inputs(path: Path, tasks: int, n: int, dim: int) -> None:
    import torch
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(0)
    tensors = {}
    for i in range(n):
        tensors[f"base.l{i}.weight"] = torch.randn(dim, dim, generator=g)
        tensors[f"base.l{i}.bias"] = torch.randn(dim, generator=g)
        for t in range(tasks):
            tensors[f"tv{t}.l{i}.weight"] = 0.01 * torch.randn(dim, dim, generator=g)
            tensors[f"tv{t}.l{i}.bias"] = 0.01 * torch.randn(dim, generator=g)
    save_file(tensors, str(path))


def _split(path: Path, tasks: int) -> tuple[dict, list[dict]]:
    from safetensors.torch import load_file

    raw = load_file(str(path))
    base = {k[5:]: v for k, v in raw.items() if k.startswith("base.")}
    tvs = [
        {k[len(f"tv{t}.") :]: v for k, v in raw.items() if k.startswith(f"tv{t}.")}
        for t in range(tasks)
    ]
    return base, tvs


METHODS = ("tsv", "iso_c", "iso_cts", "wudi", "emr", "tall_masks", "magmax")


def run_fusionbench(
    path: Path, tasks: int, repeats: int, threads: int, steps: int, only: tuple[str, ...] = METHODS
) -> dict:
    """Time FusionBench's functions on the saved tensors (runs inside .venv-fusionbench)."""
    import torch
    from fusion_bench.method.emr_merging.utils import emr_merge
    from fusion_bench.method.isotropic_merging.iso_utils import iso_c, iso_cts
    from fusion_bench.method.magmax.magmax import _magmax_select
    from fusion_bench.method.tall_mask.utils import generate_task_masks
    from fusion_bench.method.task_singular_vector.utils.TSVM_utils import (
        compute_and_sum_svd_mem_reduction,
    )
    from fusion_bench.method.wudi.wudi import wudi_merging

    torch.set_num_threads(threads)
    base, tvs = _split(path, tasks)
    keys = list(base)

    def tall() -> None:
        flat_tv = torch.stack([torch.cat([tv[k].reshape(-1) for k in keys]) for tv in tvs])
        flat_ptm = torch.cat([base[k].reshape(-1) for k in keys])
        generate_task_masks(flat_tv, flat_tv + flat_ptm, flat_ptm, tall_mask_lambda=0.6)

    jobs: dict[str, Callable[[], Any]] = {
        "tsv": lambda: compute_and_sum_svd_mem_reduction(tvs, accelerator="cpu"),
        "iso_c": lambda: iso_c(tvs, accelerator="cpu"),
        "iso_cts": lambda: iso_cts(tvs, 0.8, accelerator="cpu"),
        "emr": lambda: emr_merge(tvs),
        "magmax": lambda: _magmax_select(tvs),
        "tall_masks": tall,
        "wudi": lambda: wudi_merging(tvs, accelerator="cpu", iter_num=steps),
    }
    mat = next(k for k in keys if base[k].ndim == 2)
    small = [{"w": tv[mat][:8, :8].clone()} for tv in tvs]
    wudi_merging(small, accelerator="cpu", iter_num=2)  # first Adam step imports torch._dynamo
    out: dict[str, float] = {}
    for name in only:
        with torch.no_grad() if name != "wudi" else contextlib.nullcontext():
            out[name] = _best(jobs[name], repeats if name != "wudi" else 1)
    return out


def run_ours(
    path: Path, tasks: int, repeats: int, threads: int, steps: int, only: tuple[str, ...] = METHODS
) -> dict:
    sys.path.insert(0, str(ROOT))
    import torch

    from core.merge import TENSOR_METHODS, emr_merge, tall_masks_merge

    torch.set_num_threads(threads)
    base, tvs = _split(path, tasks)
    zero = {k: torch.zeros_like(v) for k, v in base.items()}
    keys = list(base)

    def per_tensor(name: str, **kw: Any) -> Callable[[], None]:
        fn = TENSOR_METHODS[name]
        return lambda: [fn([tv[k] for tv in tvs], None, **kw) for k in keys]

    jobs: dict[str, Callable[[], Any]] = {
        "tsv": per_tensor("tsv"),
        "iso_c": per_tensor("iso_c"),
        "iso_cts": per_tensor("iso_cts"),
        "emr": lambda: emr_merge(tvs, base=zero, rescale="tensor_mean"),
        "magmax": per_tensor("magmax", scale=1.0),
        "tall_masks": lambda: tall_masks_merge(tvs, base=zero),
        "wudi": per_tensor("wudi", steps=steps),
    }
    mat = next(k for k in keys if base[k].ndim == 2)
    TENSOR_METHODS["wudi"]([tv[mat][:8, :8] for tv in tvs], None, steps=2)  # warm-up
    out: dict[str, float] = {}
    for name in only:
        out[name] = _best(jobs[name], repeats if name != "wudi" else 1)
    if not {"tsv", "iso_c", "iso_cts"} & set(only):
        return out
    mats = [k for k in keys if base[k].ndim == 2]
    stack = [torch.stack([tv[k] for tv in tvs]) for k in mats]
    summed = [s.sum(0) for s in stack]
    svd_tasks = _best(lambda: [torch.linalg.svd(s, full_matrices=False) for s in stack], repeats)
    svd_sum = _best(lambda: [torch.linalg.svd(s, full_matrices=False) for s in summed], repeats)
    out["svd_floor_tsv"] = svd_tasks
    out["svd_floor_iso_c"] = svd_sum
    out["svd_floor_iso_cts"] = svd_tasks + svd_sum
    return out


def run_lora(n: int, dim: int, repeats: int, threads: int) -> dict:
    """combine_adapters vs PEFT add_weighted_adapter: 4 rank-16 adapters on n Linear modules."""
    sys.path.insert(0, str(ROOT))
    import copy

    import torch
    from peft import LoraConfig, PeftModel, get_peft_model
    from torch import nn

    from core.lora import combine_adapters, load_adapter

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    net = nn.Sequential(*[nn.Linear(dim, dim) for _ in range(n)])
    tmp = Path(tempfile.mkdtemp())
    names = []
    for i in range(4):
        torch.manual_seed(i + 1)
        cfg = LoraConfig(
            r=16, lora_alpha=32, target_modules=[str(j) for j in range(n)], init_lora_weights=False
        )
        get_peft_model(copy.deepcopy(net), cfg).save_pretrained(tmp / f"a{i}")
        names.append(f"a{i}")
    model = PeftModel.from_pretrained(copy.deepcopy(net), tmp / "a0", adapter_name="a0")
    for i in range(1, 4):
        model.load_adapter(tmp / f"a{i}", adapter_name=f"a{i}")
    ads = [load_adapter(tmp / f"a{i}") for i in range(4)]
    w = [1.0, 0.5, -0.5, 0.25]
    out: dict[str, float] = {}
    for ctype, kw in [("svd", {}), ("ties", {"density": 0.5}), ("cat", {})]:
        count = {"i": 0}

        def peft_call(ctype: str = ctype, kw: dict = kw, count: dict = count) -> None:
            count["i"] += 1
            model.add_weighted_adapter(
                names, w, f"m{ctype}{count['i']}", combination_type=ctype, **kw
            )

        out[f"peft_{ctype}"] = _best(peft_call, repeats)
        out[f"ours_{ctype}"] = _best(
            lambda ctype=ctype, kw=kw: combine_adapters(ads, w, ctype, **kw), repeats
        )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tasks", type=int, default=4)
    ap.add_argument("--n-matrices", type=int, default=96)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--wudi-steps", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="24 matrices of 256²")
    ap.add_argument("--skip-lora", action="store_true")
    ap.add_argument("--methods", default=",".join(METHODS), help="comma-separated subset")
    ap.add_argument("--worker", choices=["fusionbench"], help=argparse.SUPPRESS)
    ap.add_argument("--inputs", help=argparse.SUPPRESS)
    args = ap.parse_args()
    only = tuple(m for m in args.methods.split(",") if m)
    bad = sorted(set(only) - set(METHODS))
    if bad:
        ap.error(f"--methods: unknown {bad}; expected some of {METHODS}")
    if args.worker == "fusionbench":
        print(
            json.dumps(
                run_fusionbench(
                    Path(args.inputs), args.tasks, args.repeats, args.threads, args.wudi_steps, only
                )
            )
        )
        return
    if args.quick:
        args.n_matrices, args.dim = 24, 256
    n_params = args.n_matrices * (args.dim * args.dim + args.dim)
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "inputs.safetensors"
        make_inputs(path, args.tasks, args.n_matrices, args.dim)
        ours = run_ours(path, args.tasks, args.repeats, args.threads, args.wudi_steps, only)
        fb: dict[str, float] = {}
        if FB_PYTHON.is_file():
            cmd = [
                str(FB_PYTHON),
                __file__,
                "--worker",
                "fusionbench",
                "--inputs",
                str(path),
                "--tasks",
                str(args.tasks),
                "--repeats",
                str(args.repeats),
                "--threads",
                str(args.threads),
                "--wudi-steps",
                str(args.wudi_steps),
                "--methods",
                ",".join(only),
            ]
            run = subprocess.run(cmd, capture_output=True, text=True, check=True)
            fb = json.loads(run.stdout.strip().splitlines()[-1])
        else:
            print(f"(FusionBench virtualenv not found at {FB_PYTHON}: peer column empty)")
    print(
        f"\n{args.tasks} task vectors of {n_params / 1e6:.1f}M float32 "
        f"({args.n_matrices} x {args.dim}² + biases), {args.threads} thread(s), "
        f"best of {args.repeats} (WUDI: {args.wudi_steps} steps, one run)\n"
    )
    print(
        "| method | ours (s) | FusionBench (s) | FusionBench / ours | SVD floor (s) | ours / floor |"
    )
    print("|---|---|---|---|---|---|")
    for m in only:
        peer = fb.get(m)
        floor = ours.get(f"svd_floor_{m}")
        cells = [
            f"{ours[m]:.3f}",
            "—" if peer is None else f"{peer:.3f}",
            "—" if peer is None else f"{peer / ours[m]:.2f}x",
            "—" if floor is None else f"{floor:.3f}",
            "—" if floor is None else f"{ours[m] / floor:.2f}",
        ]
        print(f"| {m} | " + " | ".join(cells) + " |")
    if not args.skip_lora:
        lora = run_lora(args.n_matrices // 4, args.dim, args.repeats, args.threads)
        print(
            f"\nLoRA: 4 rank-16 adapters on {args.n_matrices // 4} Linear({args.dim}, {args.dim})\n"
        )
        print("| combination | ours (s) | PEFT add_weighted_adapter (s) | PEFT / ours |")
        print("|---|---|---|---|")
        for c in ("svd", "ties", "cat"):
            o, p = lora[f"ours_{c}"], lora[f"peft_{c}"]
            print(f"| {c} | {o:.3f} | {p:.3f} | {p / o:.2f}x |")


if __name__ == "__main__":
    main()
