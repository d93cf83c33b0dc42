"""Merging throughput: task arithmetic, TIES, DARE and DARE-TIES against PEFT's functions.

    python benchmarks/bench_merge.py            # 4 and 8 task vectors of 25M, every dtype
    python benchmarks/bench_merge.py --quick    # 4 x 2M, for a smoke run
    python benchmarks/bench_merge.py --dtypes bfloat16 --sizes 4x25000000
    python benchmarks/bench_merge.py --device cuda

Every method runs on float32, bfloat16 and float16 inputs (``--dtypes``) in the same run as
its peer; the table gives the ratio PEFT / ours and ours / the read bound. The read bound is
the time to read the inputs once in their own dtype, measured on CPU in each row's own process
right after its timing (:func:`read_bound`: the inputs' bytes summed as int64 by numpy and by
torch, the faster; half precision reads half the bytes, so its bound is half float32's), and
printed with the read bandwidth it implies.
Breadcrumbs (rows of 64) has no PEFT counterpart; its row shows ours and the bound only.

Peer: ``peft.utils.merge_utils`` (``task_arithmetic``, ``ties``, ``dare_linear``; PEFT is in
requirements-dev.txt) on the same seeded tensors. Ours: the per-tensor kernels in
``core.merge.TENSOR_METHODS`` with ``base=None`` (the inputs are task vectors, as in PEFT),
TIES with the per-tensor trim that PEFT uses. Each measurement runs in its own subprocess, so
peak memory is that process's peak RSS (CPU; ``torch.cuda.max_memory_allocated`` on CUDA)
minus what the inputs and one warm-up call on tiny inputs already held (so fixed runtime costs
such as numba's JIT runtime are not counted), in output-sized buffers (target <= 2). The
bandwidth bound is one read pass over the inputs (``torch.sum`` of each), measured alike.

    python benchmarks/bench_merge.py --mergekit-family   # the mergekit family vs mergekit
    python benchmarks/bench_merge.py --mergekit-family --only "DELLA,Karcher"   # a subset

The mergekit-family section (its own functions at the end of this file) runs each of DELLA,
DELLA-linear, Breadcrumbs-TIES, SCE, RAM, RAM+, NuSLERP, Multi-SLERP, Karcher, NearSwap and
Arcee Fusion on 4 fine-tuned 5000 x 5000 float32 tensors (25M parameters each) and a base,
next to mergekit's own implementation (``mergekit.merge_methods.api.merge_tensors``) run in
``.venv-mergekit`` (see benchmarks/bench_stream.py) on the same seeded tensors (both sides
use torch 2.13's generator) with the same intra-op thread count (``MIXMERGE_THREADS``).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
IMPLS = (
    "bound",
    "ours_ta",
    "peft_ta",
    "ours_ties",
    "peft_ties",
    "ours_dare",
    "peft_dare",
    "ours_dare_ties",
    "peft_dare_ties",
    "ours_breadcrumbs",
)
DTYPES = ("float32", "bfloat16", "float16")
DENSITY, DROP = 0.2, 0.5


def worker(
    impl: str, n: int, size: int, device: str, repeats: int, dtype: str = "float32"
) -> dict[str, float]:
    """Run one implementation ``repeats`` times in this process; return time and memory."""
    sys.path.insert(0, str(ROOT))
    import torch

    from core.device import configure_threads
    from core.merge import TENSOR_METHODS

    configure_threads()
    g = torch.Generator().manual_seed(0)
    dt = getattr(torch, dtype)
    taus = [torch.randn(size, generator=g).mul_(0.01).to(device, dt) for _ in range(n)]
    weights = torch.ones(n, device=device)
    fn = _impl(impl, taus, weights, torch, TENSOR_METHODS)
    # One call on tiny inputs first, so that one-time runtime memory (numba's JIT runtime and
    # kernel cache, CUDA context, PEFT's imports) is not counted as the merge's extra memory.
    _impl(impl, [t[:4096].clone() for t in taus], weights, torch, TENSOR_METHODS)()
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.max_memory_allocated()
    else:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
        del out
    peak = (
        torch.cuda.max_memory_allocated()
        if cuda
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    )
    out_bytes = size * taus[0].element_size()
    res = {"time": min(times), "extra_bytes": max(0, peak - before), "out_bytes": out_bytes}
    if impl.startswith("ours") and not cuda:  # after the peak: the read pass allocates nothing
        res.update(read_bound(taus, torch, repeats))
    return res


def read_bound(taus, torch, repeats: int) -> dict[str, float]:  # type: ignore[no-untyped-def]
    """The time to read the inputs once in their own dtype, measured now in this process: the
    bytes of every input viewed as int64 and summed (integer adds: no denormal or NaN slow
    paths, whatever the dtype), by numpy (one thread) and by torch (its intra-op threads);
    the faster is the bound. Returns the bound (s) and the read bandwidth (GB/s)."""
    views = [t.reshape(-1).view(torch.int64) for t in taus]  # same bytes, 8 at a time
    best = float("inf")
    for _ in range(max(2, repeats)):
        for read in (lambda v: v.numpy().sum(), lambda v: v.sum()):
            t0 = time.perf_counter()
            for v in views:
                read(v)
            best = min(best, time.perf_counter() - t0)
    nbytes = sum(t.numel() * t.element_size() for t in taus)
    return {"bound": best, "read_gbps": nbytes / best / 1e9}


def _impl(impl, taus, weights, torch, methods):  # type: ignore[no-untyped-def]
    if impl == "bound":
        return lambda: [t.sum() for t in taus]
    if impl.startswith("peft"):
        from peft.utils import merge_utils as mu

        return {
            "peft_ta": lambda: mu.task_arithmetic(taus, weights),
            "peft_ties": lambda: mu.ties(taus, weights, DENSITY),
            "peft_dare": lambda: mu.dare_linear(taus, weights, 1.0 - DROP),
            "peft_dare_ties": lambda: mu.dare_ties(taus, weights, 1.0 - DROP),
        }[impl]
    gen = torch.Generator(device=taus[0].device).manual_seed(1)
    return {
        "ours_ta": lambda: methods["task_arithmetic"](taus, None, scale=1.0),
        "ours_ties": lambda: methods["ties"](taus, None, density=DENSITY, trim="tensor"),
        "ours_dare": lambda: methods["dare"](taus, None, drop=DROP, scale=1.0, generator=gen),
        # PEFT's dare_ties: drop, elect, disjoint mean, no magnitude trim (our density 1)
        "ours_dare_ties": lambda: methods["dare_ties"](
            taus, None, drop=DROP, density=1.0, scale=1.0, generator=gen
        ),
        "ours_breadcrumbs": lambda: methods["breadcrumbs"](
            [t.view(-1, 64) for t in taus], None, density=0.8, gamma=0.01, scale=1.0
        ),
    }[impl]


def measure(
    impl: str, n: int, size: int, device: str, repeats: int, dtype: str = "float32"
) -> dict[str, float]:
    """Run :func:`worker` in a fresh interpreter and parse its JSON line."""
    cmd = [
        sys.executable,
        __file__,
        "--worker",
        impl,
        "--n",
        str(n),
        "--size",
        str(size),
        "--device",
        device,
        "--repeats",
        str(repeats),
        "--dtype",
        dtype,
    ]
    res = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="4 task vectors of 2M entries")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--worker", choices=IMPLS)
    ap.add_argument("--n", type=int, default=4)
    ap.add_argument("--size", type=int, default=25_000_000)
    ap.add_argument("--mergekit-family", action="store_true", help="the mergekit-family section")
    ap.add_argument("--family-worker", choices=[f[0] for f in FAMILY])
    ap.add_argument("--tool", choices=("ours", "mergekit"), default="ours")
    ap.add_argument("--only", default="", help="mergekit family: comma-separated method names")
    ap.add_argument("--dtype", default="float32", help=argparse.SUPPRESS)  # worker's dtype
    ap.add_argument("--dtypes", default=",".join(DTYPES), help="comma-separated input dtypes")
    ap.add_argument("--sizes", default="", help="comma-separated NxSIZE, e.g. 4x25000000")
    ap.add_argument("--methods", default="", help="comma-separated subset of the method rows")
    args = ap.parse_args()
    if args.mergekit_family or args.family_worker:
        family_main(args)
        return
    if args.worker:
        w = worker(args.worker, args.n, args.size, args.device, args.repeats, args.dtype)
        print(json.dumps(w))
        return
    settings = [(4, 2_000_000)] if args.quick else [(4, 25_000_000), (8, 25_000_000)]
    if args.sizes:
        settings = [(int(a), int(b)) for a, b in (x.split("x") for x in args.sizes.split(","))]
    rows = [
        ("task arithmetic", "ours_ta", "peft_ta"),
        ("TIES (density 0.2)", "ours_ties", "peft_ties"),
        ("DARE (p 0.5)", "ours_dare", "peft_dare"),
        ("DARE-TIES (p 0.5)", "ours_dare_ties", "peft_dare_ties"),
        ("Breadcrumbs (0.8, 0.01)", "ours_breadcrumbs", None),
    ]
    if args.methods:
        rows = [r for r in rows if r[0].split()[0] in args.methods.split(",")]
    print(f"device {args.device}, best of {args.repeats}; extra memory in output-sized buffers")
    print("read bound: the inputs' bytes read once (int64 sum), measured in each row's process")
    print(
        "| N x size | dtype | method | ours (s) | PEFT (s) | PEFT / ours | ours / bound | "
        "ours extra mem | PEFT extra mem | read bound (s) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for n, size in settings:
        f32 = measure("bound", n, size, args.device, args.repeats)["time"]  # float32 read pass
        for dtype in args.dtypes.split(","):
            bound = f32 * (2 if dtype in ("bfloat16", "float16") else 4) / 4
            for name, ours, peft in rows:
                a = measure(ours, n, size, args.device, args.repeats, dtype)
                # CPU: the read pass of this row's inputs, in their dtype, in the same process
                bound = a.get("bound", bound)
                gbps = f" ({a['read_gbps']:.1f} GB/s)" if "read_gbps" in a else ""
                b = measure(peft, n, size, args.device, args.repeats, dtype) if peft else None
                bt = f"{b['time']:.3f}" if b else "-"
                ratio = f"{b['time'] / a['time']:.1f}x" if b else "-"
                bm = f"{b['extra_bytes'] / b['out_bytes']:.2f}" if b else "-"
                print(
                    f"| {n} x {size / 1e6:g}M | {dtype} | {name} | {a['time']:.3f} | {bt} | "
                    f"{ratio} | {a['time'] / bound:.1f} | "
                    f"{a['extra_bytes'] / a['out_bytes']:.2f} | {bm} | {bound:.3f}{gbps} |",
                    flush=True,
                )


# ---- mergekit family: each method next to mergekit's implementation ------------------------

MK_PYTHON = ROOT / ".venv-mergekit" / "bin" / "python"
# (name, our TENSOR_METHODS entry and keyword arguments, mergekit method and parameters,
#  fine-tuned models used, base passed, sparse deltas). The parameters mean the same on both
#  sides (tests/merge/test_merge_mergekit.py checks the outputs agree).
FAMILY: tuple[tuple[str, str, dict, str, dict, int, bool, bool], ...] = (
    (
        "DELLA",
        "della",
        {"density": 0.5, "epsilon": 0.1, "rescale": "l1"},
        "della",
        {"weight": 1.0, "density": 0.5, "epsilon": 0.1},
        4,
        True,
        False,
    ),
    (
        "DELLA linear",
        "della_linear",
        {"density": 0.5, "epsilon": 0.1, "rescale": "l1"},
        "della_linear",
        {"weight": 1.0, "density": 0.5, "epsilon": 0.1},
        4,
        True,
        False,
    ),
    (
        "Breadcrumbs-TIES",
        "breadcrumbs_ties",
        {"density": 0.5, "gamma": 0.01, "scope": "tensor"},
        "breadcrumbs_ties",
        {"weight": 1.0, "density": 0.5, "gamma": 0.01},
        4,
        True,
        False,
    ),
    ("SCE (top 50%)", "sce", {"density": 0.5}, "sce", {"select_topk": 0.5}, 4, True, False),
    ("RAM", "ram", {}, "ram", {}, 4, True, True),
    ("RAM+ (per tensor)", "ram", {"rescale": "tensor"}, "ramplus_tl", {}, 4, True, True),
    ("NuSLERP", "nuslerp", {}, "nuslerp", {"weight": 1.0}, 2, True, False),
    ("Multi-SLERP", "multislerp", {}, "multislerp", {"weight": 1.0}, 4, True, False),
    ("Karcher", "karcher", {}, "karcher", {}, 4, False, False),
    ("NearSwap", "nearswap", {"t": 0.001}, "nearswap", {"t": 0.001}, 1, True, False),
    ("Arcee Fusion", "arcee_fusion", {}, "arcee_fusion", {}, 1, True, False),
)


def family_inputs(torch, n: int, shape: tuple[int, int], sparse: bool):  # type: ignore[no-untyped-def]
    """Base + n fine-tunes (base + 0.002·noise; 90% of the delta zero for RAM's sparse RL-style
    task vectors), seeded, built without N-sized temporaries."""
    g = torch.Generator().manual_seed(0)
    base = torch.randn(shape, generator=g).mul_(0.02)
    models = []
    for _ in range(n):
        delta = torch.randn(shape, generator=g).mul_(0.002)
        if sparse:
            delta.mul_(torch.rand(shape, generator=g) >= 0.9)
        models.append(delta.add_(base))
    return base, models


def family_worker(name: str, tool: str, shape: tuple[int, int], repeats: int) -> dict[str, float]:
    """Time one method of :data:`FAMILY` with one tool in this process."""
    import os

    import torch

    spec = next(f for f in FAMILY if f[0] == name)
    _, ours_name, ours_kw, mk_name, mk_params, n, with_base, sparse = spec
    if tool == "ours":
        sys.path.insert(0, str(ROOT))
        from core.device import configure_threads
        from core.merge import TENSOR_METHODS

        configure_threads()

        def call(base, models):  # type: ignore[no-untyped-def]
            gen = torch.Generator().manual_seed(1)
            kw = dict(ours_kw, generator=gen) if ours_name.startswith("della") else ours_kw
            if ours_name in ("nearswap", "arcee_fusion"):
                return TENSOR_METHODS[ours_name]([base, *models], None, **kw)
            return TENSOR_METHODS[ours_name](models, base if with_base else None, **kw)
    else:
        from mergekit.merge_methods.api import merge_tensors

        if os.environ.get("MIXMERGE_THREADS"):
            torch.set_num_threads(int(os.environ["MIXMERGE_THREADS"]))
        else:
            torch.set_num_threads(max(1, len(os.sched_getaffinity(0))))

        def call(base, models):  # type: ignore[no-untyped-def]
            torch.manual_seed(1)
            if not with_base:
                return merge_tensors(models, mk_name, parameters=mk_params)
            return merge_tensors([base, *models], mk_name, parameters=mk_params, base_index=0)

    small_base, small = family_inputs(torch, n, (64, 64), sparse)
    call(small_base, small)  # imports, JIT and allocator warm-up are not the merge's
    base, models = family_inputs(torch, n, shape, sparse)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = call(base, models)
        times.append(time.perf_counter() - t0)
        del out
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    out_bytes = shape[0] * shape[1] * 4
    return {"time": min(times), "extra_bytes": max(0, peak - before), "out_bytes": out_bytes}


def family_measure(name: str, tool: str, shape: tuple[int, int], repeats: int) -> dict | None:
    """Run :func:`family_worker` in a fresh interpreter (mergekit's virtualenv for mergekit)."""
    python = sys.executable if tool == "ours" else str(MK_PYTHON)
    if tool == "mergekit" and not MK_PYTHON.exists():
        return None
    cmd = [python, __file__, "--family-worker", name, "--tool", tool, "--repeats", str(repeats)]
    cmd += ["--size", str(shape[0])]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"{name} ({tool}) failed: {res.stderr[-2000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def family_main(args: argparse.Namespace) -> None:
    """The mergekit-family table (or one worker run)."""
    side = 1000 if args.quick else 5000
    if args.family_worker:
        side = args.size if args.size != 25_000_000 else side
        print(json.dumps(family_worker(args.family_worker, args.tool, (side, side), args.repeats)))
        return
    print(f"mergekit family, {side} x {side} float32 per model, best of {args.repeats}")
    if not MK_PYTHON.exists():
        print(f"(mergekit's virtualenv {MK_PYTHON} is missing: mergekit columns left empty)")
    print(
        "| method | models | ours (s) | mergekit (s) | mergekit / ours | ours extra mem | "
        "mergekit extra mem |"
    )
    print("|---|---|---|---|---|---|---|")
    only = [x.strip() for x in args.only.split(",") if x.strip()]
    unknown = sorted(set(only) - {f[0] for f in FAMILY})
    if unknown:
        raise SystemExit(
            f"--only names unknown methods {unknown}; expected {[f[0] for f in FAMILY]}"
        )
    for spec in FAMILY:
        name, n = spec[0], spec[5]
        if only and name not in only:
            continue
        a = family_measure(name, "ours", (side, side), args.repeats)
        b = family_measure(name, "mergekit", (side, side), args.repeats)
        assert a is not None
        ratio = f"{b['time'] / a['time']:.2f}x" if b else "—"
        mk_t = f"{b['time']:.3f}" if b else "—"
        mk_m = f"{b['extra_bytes'] / b['out_bytes']:.2f}" if b else "—"
        print(
            f"| {name} | {n} | {a['time']:.3f} | {mk_t} | {ratio} | "
            f"{a['extra_bytes'] / a['out_bytes']:.2f} | {mk_m} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
