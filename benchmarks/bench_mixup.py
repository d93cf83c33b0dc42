"""Mixup / CutMix batch throughput against torchvision.transforms.v2 and timm; FMix masks
per sample in torch against the reference per-sample numpy approach.

torchvision and timm do not import beside the pinned torch 2.13.0 of ``.venv``, so on this
project's CPU machine it runs in a separate environment::

    python3 -m venv .venv-bench
    .venv-bench/bin/pip install torch==2.14.1 torchvision==0.29.1 timm numpy numba
    .venv-bench/bin/pip install -e . --no-deps
    .venv-bench/bin/python benchmarks/bench_mixup.py [--batch 128] [--size 224] [--repeats 7]

In any single environment where torch, torchvision and timm import together (e.g. a GPU machine),
run it from the repository root without installing the project (the root is put on ``sys.path``)::

    python benchmarks/bench_mixup.py --device cuda

On CUDA every candidate is timed up to ``torch.cuda.synchronize()``; FMix masks are drawn on the
CPU (the generator is a CPU one) and the torch timing includes moving them to the device.
Without torchvision/timm the peers are skipped and only core's numbers and the copy floor print.
All mixers see the same float32 batch (N, 3, S, S) and integer labels; timm mixes in place, so it
runs on its own scratch copy made once (its time then excludes any clone, as in its training use).
The header line gives the load average: on a shared machine compare only ratios from one run.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # core without an install

from core.device import cpu_model  # noqa: E402
from core.mixup import fmix_masks, mix  # noqa: E402


def timed_interleaved(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Best wall time of each ``fn`` in milliseconds, the candidates run in turn each round.

    On a shared machine the load moves during a run; interleaving lets every candidate see the
    same conditions and the minimum is the least disturbed measurement.
    """
    for fn in fns.values():
        fn()
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            best[name] = min(best[name], (time.perf_counter() - t0) * 1e3)
    return best


def numpy_fmix_mask(
    lam: float, shape: tuple[int, int], decay: float, rng: np.random.Generator
) -> np.ndarray:
    """Reference FMix mask, one sample (after ecs-vlc/FMix ``sample_mask``): scaled complex
    Gaussian spectrum, irfftn, min-max normalise, argsort, top ⌈λN⌉ or ⌊λN⌋ pixels set to 1."""
    h, w = shape
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.fftfreq(w)[: w // 2 + 2] if w % 2 == 1 else np.fft.fftfreq(w)[: w // 2 + 1]
    freqs = np.sqrt(fx[None, :] ** 2 + fy**2)
    scale = 1.0 / np.maximum(freqs, np.array([1.0 / max(h, w)])) ** decay
    param = rng.standard_normal((2, *freqs.shape))
    spectrum = scale * (param[0] + 1j * param[1])
    grey = np.real(np.fft.irfftn(spectrum, s=shape, axes=(0, 1)))[:h, :w]
    grey = (grey - grey.min()) / (grey.max() - grey.min())
    n = h * w
    num = int(np.ceil(lam * n)) if rng.random() > 0.5 else int(np.floor(lam * n))
    order = grey.reshape(-1).argsort()[::-1]
    mask = np.zeros(n)
    mask[order[:num]] = 1.0
    return mask.reshape(h, w)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"--device {args.device}: CUDA is not available here")
    n, s, k = args.batch, args.size, 1000
    g = torch.Generator().manual_seed(0)
    x = torch.rand(n, 3, s, s, generator=g).to(dev)
    y = torch.randint(0, k, (n,), generator=g).to(dev)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)

    def run(fn: Callable[[], object]) -> Callable[[], None]:
        def f() -> None:
            fn()
            sync()

        return f

    fns: dict[str, Callable[[], object]] = {"copy": run(lambda: x.clone())}
    for name in ("mixup", "cutmix"):
        fns[f"{name}/core"] = run(lambda name=name: mix(name, x, y, generator=g, n_classes=k))
    try:
        from torchvision.transforms import v2

        tv = {
            "mixup": v2.MixUp(alpha=1.0, num_classes=k),
            "cutmix": v2.CutMix(alpha=1.0, num_classes=k),
        }
        for name, t in tv.items():
            fns[f"{name}/torchvision"] = run(lambda t=t: t(x, y))
    except (ImportError, RuntimeError, OSError) as err:  # absent, or built for another torch
        print(f"torchvision unavailable ({err}); skipped")
    try:
        from timm.data import Mixup

        scratch = x.clone()
        timm_fns = {
            "mixup": Mixup(mixup_alpha=1.0, cutmix_alpha=0.0, num_classes=k, label_smoothing=0.0),
            "cutmix": Mixup(mixup_alpha=0.0, cutmix_alpha=1.0, num_classes=k, label_smoothing=0.0),
        }
        for name, t in timm_fns.items():
            fns[f"{name}/timm"] = run(lambda t=t: t(scratch, y))
    except (ImportError, RuntimeError, OSError) as err:  # absent, or built for another torch
        print(f"timm unavailable ({err}); skipped")
    best = timed_interleaved(fns, args.repeats)
    copy_ms = best["copy"]
    rows: dict[str, dict[str, float]] = {"mixup": {}, "cutmix": {}}
    for key, ms in best.items():
        if "/" in key:
            name, who = key.split("/")
            rows[name][who] = ms

    where = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg()) if hasattr(os, "getloadavg") else "?"
    print(
        f"\n{cpu_model()}, {os.cpu_count()} cores, load average {load}; {args.threads} threads, "
        f"torch {torch.__version__}, Python {platform.python_version()}, device {dev} ({where}); "
        f"batch {n}x3x{s}x{s} float32, best of {args.repeats} interleaved\n"
    )
    print(
        "| mixer | core (ms) | torchvision (ms) | timm (ms) | plain copy (ms) | tv / core | timm / core | core / copy |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name, r in rows.items():
        c = r["core"]
        tvs = r.get("torchvision")
        tms = r.get("timm")
        print(
            f"| {name} | {c:.1f} | {'-' if tvs is None else f'{tvs:.1f}'} | "
            f"{'-' if tms is None else f'{tms:.1f}'} | {copy_ms:.1f} | "
            f"{'-' if tvs is None else f'{tvs / c:.2f}x'} | {'-' if tms is None else f'{tms / c:.2f}x'} | "
            f"{c / copy_ms:.2f}x |"
        )

    print("\n| FMix masks, per sample | torch (ms) | numpy reference (ms) | numpy / torch |")
    print("|---|---|---|---|")
    rng = np.random.default_rng(0)
    for side in (32, 224):
        lam = torch.rand(n, generator=g)
        lam_np = lam.numpy()
        best = timed_interleaved(
            {
                "torch": run(
                    lambda side=side, lam=lam: fmix_masks(lam, side, side, generator=g).to(dev)
                ),
                "numpy": lambda side=side, lam_np=lam_np: [
                    numpy_fmix_mask(float(v), (side, side), 3.0, rng) for v in lam_np
                ],
            },
            args.repeats,
        )
        t_ms, np_ms = best["torch"], best["numpy"]
        print(f"| {n} x {side}x{side} | {t_ms:.1f} | {np_ms:.1f} | {np_ms / t_ms:.2f}x |")


if __name__ == "__main__":
    main()
