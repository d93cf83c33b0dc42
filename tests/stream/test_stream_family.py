"""The streaming CLI on mergekit-family configs: every method equals core.merge on the same
tensors, passthrough + slices stacks layers as mergekit plans them, and multi-document configs
run in dependency order."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from core.cli import main as cli_main
from core.merge import merge, method_arguments
from core.stream import StreamError, load_config, model_tensors, stream_merge
from core.stream.engine import tensor_call
from core.stream.multi import plan_stages
from core.stream.slices import plan_slices
from tests.helpers.stream import make_family, make_state, read_out, write_sharded


@pytest.fixture(scope="module")
def family(tmp_path_factory: pytest.TempPathFactory):
    return make_family(tmp_path_factory.mktemp("family"))


def _ordered(sd: dict[str, torch.Tensor], folder: Path) -> dict[str, torch.Tensor]:
    infos = model_tensors(folder)
    return {k: sd[k] for k in sorted(infos, key=lambda k: (str(infos[k].path), infos[k].start))}


def _cfg(method: str, base: Path | None, models: list[Path], per: Any = None, **params: Any):
    cfg: dict[str, Any] = {"merge_method": method, "models": []}
    for i, p in enumerate(models):
        entry: dict[str, Any] = {"model": str(p)}
        if per is not None:
            entry["parameters"] = per[i] if isinstance(per, list) else dict(per)
        cfg["models"].append(entry)
    if base is not None:
        cfg["base_model"] = str(base)
    if params:
        cfg["parameters"] = dict(params)
    return cfg


# mergekit config -> the in-memory merge it must equal: (core method, its keyword arguments,
# models used [indices of the fine-tunes], base role: "base" (task-vector origin),
# "first" (models[0] is the base model) or None)
CASES: dict[str, tuple[dict[str, Any], str, dict[str, Any], list[int], str | None]] = {
    "della": (
        {
            "method": "della",
            "per": {"weight": 1.0, "density": 0.6, "epsilon": 0.2},
            "params": {"lambda": 1.1},
        },
        "della",
        {"density": 0.6, "epsilon": 0.2, "scale": 1.1, "rescale": "l1", "disjoint": "mean"},
        [0, 1, 2],
        "base",
    ),
    "della_prob": (
        {
            "method": "della",
            "per": {"density": 0.5, "epsilon": 0.1},
            "params": {"della_rescale": "prob"},
        },
        "della",
        {"density": 0.5, "epsilon": 0.1, "rescale": "prob"},
        [0, 1, 2],
        "base",
    ),
    "della_linear": (
        {
            "method": "della_linear",
            "per": [{"weight": 1.0}, {"weight": 3.0}, {"weight": 1.0}],
            "params": {"density": 0.7, "epsilon": 0.1, "normalize": True},
        },
        "della_linear",
        {"density": 0.7, "epsilon": 0.1, "rescale": "l1", "weights": [0.2, 0.6, 0.2]},
        [0, 1, 2],
        "base",
    ),
    "breadcrumbs_ties": (
        {"method": "breadcrumbs_ties", "per": {"weight": 1.0, "density": 0.5, "gamma": 0.05}},
        "breadcrumbs_ties",
        {"density": 0.5, "gamma": 0.05, "scope": "tensor", "disjoint": "sum"},
        [0, 1, 2],
        "base",
    ),
    "sce": (
        {"method": "sce", "params": {"select_topk": 0.4}},
        "sce",
        {"density": 0.4},
        [0, 1, 2],
        "base",
    ),
    "ram": (
        {"method": "ram", "params": {"epsilon": 0.04}},
        "ram",
        {"epsilon": 0.04},
        [0, 1, 2],
        "base",
    ),
    "ramplus_tl": (
        {"method": "ramplus_tl", "params": {"epsilon": 0.04, "r": 0.5, "alpha": 0.5}},
        "ram",
        {"epsilon": 0.04, "rescale": "tensor", "r": 0.5, "alpha": 0.5},
        [0, 1, 2],
        "base",
    ),
    "nuslerp": (
        {
            "method": "nuslerp",
            "per": [{"weight": 0.3}, {"weight": 0.7}],
            "params": {"nuslerp_flatten": False},
        },
        "nuslerp",
        {"weights": [0.3, 0.7], "flatten": False},
        [0, 1],
        "base",
    ),
    "multislerp": (
        {"method": "multislerp", "per": [{"weight": 1.0}, {"weight": 2.0}, {"weight": 1.0}]},
        "multislerp",
        {"weights": [1.0, 2.0, 1.0]},
        [0, 1, 2],
        "base",
    ),
    "karcher": (
        {"method": "karcher", "base": False, "params": {"max_iter": 20}},
        "karcher",
        {"max_iter": 20},
        [0, 1, 2],
        None,
    ),
    "karcher_with_base": ({"method": "karcher"}, "karcher", {}, [0, 1], "first"),
    "nearswap": (
        {"method": "nearswap", "params": {"t": 0.02}},
        "nearswap",
        {"t": 0.02},
        [1],
        "first",
    ),
    "arcee_fusion": ({"method": "arcee_fusion"}, "arcee_fusion", {}, [2], "first"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_stream_equals_in_memory(case: str, family, tmp_path: Path) -> None:
    base, fts, bpath, paths = family
    spec, method, kw, used, role = CASES[case]
    models = [paths[i] for i in used]
    cfg = _cfg(
        spec["method"],
        None if spec.get("base") is False else bpath,
        models,
        spec.get("per"),
        **spec.get("params", {}),
    )
    parsed = load_config(cfg)
    assert tensor_call(parsed, "model.layers.0.mlp.up_proj.weight", 0.0)[0] == method
    rep = stream_merge(cfg, tmp_path / "out", shard_size="24KB", seed=3, progress=False)
    assert len(rep.shards) > 1
    got = read_out(tmp_path / "out")
    ins = [_ordered(fts[i], paths[i]) for i in used]
    b = _ordered(base, bpath)
    gen = torch.Generator().manual_seed(3)
    assert set(kw) <= set(method_arguments(method))
    if role == "base":
        want = merge(method, ins, base=b, generator=gen, **kw)
    elif role == "first":
        want = merge(method, [b, *ins], generator=gen, **kw)
    else:
        want = merge(method, ins, generator=gen, **kw)
    assert set(got) == set(want)
    for k in want:
        assert got[k].dtype == want[k].dtype, k
        torch.testing.assert_close(got[k], want[k], rtol=0, atol=0, msg=k)
    assert not torch.equal(
        got["model.layers.0.mlp.up_proj.weight"], b["model.layers.0.mlp.up_proj.weight"]
    )


def test_family_config_errors(family) -> None:
    _, _, bpath, paths = family
    with pytest.raises(StreamError, match="exactly 2"):
        load_config(_cfg("nuslerp", bpath, paths, {"weight": 1.0}))
    with pytest.raises(StreamError, match="exactly 1"):
        load_config(_cfg("nearswap", bpath, paths[:2], params=None, t=0.1))
    with pytest.raises(StreamError, match="needs base_model"):
        load_config(_cfg("della", None, paths))
    cfg = load_config(_cfg("nearswap", bpath, paths[:1]))
    with pytest.raises(StreamError, match="needs the parameter t"):
        tensor_call(cfg, "x", 0.0)
    cfg = load_config(
        _cfg("breadcrumbs_ties", bpath, paths, [{"density": 0.5}, {"density": 0.6}, {}])
    )
    with pytest.raises(StreamError, match="density must be the same"):
        tensor_call(cfg, "x", 0.0)
    with pytest.raises(StreamError, match="eps is fixed"):
        load_config(_cfg("multislerp", None, paths, {"weight": 1.0}, eps=1e-3))


# ---- passthrough + slices ------------------------------------------------------------------


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("stack")
    a = make_state(1, n_layers=4)
    b = make_state(2, n_layers=4)
    pa, pb = write_sharded(a, root / "a"), write_sharded(b, root / "b", n_shards=2)
    for p in (pa, pb):
        conf = json.loads((p / "config.json").read_text())
        (p / "config.json").write_text(json.dumps({**conf, "num_hidden_layers": 4}))
    return a, b, pa, pb


def test_passthrough_slices_stack_layers_as_mergekit_plans_them(stack, tmp_path: Path) -> None:
    a, b, pa, pb = stack
    cfg = {
        "merge_method": "passthrough",
        "slices": [
            {"sources": [{"model": str(pa), "layer_range": [0, 2]}]},
            {
                "sources": [
                    {
                        "model": str(pb),
                        "layer_range": [1, 4],
                        "parameters": {"scale": [{"filter": "q_proj", "value": 0.5}]},
                    }
                ]
            },
        ],
        "dtype": "float32",
        "out_dtype": "float16",
    }
    rep = stream_merge(cfg, tmp_path / "out", shard_size="16KB", progress=False)
    got = read_out(tmp_path / "out")
    assert len(rep.shards) > 1
    assert torch.equal(got["model.embed_tokens.weight"], a["model.embed_tokens.weight"].half())
    assert torch.equal(got["lm_head.weight"], b["lm_head.weight"].half())  # post from b
    for out_i, (src, src_i) in enumerate([(a, 0), (a, 1), (b, 1), (b, 2), (b, 3)]):
        p = f"model.layers.{out_i}."
        q = src[f"model.layers.{src_i}.self_attn.q_proj.weight"]
        want_q = q * 0.5 if src is b else q
        torch.testing.assert_close(got[p + "self_attn.q_proj.weight"], want_q.half())
        assert torch.equal(
            got[p + "mlp.up_proj.weight"], src[f"model.layers.{src_i}.mlp.up_proj.weight"].half()
        )
    assert "model.layers.5.mlp.up_proj.weight" not in got
    assert torch.equal(got["model.step"], a["model.step"])
    conf = json.loads((tmp_path / "out" / "config.json").read_text())
    assert conf["num_hidden_layers"] == 5 and conf["torch_dtype"] == "float16"
    assert yaml.safe_load((tmp_path / "out" / "mergekit_config.yml").read_text()) == cfg


def test_depth_upscaling_repeats_layers(stack, tmp_path: Path) -> None:
    a, _, pa, _ = stack
    cfg = {
        "merge_method": "passthrough",
        "slices": [
            {"sources": [{"model": str(pa), "layer_range": [0, 3]}]},
            {"sources": [{"model": str(pa), "layer_range": [1, 4]}]},
        ],
    }
    plan = plan_slices(cfg, tmp_path)
    assert plan.n_layers == 6
    stream_merge(cfg, tmp_path / "up", progress=False)
    got = read_out(tmp_path / "up")
    for out_i, src_i in enumerate([0, 1, 2, 1, 2, 3]):
        k = "self_attn.q_proj.weight"
        assert torch.equal(got[f"model.layers.{out_i}.{k}"], a[f"model.layers.{src_i}.{k}"])


def test_passthrough_of_one_model_scales_and_copies(stack, tmp_path: Path) -> None:
    a, _, pa, _ = stack
    cfg = {
        "merge_method": "passthrough",
        "models": [{"model": str(pa), "parameters": {"scale": {"filter": "lm_head", "value": 2}}}],
    }
    stream_merge(cfg, tmp_path / "p", progress=False)
    got = read_out(tmp_path / "p")
    assert set(got) == set(a)
    assert torch.equal(got["lm_head.weight"], a["lm_head.weight"] * 2)
    assert torch.equal(
        got["model.layers.3.mlp.up_proj.weight"], a["model.layers.3.mlp.up_proj.weight"]
    )


def test_passthrough_errors(stack, tmp_path: Path) -> None:
    _, _, pa, pb = stack
    two = {
        "sources": [
            {"model": str(pa), "layer_range": [0, 2]},
            {"model": str(pb), "layer_range": [0, 2]},
        ]
    }
    with pytest.raises(StreamError, match="one per slice"):
        stream_merge(
            {"merge_method": "passthrough", "slices": [two]}, tmp_path / "x", progress=False
        )
    with pytest.raises(StreamError, match="slices\\[0\\]: merge_method 'slerp' needs base_model"):
        stream_merge({"merge_method": "slerp", "slices": [two]}, tmp_path / "x", progress=False)
    for lr in ([0, 9], [2, 2], [-1, 2], [0], "0-2"):
        cfg = {
            "merge_method": "passthrough",
            "slices": [{"sources": [{"model": str(pa), "layer_range": lr}]}],
        }
        with pytest.raises(StreamError, match="layer"):
            stream_merge(cfg, tmp_path / "x", progress=False)
    with pytest.raises(StreamError, match="exactly one model"):
        stream_merge({"merge_method": "passthrough", "models": [str(pa), str(pb)]}, tmp_path / "x")
    bad_scale = {
        "merge_method": "passthrough",
        "models": [{"model": str(pa), "parameters": {"scale": "big"}}],
    }
    with pytest.raises(StreamError, match="scale"):
        stream_merge(bad_scale, tmp_path / "x", progress=False)
    assert not (tmp_path / "x").exists()
    assert [p.name for p in tmp_path.iterdir()] == []  # no partial folder left behind


# ---- multi-document configs ----------------------------------------------------------------


def test_multi_document_config_runs_in_dependency_order(family, tmp_path: Path) -> None:
    base, fts, bpath, paths = family
    final = {
        "merge_method": "della_linear",
        "base_model": str(bpath),
        "models": [{"model": "mid"}, {"model": str(paths[2])}],
        "parameters": {"density": 1.0, "lambda": 0.5},
    }
    mid = {
        "name": "mid",
        "merge_method": "linear",
        "models": [{"model": str(paths[0])}, {"model": "ft1"}],
    }
    ft1 = {"name": "ft1", "merge_method": "passthrough", "models": [{"model": str(paths[1])}]}
    path = tmp_path / "multi.yml"
    path.write_text(yaml.safe_dump_all([final, mid, ft1], sort_keys=False))
    out = tmp_path / "final"
    assert cli_main(["merge", str(path), str(out), "--quiet"]) == 0
    parts = tmp_path / "final-parts"
    assert sorted(p.name for p in parts.iterdir()) == ["ft1", "mid"]
    got = read_out(out)
    want_mid = merge("average", [fts[0], fts[1]])
    want = merge("task_arithmetic", [want_mid, fts[2]], base=base, scale=0.5)
    for k in want:
        torch.testing.assert_close(got[k], want[k], atol=1e-6, rtol=1e-6, msg=k)
    # a rerun reuses the finished intermediate merges and rewrites only the final one
    stamp = (parts / "mid" / "model.safetensors.index.json").stat().st_mtime_ns
    assert cli_main(["merge", str(path), str(out), "--quiet", "--overwrite"]) == 0
    assert (parts / "mid" / "model.safetensors.index.json").stat().st_mtime_ns != stamp
    stamp = (parts / "mid" / "model.safetensors.index.json").stat().st_mtime_ns
    (out / "x").write_text("")
    import shutil

    shutil.rmtree(out)
    assert cli_main(["merge", str(path), str(out), "--quiet"]) == 0
    assert (parts / "mid" / "model.safetensors.index.json").stat().st_mtime_ns == stamp


def test_multi_document_errors(tmp_path: Path) -> None:
    def plan(docs: list[dict]) -> list:
        return plan_stages(docs, tmp_path / "out", tmp_path / "parts")

    ok = {"merge_method": "linear", "models": [{"model": "x"}]}
    with pytest.raises(StreamError, match="plain folder name"):
        plan([{**ok, "name": "../evil"}, ok])
    with pytest.raises(StreamError, match="plain folder name"):
        plan([{**ok, "name": "a/b"}, ok])
    with pytest.raises(StreamError, match="unique"):
        plan([{**ok, "name": "a"}, {**ok, "name": "a"}])
    with pytest.raises(StreamError, match="at most one document may be unnamed"):
        plan([ok, ok])
    cyc = [
        {"name": "a", "merge_method": "linear", "models": [{"model": "b"}]},
        {"name": "b", "merge_method": "linear", "models": [{"model": "a"}]},
        {"merge_method": "linear", "models": [{"model": "a"}]},
    ]
    with pytest.raises(StreamError, match="cycle"):
        plan(cyc)
    with pytest.raises(StreamError, match="its own output"):
        plan([{"name": "a", "merge_method": "linear", "models": ["a"]}, ok])
    stages = plan([{**ok, "name": "a"}, {"merge_method": "linear", "models": ["a", "y"]}])
    assert [s.name for s in stages] == ["a", None]
    assert stages[1].config["models"] == [str(tmp_path / "parts" / "a"), "y"]
    assert stages[1].out == tmp_path / "out" and stages[1].final
    with pytest.raises(StreamError, match="would be the final output"):
        plan_stages([{**ok, "name": "out"}, ok], tmp_path / "out", tmp_path)
    # all named: the last document is the final one
    stages = plan([{**ok, "name": "a"}, {**ok, "name": "b", "models": ["a"]}])
    assert stages[-1].name == "b" and stages[-1].out == tmp_path / "out"


def test_passthrough_keeps_the_output_guards(stack, tmp_path: Path) -> None:
    a, _, pa, _ = stack
    cfg = {"merge_method": "passthrough", "models": [{"model": str(pa)}]}
    with pytest.raises(StreamError, match="is input model"):
        stream_merge(cfg, pa, overwrite=True, progress=False)
    with pytest.raises(StreamError, match="lies inside input model"):
        stream_merge(cfg, pa / "sub", progress=False)
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep")
    with pytest.raises(StreamError, match="previous merge output"):
        stream_merge(cfg, precious, overwrite=True, progress=False)
    assert (precious / "notes.txt").read_text() == "keep"
    stream_merge(cfg, tmp_path / "out", progress=False)
    stream_merge(cfg, tmp_path / "out", overwrite=True, progress=False)  # a merge output: ok
    bad = {
        "merge_method": "passthrough",
        "models": [{"model": str(pa), "parameters": {"scale": 1e39}}],
    }
    with pytest.raises(StreamError, match="overflows"):
        stream_merge({**bad, "out_dtype": "float32"}, tmp_path / "big", progress=False)
    assert not (tmp_path / "big").exists()
