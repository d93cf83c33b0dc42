"""Streaming merges (core.stream): equal to core.merge in memory, mergekit configs, errors,
interruption safety and measured peak memory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from core.merge import TENSOR_METHODS, merge, method_arguments
from core.stream import (
    DiskFullError,
    StreamError,
    evaluate_setting,
    layer_depths,
    load_config,
    model_tensors,
    parse_size,
    stream_merge,
)
from core.stream.engine import tensor_call
from tests.helpers.stream import make_family, make_state, read_out, write_sharded
from tests.helpers.stream import merge_config as config

ROOT = Path(__file__).resolve().parents[2]

# Method files of core.merge that its __init__ may not import yet register their kernels on import.
for _mod in ("ties", "dare", "dare_ties", "breadcrumbs", "slerp", "model_stock"):
    try:
        __import__(f"core.merge.{_mod}")
    except Exception:  # noqa: BLE001  (not written yet, or mid-edit: those cases are skipped)
        pass


def in_stream_order(sd: dict[str, torch.Tensor], folder: Path) -> dict[str, torch.Tensor]:
    """``sd`` with its keys in the order the engine processes them (shard, then offset)."""
    infos = model_tensors(folder)
    return {k: sd[k] for k in sorted(infos, key=lambda k: (str(infos[k].path), infos[k].start))}


@pytest.fixture(scope="module")
def family(tmp_path_factory: pytest.TempPathFactory):
    return make_family(tmp_path_factory.mktemp("family"))


# (mergekit config, core.merge method) pairs that both tools share
CASES = {
    "linear": ("linear", {"normalize": True}),
    "linear_weighted": ("linear", {"weight": 0.0}),  # per-model weights set below
    "task_arithmetic": ("task_arithmetic", {"lambda": 0.4}),
    "ties_tensor": ("ties", {"density": 0.3, "lambda": 1.0}),
    "ties_global": ("ties", {"density": 0.3, "lambda": 0.8, "trim": "global"}),
    "ties_sum": ("ties", {"density": 0.5, "normalize": False, "trim": "global"}),
    "dare_linear": ("dare_linear", {"density": 0.6, "lambda": 0.5}),
    "dare_ties": ("dare_ties", {"density": 0.6, "lambda": 1.0}),
    "breadcrumbs": ("breadcrumbs", {"density": 0.8, "gamma": 0.05}),
    "slerp": ("slerp", {"t": 0.3}),
    "model_stock": ("model_stock", {}),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_stream_equals_in_memory(case: str, family, tmp_path: Path) -> None:
    base, fts, bpath, paths = family
    mk, params = CASES[case]
    params = {k: v for k, v in params.items() if k != "weight"}
    models = paths[:1] if mk == "slerp" else paths
    cfg = config(mk, None if mk == "linear" else bpath, models, **params)
    if case == "linear_weighted":
        for m, w in zip(cfg["models"], (0.5, 1.0, 2.0), strict=True):
            m["parameters"] = {"weight": w}
    parsed = load_config(cfg)
    method, hyper, _ = tensor_call(parsed, "x", 0.0)
    if method not in TENSOR_METHODS:
        pytest.skip(f"core.merge has no per-tensor kernel {method!r} yet")
    rep = stream_merge(cfg, tmp_path / "out", shard_size="24KB", seed=5, progress=False)
    assert len(rep.shards) > 1
    got = read_out(tmp_path / "out")
    ins = [in_stream_order(sd, p) for sd, p in zip(fts, paths, strict=True)]
    accepted = method_arguments(method)
    kw = {k: v for k, v in hyper.items() if k in accepted and k != "threshold"}
    gen = torch.Generator().manual_seed(5)
    if mk == "linear":
        want = merge(method, ins, generator=gen, **kw)
    elif mk == "slerp":
        want = merge(method, [in_stream_order(base, bpath), ins[0]], generator=gen, **kw)
    else:
        want = merge(method, ins, base=in_stream_order(base, bpath), generator=gen, **kw)
    assert list(got) == list(want) or set(got) == set(want)
    for k in want:
        assert got[k].dtype == want[k].dtype, k
        torch.testing.assert_close(got[k], want[k], rtol=0, atol=0, msg=k)
    assert torch.equal(got["model.step"], base["model.step"])


def test_linear_matches_hand_computation_and_copies_files(family, tmp_path: Path) -> None:
    base, fts, bpath, paths = family
    cfg = config("linear", None, paths[:2])
    cfg["models"][0]["parameters"] = {"weight": 1.0}
    cfg["models"][1]["parameters"] = {"weight": 3.0}
    stream_merge(cfg, tmp_path / "out", progress=False)
    got = read_out(tmp_path / "out")
    k = "model.layers.1.mlp.up_proj.weight"
    torch.testing.assert_close(got[k], (fts[0][k] + 3 * fts[1][k]) / 4)
    names = {p.name for p in (tmp_path / "out").iterdir()}
    assert {"config.json", "tokenizer.json", "mergekit_config.yml", "merge_recipe.json"} <= names
    assert "model.safetensors" in names  # one shard under the default 5B shard size


def test_task_arithmetic_gradient_and_filter(family, tmp_path: Path) -> None:
    """mergekit's layer gradients and name filters reach the right tensors."""
    base, fts, bpath, paths = family
    text = textwrap.dedent(f"""
        merge_method: task_arithmetic
        base_model: {bpath}
        models:
          - model: {paths[0]}
            parameters:
              weight: [0.0, 1.0]
          - model: {paths[1]}
            parameters:
              weight:
                - filter: mlp
                  value: 2.0
                - value: 0.5
        parameters:
          lambda: 1.0
        dtype: float32
    """)
    (tmp_path / "c.yml").write_text(text)
    stream_merge(tmp_path / "c.yml", tmp_path / "out", progress=False)
    got = read_out(tmp_path / "out")
    for name, t in (
        ("model.layers.0.mlp.up_proj.weight", 0.0),
        ("model.layers.1.self_attn.q_proj.weight", 0.5),
        ("model.layers.2.mlp.up_proj.weight", 1.0),
        ("lm_head.weight", 0.0),
    ):
        w1 = 2.0 if "mlp" in name else 0.5
        want = base[name] + t * (fts[0][name] - base[name]) + w1 * (fts[1][name] - base[name])
        torch.testing.assert_close(got[name], want, rtol=1e-6, atol=1e-6, msg=name)


def test_evaluate_setting_and_depths() -> None:
    assert evaluate_setting(0.3, "a", 0.7) == 0.3
    assert evaluate_setting([0.0, 1.0], "a", 0.25) == pytest.approx(0.25)
    assert evaluate_setting([0.0, 1.0, 0.0], "a", 0.75) == pytest.approx(0.5)
    s = [{"filter": "self_attn", "value": [0, 1]}, {"filter": "mlp", "value": 0.2}, {"value": 0.9}]
    assert evaluate_setting(s, "layers.3.self_attn.q", 1.0) == pytest.approx(1.0)
    assert evaluate_setting(s, "layers.3.mlp.up", 1.0) == pytest.approx(0.2)
    assert evaluate_setting(s, "lm_head", 0.0) == pytest.approx(0.9)
    assert evaluate_setting([{"filter": "x", "value": 1}], "y", 0.0) is None
    d = layer_depths(["embed", "model.layers.0.a", "model.layers.2.b", "model.layers.4.c", "head"])
    assert d == {
        "embed": 0.0,
        "model.layers.0.a": 0.0,
        "model.layers.2.b": 0.5,
        "model.layers.4.c": 1.0,
        "head": 0.0,
    }


def test_config_errors(family, tmp_path: Path) -> None:
    _, _, bpath, paths = family
    with pytest.raises(StreamError, match="slices"):
        load_config({"merge_method": "linear", "slices": [{"sources": []}]})
    with pytest.raises(StreamError, match="merge_method must be one of"):
        load_config(config("frankenstein", bpath, paths))
    with pytest.raises(StreamError, match="needs base_model"):
        load_config(config("ties", None, paths))
    with pytest.raises(StreamError, match="not found.*nothing is downloaded"):
        load_config(config("linear", None, [Path("mistralai/Mistral-7B-v0.1")]))
    with pytest.raises(StreamError, match="dtype must be one of"):
        load_config({**config("linear", None, paths), "dtype": "float8"})
    with pytest.raises(StreamError, match="unknown config key"):
        load_config({**config("linear", None, paths), "modles": []})
    assert parse_size("5B") == 5 * 10**9 and parse_size("500M") == 5 * 10**8
    assert parse_size("1GiB") == 2**30 and parse_size(123) == 123
    with pytest.raises(ValueError, match="shard_size"):
        parse_size("lots")


def test_mismatched_names_and_shapes_are_listed(tmp_path: Path) -> None:
    base = make_state(0)
    a = make_state(1, base=base)
    b = dict(make_state(2, base=base))
    del b["model.layers.1.mlp.up_proj.weight"]
    b["model.extra.weight"] = torch.zeros(3)
    b["lm_head.weight"] = torch.zeros(51, 24)
    pa, pb = write_sharded(a, tmp_path / "a"), write_sharded(b, tmp_path / "b")
    with pytest.raises(StreamError) as err:
        stream_merge(config("linear", None, [pa, pb]), tmp_path / "out", progress=False)
    msg = str(err.value)
    assert "model.layers.1.mlp.up_proj.weight" in msg and "model.extra.weight" in msg
    assert "lm_head.weight [50, 24] vs [51, 24]" in msg
    assert not (tmp_path / "out").exists()


def test_dtype_mix_needs_dtype(tmp_path: Path) -> None:
    base = make_state(0)
    pa = write_sharded(make_state(1, base=base), tmp_path / "a")
    pb = write_sharded(make_state(2, base=base, dtype=torch.bfloat16), tmp_path / "b")
    cfg = config("linear", None, [pa, pb])
    with pytest.raises(StreamError, match="dtype.*torch.float32 vs torch.bfloat16"):
        stream_merge(cfg, tmp_path / "out", progress=False)
    stream_merge(
        {**cfg, "dtype": "float32", "out_dtype": "bfloat16"}, tmp_path / "out", progress=False
    )
    got = read_out(tmp_path / "out")
    assert got["lm_head.weight"].dtype == torch.bfloat16
    assert json.loads((tmp_path / "out" / "config.json").read_text())["torch_dtype"] == "bfloat16"


def test_missing_shard_and_index_errors(family, tmp_path: Path) -> None:
    base, fts, _, _ = family
    pa = write_sharded(fts[0], tmp_path / "a")
    pb = write_sharded(fts[1], tmp_path / "b")
    (pb / "model-00002-of-00003.safetensors").unlink()
    with pytest.raises(StreamError, match="missing shard files.*model-00002-of-00003"):
        stream_merge(config("linear", None, [pa, pb]), tmp_path / "out", progress=False)
    pc = write_sharded(fts[2], tmp_path / "c")
    index = json.loads((pc / "model.safetensors.index.json").read_text())
    index["weight_map"]["model.ghost.weight"] = "model-00001-of-00003.safetensors"
    (pc / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(StreamError, match="model.ghost.weight"):
        stream_merge(config("linear", None, [pa, pc]), tmp_path / "out", progress=False)
    trunc = tmp_path / "t.safetensors"
    data = (pa / "model-00001-of-00003.safetensors").read_bytes()
    trunc.write_bytes(data[: len(data) // 2])
    with pytest.raises(StreamError, match="truncated"):
        model_tensors(trunc)


def test_existing_output_and_overwrite(family, tmp_path: Path) -> None:
    _, fts, _, paths = family
    out = tmp_path / "out"
    cfg = config("linear", None, paths)
    stream_merge(config("linear", None, paths[:2]), out, progress=False)  # a previous output
    (out / "keep.txt").write_text("old")
    with pytest.raises(StreamError, match="exists.*--overwrite"):
        stream_merge(cfg, out, progress=False)
    assert (out / "keep.txt").exists()
    stream_merge(cfg, out, overwrite=True, progress=False)
    assert not (out / "keep.txt").exists() and (out / "model.safetensors.index.json").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no partial or old folder left
    other = tmp_path / "other"  # --overwrite never replaces a folder that is not a merge output
    other.mkdir()
    (other / "keep.txt").write_text("old")
    with pytest.raises(StreamError, match="only a previous merge output"):
        stream_merge(cfg, other, overwrite=True, progress=False)
    assert (other / "keep.txt").read_text() == "old"


def test_disk_full_gives_clear_error_and_no_output(family, tmp_path: Path, monkeypatch) -> None:
    import errno

    import core.stream.st_io as st_io

    calls = {"n": 0}
    real = os.pwrite

    def full(fd: int, data, offset: int) -> int:
        calls["n"] += 1
        if calls["n"] > 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd, data, offset)

    monkeypatch.setattr(st_io.os, "pwrite", full)
    _, _, _, paths = family
    with pytest.raises(DiskFullError, match="disk full.*partial output was removed"):
        stream_merge(
            config("linear", None, paths), tmp_path / "out", shard_size="24KB", progress=False
        )
    assert list(tmp_path.iterdir()) == []


def test_cli_merge(family, tmp_path: Path, capsys) -> None:
    import yaml

    from core.cli import main

    _, _, bpath, paths = family
    cfg = tmp_path / "merge.yml"
    cfg.write_text(yaml.safe_dump(config("task_arithmetic", bpath, paths, **{"lambda": 0.3})))
    assert main(["merge", str(cfg), str(tmp_path / "out"), "--quiet", "--shard-size", "30KB"]) == 0
    assert "merged 12 tensors" in capsys.readouterr().out
    assert main(["merge", str(cfg), str(tmp_path / "out"), "--quiet"]) == 2
    assert "--overwrite" in capsys.readouterr().err


def test_python_m_core_merge_exits_with_its_output_flushed(family, tmp_path: Path) -> None:
    """``python -m core`` leaves with os._exit after its exit handlers: output still arrives."""
    _, _, bpath, paths = family
    (tmp_path / "c.json").write_text(json.dumps(config("ties", bpath, paths, density=0.5)))
    cmd = [sys.executable, "-m", "core", "merge", str(tmp_path / "c.json"), str(tmp_path / "out")]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    ok = subprocess.run([*cmd, "--quiet"], capture_output=True, text=True, env=env, cwd=ROOT)
    assert ok.returncode == 0, ok.stderr
    assert "merged 12 tensors" in ok.stdout
    assert len(read_out(tmp_path / "out")) == 12
    again = subprocess.run([*cmd, "--quiet"], capture_output=True, text=True, env=env, cwd=ROOT)
    assert again.returncode == 2 and "--overwrite" in again.stderr


def test_mapped_tensors_equal_read_ones_and_stay_private(family, tmp_path: Path) -> None:
    from core.stream.st_io import ShardReader, TensorInfo

    _, _, bpath, _ = family
    infos = model_tensors(bpath)
    reader = ShardReader()
    try:
        for info in infos.values():
            mapped = reader.map(info)
            assert mapped.shape == info.shape and torch.equal(mapped, reader.read(info))
        info = max(infos.values(), key=lambda i: i.nbytes)
        before = info.path.read_bytes()
        mapped = reader.map(info)
        mapped.reshape(-1)[0] += 1.0  # copy-on-write: the shard file is unchanged
        assert info.path.read_bytes() == before
        # a float32 range that starts off its 4-byte alignment is read, not mapped
        odd = TensorInfo(info.name, info.path, torch.float32, (3,), info.start + 2, 12)
        raw = torch.frombuffer(bytearray(before[odd.start : odd.start + 12]), dtype=torch.float32)
        assert torch.equal(reader.map(odd), raw)
        past = TensorInfo(info.name, info.path, torch.float32, (4,), len(before) - 8, 16)
        with pytest.raises(StreamError, match="unexpected end of file"):
            reader.map(past)

        def refuse(*args: object, **kw: object) -> None:
            raise OSError(19, "No such device")  # ENODEV: what mmap gives on such file systems

        with pytest.MonkeyPatch.context() as mp:
            mp.setattr("core.stream.st_io.mmap.mmap", refuse)
            assert torch.equal(reader.map(info), reader.read(info))
    finally:
        reader.close()


def _big_family(root: Path, n_tensors: int, numel: int) -> tuple[Path, list[Path]]:
    """Base + 3 fine-tunes of n_tensors x numel float32, 2 shards each, written tensor by tensor."""
    from safetensors.torch import save_file

    paths = []
    for m in range(4):
        folder = root / f"m{m}"
        folder.mkdir()
        g = torch.Generator().manual_seed(m)
        weight_map = {}
        per = n_tensors // 2
        for s in range(2):
            name = f"model-{s + 1:05d}-of-00002.safetensors"
            sd = {
                f"model.layers.{i}.w": torch.randn(numel, generator=g)
                for i in range(s * per, (s + 1) * per)
            }
            save_file(sd, str(folder / name))
            weight_map.update(dict.fromkeys(sd, name))
            del sd
        (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
        paths.append(folder)
    return paths[0], paths[1:]


def _run_child(code: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "2"}
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        cwd=str(ROOT),
    )


def _memory_config(method: str, bpath: Path, paths: list[Path]) -> dict:
    """The config of one case of the peak-memory test (12 layers of one tensor each)."""
    if method == "ramplus_global":
        return config("ramplus_tl", bpath, paths, r=0.5, alpha=1.0, overlap="global")
    if method == "della_per_model":  # one MagPrune window per model
        cfg = config("della", bpath, paths, **{"lambda": 1.0})
        for m, (d, e) in zip(cfg["models"], [(0.4, 0.1), (0.6, 0.2), (0.8, 0.1)], strict=True):
            m["parameters"] = {"density": d, "epsilon": e, "weight": 1.0}
        return cfg
    if method in ("slice_merge", "passthrough_slices"):
        b, m1, m2, m3 = (str(p) for p in (bpath, *paths))

        def src(m: str, lo: int, hi: int) -> dict:
            return {"model": m, "layer_range": [lo, hi]}

        if method == "passthrough_slices":  # depth up-scaling: 16 layers out of 12
            return {
                "merge_method": "passthrough",
                "slices": [{"sources": [src(m1, 0, 8)]}, {"sources": [src(m2, 4, 12)]}],
            }
        return {  # two slices of three and two sources, DARE's random drops
            "merge_method": "dare_ties",
            "base_model": b,
            "parameters": {"density": 0.5, "lambda": 1.0},
            "slices": [
                {"sources": [src(b, 0, 6), src(m1, 0, 6), src(m2, 0, 6)]},
                {"sources": [src(b, 6, 12), src(m3, 6, 12)]},
            ],
        }
    return config("task_arithmetic", bpath, paths, **{"lambda": 0.5})


@pytest.mark.parametrize(
    "method",
    [
        "task_arithmetic",
        "ramplus_global",
        pytest.param("della_per_model", marks=pytest.mark.slow),
        pytest.param("slice_merge", marks=pytest.mark.slow),
        pytest.param("passthrough_slices", marks=pytest.mark.slow),
    ],
)
def test_peak_memory_bounded_by_tensors_not_models(tmp_path: Path, method: str) -> None:
    """Peak RSS grows by a few tensors per model, far below one whole model — also for RAM+
    with the whole-model overlap ratio, whose first pass streams every model once more, DELLA
    with one density and epsilon per model, and slices (several sources merged per slice, or
    stacked by passthrough)."""
    numel = 2_000_000  # 8 MB per tensor, 12 tensors: 96 MB per model, 384 MB for all four
    bpath, paths = _big_family(tmp_path, 12, numel)
    cfg = _memory_config(method, bpath, paths)
    (tmp_path / "c.json").write_text(json.dumps(cfg))
    code = textwrap.dedent(f"""
        import json, resource
        import torch, core.stream
        from core.stream import stream_merge
        torch.ones(1) + 1
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        stream_merge(json.load(open({str(tmp_path / "c.json")!r})), {str(tmp_path / "out")!r},
                     shard_size="40MB", progress=False)
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(before, after)
    """)
    res = _run_child(code)
    assert res.returncode == 0, res.stderr
    before, after = (int(x) * 1024 for x in res.stdout.split())
    tensor = numel * 4
    # bound: 2 keys in flight x 4 inputs + 2 outputs + kernel temporaries, plus 48 MB slack.
    # DELLA's MagPrune holds more per tensor (|τ|, the int64 rank order, p, u, the mask, the
    # sign accumulators), one model at a time: more tensors, never more models.
    temporaries = 8 if method == "della_per_model" else 2
    budget = (2 * 4 + 2 + temporaries) * tensor + 48 * 2**20
    whole_model = 12 * tensor
    assert budget < 4 * whole_model  # loading the inputs whole would break the budget
    assert after - before <= budget, (after - before) / 2**20
    got = read_out(tmp_path / "out")
    assert len(got) == (16 if method == "passthrough_slices" else 12)


def test_killed_run_leaves_nothing_that_looks_complete(tmp_path: Path) -> None:
    bpath, paths = _big_family(tmp_path, 8, 500_000)
    cfg = config("task_arithmetic", bpath, paths)
    (tmp_path / "c.json").write_text(json.dumps(cfg))
    code = textwrap.dedent(f"""
        import json, os, signal
        from core.stream import stream_merge
        def cb(info):
            if info["done"] == 5:
                os.kill(os.getpid(), signal.SIGKILL)
        stream_merge(json.load(open({str(tmp_path / "c.json")!r})), {str(tmp_path / "out")!r},
                     shard_size="4MB", progress=cb)
    """)
    res = _run_child(code)
    assert res.returncode == -9
    assert not (tmp_path / "out").exists()
    partial = [p for p in tmp_path.iterdir() if p.name.startswith("out.partial-")]
    assert len(partial) == 1 and any(partial[0].glob("*.safetensors"))  # it was mid-write
    assert not list(tmp_path.rglob("model.safetensors.index.json"))[4:]  # only the 4 inputs'
    assert not (partial[0] / "model.safetensors.index.json").exists()
