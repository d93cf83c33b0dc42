"""The GPU paths: streaming merges with ``--device cuda``, merges, k-means, mixers and training
on CUDA tensors, each against the CPU result.

Skipped where CUDA is absent (CI has no GPU). ``MIXMERGE_GPU_TEST_DEVICE=cpu`` runs the same
checks with the CPU as the "device", to check the tests themselves on a machine without one.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.helpers.stream import make_family, read_out

DEV = os.environ.get("MIXMERGE_GPU_TEST_DEVICE", "cuda")
ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(
    DEV.startswith("cuda") and not torch.cuda.is_available(), reason="no CUDA device here"
)


@pytest.fixture(scope="module")
def family(tmp_path_factory: pytest.TempPathFactory):
    return make_family(tmp_path_factory.mktemp("gpu_family"), width=64)


STREAM_CASES = {
    "linear": {"normalize": True},
    "task_arithmetic": {"lambda": 0.4},
    "ties": {"density": 0.3, "lambda": 1.0},
    "ties_global": {"density": 0.3, "lambda": 0.8, "trim": "global"},
    "breadcrumbs": {"density": 0.8, "gamma": 0.05},
}


@pytest.mark.parametrize("case", sorted(STREAM_CASES))
def test_stream_merge_on_the_device_equals_the_cpu(case: str, family, tmp_path: Path) -> None:
    from core.stream import stream_merge

    _, _, bpath, paths = family
    method = case.removesuffix("_global")
    cfg: dict = {
        "merge_method": method,
        "models": [{"model": str(p)} for p in paths],
        "parameters": STREAM_CASES[case],
    }
    if method != "linear":
        cfg["base_model"] = str(bpath)
    stream_merge(cfg, tmp_path / "cpu", device="cpu", seed=3, progress=False)
    stream_merge(cfg, tmp_path / "dev", device=DEV, seed=3, progress=False)
    cpu, dev = read_out(tmp_path / "cpu"), read_out(tmp_path / "dev")
    assert list(cpu) == list(dev)
    for k in cpu:
        assert dev[k].dtype == cpu[k].dtype
        # the same algebra; kernels on different hardware round differently, and a TIES entry
        # whose |τ| sits exactly at the threshold may fall on the other side
        close = torch.isclose(dev[k].double(), cpu[k].double(), rtol=1e-5, atol=1e-6)
        assert close.double().mean() > 0.999, (k, (dev[k] - cpu[k]).abs().max())


def test_stream_dare_ties_on_the_device_drops_the_right_fraction(family, tmp_path: Path) -> None:
    from core.stream import stream_merge

    base, fts, bpath, paths = family
    cfg = {
        "merge_method": "dare_ties",
        "base_model": str(bpath),
        "models": [{"model": str(paths[0]), "parameters": {"density": 0.3}}],
        "parameters": {"lambda": 1.0},
    }
    stream_merge(cfg, tmp_path / "dev", device=DEV, seed=1, progress=False)
    out = read_out(tmp_path / "dev")
    kept = changed = 0
    for k, v in out.items():
        if v.is_floating_point():
            kept += int((v != base[k]).sum())
            changed += int((fts[0][k] != base[k]).sum())
            tau = fts[0][k] - base[k]
            on = v != base[k]
            # survivors are τ / 0.3 (DARE's rescale), others stay at the base
            torch.testing.assert_close((v - base[k])[on], tau[on] / 0.3, rtol=1e-4, atol=1e-5)
    assert abs(kept / changed - 0.3) < 0.02


@pytest.mark.parametrize("trim", ["tensor", "global"])
def test_stream_refuses_nan_and_overflow_on_the_device(family, tmp_path: Path, trim: str) -> None:
    """The device path checks NaN/Inf on the device (the CPU path in its reader thread)."""
    from core.stream import StreamError, stream_merge
    from tests.helpers.stream import merge_config, write_sharded

    base, fts, bpath, paths = family
    key = "model.layers.1.mlp.up_proj.weight"
    bad = dict(fts[0])
    bad[key] = bad[key].clone()
    bad[key][0, 0] = float("nan")
    pbad = write_sharded(bad, tmp_path / "bad")
    cfg = merge_config("ties", bpath, [pbad, paths[1]], density=0.5, trim=trim)
    with pytest.raises(StreamError, match=f"'{key}' has NaN/Inf values"):
        stream_merge(cfg, tmp_path / "out", device=DEV, progress=False)
    big = {k: torch.full_like(v, 40000.0, dtype=torch.float16) for k, v in base.items()}
    big["model.step"] = base["model.step"]
    zero = {k: torch.zeros_like(v) for k, v in big.items()}
    pb, pz = write_sharded(big, tmp_path / "big"), write_sharded(zero, tmp_path / "zero")
    with pytest.raises(StreamError, match="overflows torch.float16"):
        stream_merge(
            merge_config("task_arithmetic", pz, [pb, pb]),
            tmp_path / "out",
            device=DEV,
            progress=False,
        )
    assert not (tmp_path / "out").exists()


def test_cli_merge_with_device_flag(family, tmp_path: Path) -> None:
    _, _, bpath, paths = family
    cfg = tmp_path / "c.yml"
    cfg.write_text(
        "merge_method: ties\n"
        f"base_model: {bpath}\n"
        "models:\n" + "".join(f"  - model: {p}\n    parameters: {{density: 0.5}}\n" for p in paths)
    )
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "core",
            "merge",
            str(cfg),
            str(tmp_path / "out"),
            "--device",
            DEV,
            "--quiet",
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "out" / "model.safetensors.index.json").exists()


@pytest.mark.parametrize("method", ["task_arithmetic", "ties", "breadcrumbs", "average", "slerp"])
def test_in_memory_merge_on_device_tensors(method: str) -> None:
    from core.merge import merge

    g = torch.Generator().manual_seed(0)
    base = {"w": torch.randn(300, 40, generator=g), "b": torch.randn(40, generator=g)}
    fts = [
        {k: v + 0.05 * torch.randn(v.shape, generator=g) for k, v in base.items()}
        for _ in range(2 if method == "slerp" else 3)
    ]
    kw: dict = {"base": base} if method not in ("average", "slerp") else {}
    if method == "ties":
        kw.update(density=0.3, trim="tensor")
    cpu = merge(method, fts, **kw)
    on_dev = merge(
        method,
        [{k: v.to(DEV) for k, v in m.items()} for m in fts],
        **{
            k: ({kk: vv.to(DEV) for kk, vv in v.items()} if k == "base" else v)
            for k, v in kw.items()
        },
    )
    for k in cpu:
        assert on_dev[k].device.type == torch.device(DEV).type
        close = torch.isclose(on_dev[k].cpu(), cpu[k], rtol=1e-5, atol=1e-6)
        assert close.double().mean() > 0.999, k


def test_kmeans_on_the_device_finds_the_cpu_solution() -> None:
    from core.cluster import KMeans

    g = torch.Generator().manual_seed(0)
    centres = torch.randn(5, 16, generator=g) * 6
    x = (centres[torch.arange(2000) % 5] + torch.randn(2000, 16, generator=g)).numpy()
    cpu = KMeans(5, random_state=1, device="cpu").fit(x)
    dev = KMeans(5, random_state=1, device=DEV).fit(x)
    assert dev.inertia_ == pytest.approx(cpu.inertia_, rel=1e-4)
    from sklearn.metrics import adjusted_rand_score

    assert adjusted_rand_score(cpu.labels_, dev.labels_) > 0.999


@pytest.mark.parametrize("name", ["mixup", "cutmix", "fmix", "resizemix", "maskmix"])
def test_mixers_on_device_tensors(name: str) -> None:
    from core.mixup import mix

    x = torch.rand(16, 3, 32, 32, device=DEV)
    y = torch.arange(16, device=DEV) % 4
    res = mix(name, x, y, n_classes=4, generator=torch.Generator().manual_seed(0), alpha=1.0)
    assert res.x.device.type == torch.device(DEV).type and res.x.shape == x.shape
    assert torch.allclose(res.y.sum(1).cpu(), torch.ones(16), atol=1e-5)
    assert torch.isfinite(res.x).all()


def test_training_and_evaluation_on_the_device() -> None:
    from core.models import create_model
    from core.train import TrainConfig, evaluate, train

    g = torch.Generator().manual_seed(0)
    y = torch.arange(512) % 2
    x = torch.randn(512, 1, 28, 28, generator=g) * 0.5 + y.view(-1, 1, 1, 1).float()
    model = create_model("cnn", n_classes=2)
    hist = train(model, x, y, TrainConfig(epochs=2, batch_size=64, lr=3e-3), device=DEV)
    assert next(model.parameters()).device.type == torch.device(DEV).type
    assert hist is not None
    res = evaluate(model, x, y, device=DEV)
    assert res.accuracy > 0.95
