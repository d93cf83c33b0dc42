"""Benchmarks for feature geometry and clustering; prints markdown tables with ratios.

1. ``core.geometry.neural_collapse`` on 50,000 x 512 float32 features (10 classes, with a
   classifier) vs a straightforward reference as public codes write it: per-class loops for means
   and Σ_W, and numpy ``pinv`` of the full D x D Σ_B (float64). Target: under 1 s on the CPU.
2. ``core.cluster.KMeans`` (torch) vs scikit-learn ``KMeans`` on the same data, same k and n_init.
3. UMAP first fit (JIT) and warm fit on zoo features (a trained zoo model if a workspace is given,
   else an untrained MLP on MNIST) — what users should expect.

Run: ``python benchmarks/bench_geometry.py [--workspace DIR] [--quick]``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.cluster import KMeans  # noqa: E402
from core.device import configure_threads  # noqa: E402
from core.geometry import extract_features, neural_collapse, sample_rows, umap_embed  # noqa: E402


def reference_nc(h: np.ndarray, y: np.ndarray, w: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """NC1-NC4 the way public codes compute them: loops over classes, full D x D pinv."""
    h = h.astype(np.float64)
    classes = np.unique(y)
    c, d = len(classes), h.shape[1]
    mu_g = h.mean(0)
    means = np.zeros((c, d))
    sw = np.zeros((d, d))
    for i, k in enumerate(classes):
        hk = h[y == k]
        means[i] = hk.mean(0)
        dev = hk - means[i]
        sw += dev.T @ dev
    sw /= len(h)
    mc = means - mu_g
    sb = mc.T @ mc / c
    nc1 = float(np.trace(sw @ np.linalg.pinv(sb, rcond=1e-10)) / c)
    norms = np.linalg.norm(mc, axis=1)
    cos = mc @ mc.T / np.outer(norms, norms)
    equiangular = float(np.abs(cos[~np.eye(c, dtype=bool)] + 1 / (c - 1)).mean())
    nc3 = float(np.linalg.norm(w.T / np.linalg.norm(w) - mc.T / np.linalg.norm(mc)))
    ncc = np.stack([((h - m) ** 2).sum(1) for m in means], 1).argmin(1)
    nc4 = float(((h @ w.T + b).argmax(1) != ncc).mean())
    return {
        "nc1": nc1,
        "nc2_equinorm": float(norms.std() / norms.mean()),
        "nc2_equiangular": equiangular,
        "nc3": nc3,
        "nc4": nc4,
    }


def timed(fn, repeat: int) -> tuple[float, object]:  # noqa: ANN001
    times, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def bench_nc(n: int, d: int, c: int, repeat: int) -> None:
    gen = torch.Generator().manual_seed(0)
    centres = 4.0 * torch.randn(c, d, generator=gen)
    y = torch.randint(0, c, (n,), generator=gen)
    h = centres[y] + torch.randn(n, d, generator=gen)  # (N, D) float32
    w, b = 0.1 * torch.randn(c, d, generator=gen), torch.zeros(c)
    t_ours, ours = timed(lambda: neural_collapse(h, y, (w, b)), repeat)
    hn, yn, wn, bn = h.numpy(), y.numpy(), w.double().numpy(), b.double().numpy()
    t_ref, ref = timed(lambda: reference_nc(hn, yn, wn, bn), max(1, repeat // 2))
    worst = max(abs(ours[k] - v) / max(abs(v), 1e-12) for k, v in ref.items())  # type: ignore[index]
    print(
        f"\n### Neural-collapse metrics, {n:,} x {d} float32 features, {c} classes (median of {repeat})\n"
    )
    print("| implementation | seconds | ratio |\n|---|---|---|")
    print(f"| core.geometry.neural_collapse | {t_ours:.3f} | 1.0 |")
    print(
        f"| reference (per-class loops, numpy pinv of D x D Σ_B) | {t_ref:.3f} | {t_ref / t_ours:.1f}x slower |"
    )
    print(
        f"\nlargest relative difference of NC1-NC4 vs the reference: {worst:.1e}; "
        f"target under 1 s: {'met' if t_ours < 1.0 else 'MISSED'}"
    )


def bench_kmeans(n: int, d: int, k: int, n_init: int, repeat: int) -> None:
    from sklearn.cluster import KMeans as SkKMeans

    rng = np.random.default_rng(0)
    centres = rng.normal(scale=3.0, size=(k, d))
    x = (centres[rng.integers(0, k, n)] + rng.normal(size=(n, d))).astype(np.float32)
    t_ours, ours = timed(
        lambda: KMeans(k, n_init=n_init, random_state=0, device="cpu").fit(x), repeat
    )
    t_sk, sk = timed(lambda: SkKMeans(k, n_init=n_init, random_state=0).fit(x), repeat)
    print(
        f"\n### k-means, {n:,} x {d} float32, k = {k}, n_init = {n_init} (median of {repeat}, CPU)\n"
    )
    print("| implementation | seconds | inertia | ratio |\n|---|---|---|---|")
    print(f"| core.cluster.KMeans (torch) | {t_ours:.3f} | {ours.inertia_:.6g} | 1.0 |")  # type: ignore[attr-defined]
    print(
        f"| sklearn.cluster.KMeans (lloyd) | {t_sk:.3f} | {sk.inertia_:.6g} | {t_sk / t_ours:.2f}x |"
    )  # type: ignore[attr-defined]
    if torch.cuda.is_available():
        xt = torch.from_numpy(x)
        t_gpu, _ = timed(
            lambda: KMeans(k, n_init=n_init, random_state=0, device="cuda").fit(xt), repeat
        )
        print(f"| core.cluster.KMeans (CUDA) | {t_gpu:.3f} | | {t_sk / t_gpu:.2f}x |")


def zoo_features(workspace: str | None, n: int) -> tuple[np.ndarray, str]:
    from core.data import get_task
    from core.models import create_model

    ds = get_task("mnist")
    x, _ = sample_rows(ds.x_train, ds.y_train, n, random_state=0)
    if workspace:
        from core.zoo import Zoo

        zoo = Zoo(workspace)
        if "mlp-mnist-s1" in zoo:
            return extract_features(
                zoo.load_model("mlp-mnist-s1"), x, device="cpu"
            ).numpy(), "zoo mlp-mnist-s1"
    return extract_features(create_model("mlp"), x, device="cpu").numpy(), "untrained default MLP"


def bench_umap(workspace: str | None, sizes: list[int]) -> None:
    print("\n### UMAP on zoo features (MNIST training rows, 2 components, random_state=0)\n")
    print("| N x D | source | first fit in the process (s) | warm fit (s) |\n|---|---|---|---|")
    first = True
    for n in sizes:
        feats, source = zoo_features(workspace, n)
        t_first, _ = timed(lambda f=feats: umap_embed(f, random_state=0), 1)
        t_warm, _ = timed(lambda f=feats: umap_embed(f, random_state=0), 1)
        label = f"{t_first:.1f}" + (" (includes JIT)" if first else "")
        print(f"| {len(feats):,} x {feats.shape[1]} | {source} | {label} | {t_warm:.1f} |")
        first = False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workspace", default=None, help="zoo workspace for UMAP features")
    parser.add_argument("--quick", action="store_true", help="smaller sizes, fewer repeats")
    parser.add_argument("--skip-umap", action="store_true")
    args = parser.parse_args()
    print(f"torch threads: {configure_threads()}, torch {torch.__version__}")
    if args.quick:
        bench_nc(5000, 128, 10, 3)
        bench_kmeans(5000, 32, 8, 3, 1)
    else:
        bench_nc(50_000, 512, 10, 5)
        bench_kmeans(20_000, 64, 10, 3, 3)
    if not args.skip_umap:
        bench_umap(args.workspace, [1000] if args.quick else [2000, 5000])


if __name__ == "__main__":
    main()
