"""Merging throughput: task arithmetic, TIES and DARE against PEFT's reference functions.

    python benchmarks/bench_merge.py            # 4 and 8 task vectors of 25M float32 each
    python benchmarks/bench_merge.py --quick    # 4 x 2M, for a smoke run
    python benchmarks/bench_merge.py --device cuda

Peer: ``peft.utils.merge_utils`` (``task_arithmetic``, ``ties``, ``dare_linear``; PEFT is in
requirements-dev.txt) on the same seeded tensors. Ours: the per-tensor kernels in
``core.merge.TENSOR_METHODS`` with ``base=None`` (the inputs are task vectors, as in PEFT),
TIES with the per-tensor trim that PEFT uses. Each measurement runs in its own subprocess, so
peak memory is that process's peak RSS (CPU; ``torch.cuda.max_memory_allocated`` on CUDA)
minus what the inputs and one warm-up call on tiny inputs already held (so fixed runtime costs
such as numba's JIT runtime are not counted), in output-sized buffers (target <= 2). The
bandwidth bound is one read pass over the inputs (``torch.sum`` of each), measured alike.
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
IMPLS = ("bound", "ours_ta", "peft_ta", "ours_ties", "peft_ties", "ours_dare", "peft_dare")
DENSITY, DROP = 0.2, 0.5


def worker(impl: str, n: int, size: int, device: str, repeats: int) -> dict[str, float]:
    """Run one implementation ``repeats`` times in this process; return time and memory."""
    sys.path.insert(0, str(ROOT))
    import torch

    from core.device import configure_threads
    from core.merge import TENSOR_METHODS

    configure_threads()
    g = torch.Generator().manual_seed(0)
    taus = [torch.randn(size, generator=g).mul_(0.01).to(device) for _ in range(n)]  # no temp
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
    return {"time": min(times), "extra_bytes": max(0, peak - before), "out_bytes": size * 4}


def _impl(impl, taus, weights, torch, methods):  # type: ignore[no-untyped-def]
    if impl == "bound":
        return lambda: [t.sum() for t in taus]
    if impl.startswith("peft"):
        from peft.utils import merge_utils as mu

        return {
            "peft_ta": lambda: mu.task_arithmetic(taus, weights),
            "peft_ties": lambda: mu.ties(taus, weights, DENSITY),
            "peft_dare": lambda: mu.dare_linear(taus, weights, 1.0 - DROP),
        }[impl]
    gen = torch.Generator(device=taus[0].device).manual_seed(1)
    return {
        "ours_ta": lambda: methods["task_arithmetic"](taus, None, scale=1.0),
        "ours_ties": lambda: methods["ties"](taus, None, density=DENSITY, trim="tensor"),
        "ours_dare": lambda: methods["dare"](taus, None, drop=DROP, scale=1.0, generator=gen),
    }[impl]


def measure(impl: str, n: int, size: int, device: str, repeats: int) -> dict[str, float]:
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
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.n, args.size, args.device, args.repeats)))
        return
    settings = [(4, 2_000_000)] if args.quick else [(4, 25_000_000), (8, 25_000_000)]
    print(f"device {args.device}, best of {args.repeats}; extra memory in output-sized buffers")
    print(
        "| N x size | method | ours (s) | PEFT (s) | PEFT / ours | ours extra mem | "
        "PEFT extra mem | read bound (s) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for n, size in settings:
        bound = measure("bound", n, size, args.device, args.repeats)
        for name, ours, peft in (
            ("task arithmetic", "ours_ta", "peft_ta"),
            ("TIES (density 0.2)", "ours_ties", "peft_ties"),
            ("DARE (p 0.5)", "ours_dare", "peft_dare"),
        ):
            a = measure(ours, n, size, args.device, args.repeats)
            b = measure(peft, n, size, args.device, args.repeats)
            print(
                f"| {n} x {size / 1e6:g}M | {name} | {a['time']:.3f} | {b['time']:.3f} | "
                f"{b['time'] / a['time']:.1f}x | {a['extra_bytes'] / a['out_bytes']:.2f} | "
                f"{b['extra_bytes'] / b['out_bytes']:.2f} | {bound['time']:.3f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
