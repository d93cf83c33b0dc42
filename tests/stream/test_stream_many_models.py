"""Streaming merges of more than 100 models (the fused kernels take the models as one typed
list, so neither numba's 100-element tuple limit nor a compilation per count applies)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from core.merge import TENSOR_METHODS
from core.stream import stream_merge
from tests.helpers.stream import merge_config, read_out


def _many(root: Path, n: int) -> tuple[dict, list[dict], Path, list[Path]]:
    root.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(0)
    base = {"w": torch.randn(6, 5, generator=g), "b": torch.randn(7, generator=g)}
    save_file(base, str(root / "base.safetensors"))
    models, paths = [], []
    for i in range(n):
        m = {k: v + 0.1 * torch.randn(v.shape, generator=g) for k, v in base.items()}
        save_file(m, str(root / f"m{i}.safetensors"))
        models.append(m)
        paths.append(root / f"m{i}.safetensors")
    return base, models, root / "base.safetensors", paths


@pytest.mark.parametrize("method", ["ties", "linear", "dare_ties"])
def test_stream_merges_more_than_a_hundred_models(tmp_path: Path, method: str) -> None:
    n = 123
    base, models, bpath, paths = _many(tmp_path / "in", n)
    params: dict[str, object] = {"density": 0.5} if method == "ties" else {}
    if method == "dare_ties":
        params = {"density": 1.0}  # mergekit's density is the DARE keep rate: no drop here
    cfg = merge_config(method, None if method == "linear" else bpath, paths, **params)
    stream_merge(cfg, tmp_path / "out", progress=False)
    got = read_out(tmp_path / "out")
    for k in base:
        ts = [m[k] for m in models]
        if method == "ties":
            want = TENSOR_METHODS["ties"](ts, base[k], density=0.5, trim="tensor")
        elif method == "linear":
            want = sum(ts) / n
        else:
            want = TENSOR_METHODS["dare_ties"](ts, base[k], drop=0.0, density=1.0, disjoint="sum")
        torch.testing.assert_close(got[k], want, rtol=1e-5, atol=1e-5)
