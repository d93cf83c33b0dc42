"""Every mergekit method name of the registry through the streaming CLI (``python -m core merge``
via :func:`core.cli.main`), on a sharded tiny Llama: base + 3 fine-tunes with the full set of
Llama tensor names and a real ``LlamaForCausalLM`` config.json, a mergekit YAML config with the
method's typical parameters (per model where mergekit takes per-model values), compared with
the in-memory merge (:func:`core.merge.merge` on the same tensors) bit for bit.

Where mergekit is installed in its side virtualenv (``.venv-mergekit``, see
tests/helpers/mergekit_reference.py; or ``MIXMERGE_MERGEKIT_PYTHON``), the same YAML file also
runs through ``mergekit-yaml`` and the outputs must agree to 1e-5 (float32; the two sum in
different orders). Random methods (DARE, DELLA) draw differently in mergekit and are compared
with it only in the cases marked so; without that virtualenv only the mergekit comparison is
skipped, never the in-memory one.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from core.cli import main as cli_main
from core.merge import METHODS, merge
from core.merge._blocks import magnitude_threshold
from core.merge.ties import ties_tensor
from core.params import StateDict
from core.stream import StreamError, stream_merge
from tests.helpers.stream import llama_shapes, read_out, write_sharded

ROOT = Path(__file__).resolve().parents[2]
MK_PYTHON = Path(
    os.environ.get("MIXMERGE_MERGEKIT_PYTHON", ROOT / ".venv-mergekit" / "bin" / "python")
)
MK_TOL = {"atol": 1e-5, "rtol": 1e-5}
N_LAYERS, HIDDEN, INTER, VOCAB = 3, 16, 32, 40
LAYER_T = [0.0, 0.5, 1.0]  # mergekit's layer depth t = i / (L − 1)


def llama_state(seed: int, base: StateDict | None = None, scale: float = 0.0) -> StateDict:
    """A tiny Llama state dict (every tensor name mergekit's llama architecture lists)."""
    g = torch.Generator().manual_seed(seed)
    shapes = llama_shapes(HIDDEN, INTER, N_LAYERS, VOCAB)
    out = {}
    for k, shp in shapes.items():
        noise = torch.randn(shp, generator=g)
        out[k] = noise if base is None else base[k] + scale * noise
    return out


LLAMA_CONFIG = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": HIDDEN,
    "intermediate_size": INTER,
    "num_hidden_layers": N_LAYERS,
    "num_attention_heads": 2,
    "num_key_value_heads": 2,
    "vocab_size": VOCAB,
    "max_position_embeddings": 64,
    "rms_norm_eps": 1e-6,
    "tie_word_embeddings": False,
    "torch_dtype": "float32",
}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("llama")
    base = llama_state(0)
    shared = llama_state(5, base, 0.02)  # a common direction: model_stock's cos > 0
    fts = [llama_state(10 + i, shared, 0.02 * (i + 1)) for i in range(3)]
    # sparse, overlapping updates for RAM / RAM+ (an unchanged entry is "inactive")
    g = torch.Generator().manual_seed(99)
    for sd, rate in zip(fts, [0.3, 0.4, 0.5], strict=True):
        for k, v in sd.items():
            keep = torch.rand(v.shape, generator=g) < rate
            sd[k] = torch.where(keep, v, base[k])
    paths = []
    for name, sd in [("base", base), *[(f"ft{i}", x) for i, x in enumerate(fts)]]:
        p = write_sharded(sd, root / name, n_shards=3)
        (p / "config.json").write_text(json.dumps(LLAMA_CONFIG))
        paths.append(p)
    return base, fts, paths[0], paths[1:]


def depth(name: str) -> float:
    """mergekit's t of a tensor: its layer's i / (L − 1); 0 outside the layers."""
    for i in range(N_LAYERS):
        if f".layers.{i}." in name:
            return LAYER_T[i]
    return 0.0


# ---- the in-memory merges the configs must equal --------------------------------------------

Ref = Callable[[StateDict, list[StateDict], torch.Generator], StateDict]


def _per_key(method: str, kw: Callable[[str], dict[str, Any]], role: str = "base") -> Ref:
    """core.merge run key by key (one generator for all, in output order), for parameters that
    vary by tensor (gradients over the layers)."""

    def ref(base: StateDict, ins: list[StateDict], gen: torch.Generator) -> StateDict:
        out: StateDict = {}
        for k in base:
            one = [{k: m[k]} for m in ins]
            if role == "first":
                out.update(merge(method, [{k: base[k]}, *one], generator=gen, **kw(k)))
            elif role == "none":
                out.update(merge(method, one, generator=gen, **kw(k)))
            else:
                out.update(merge(method, one, base={k: base[k]}, generator=gen, **kw(k)))
        return out

    return ref


def _whole(method: str, role: str = "base", n: int = 3, **kw: Any) -> Ref:
    def ref(base: StateDict, ins: list[StateDict], gen: torch.Generator) -> StateDict:
        ms = ins[:n]
        if role == "first":
            return merge(method, [base, *ms], generator=gen, **kw)
        if role == "none":
            return merge(method, ms, generator=gen, **kw)
        return merge(method, ms, base=base, generator=gen, **kw)

    return ref


def _ties_per_model(densities: list[float], weights: list[float], scale: float) -> Ref:
    """TIES with one density per model (mergekit's per-tensor trim of each model)."""

    def ref(base: StateDict, ins: list[StateDict], gen: torch.Generator) -> StateDict:
        out = {}
        for k in base:
            xs = [m[k] for m in ins]
            thr = [
                magnitude_threshold([x], [base[k]], d) for x, d in zip(xs, densities, strict=True)
            ]
            out[k] = ties_tensor(
                xs, base[k], scale=scale, trim="tensor", weights=weights, threshold=thr
            )
        return out

    return ref


def _ram_global(epsilon: float, r: float, alpha: float) -> Ref:
    return _whole("ram", epsilon=epsilon, rescale="global", r=r, alpha=alpha)


W3 = [0.5, 1.0, 1.5]
SLERP_T = [0.2, 0.8]  # a gradient over the layers


def _slerp_t(k: str) -> dict[str, Any]:
    return {"t": SLERP_T[0] + (SLERP_T[1] - SLERP_T[0]) * depth(k)}


# case -> (mergekit method, global parameters, per-model parameters (one dict per model, or
# None), models used (indices of the fine-tunes), base role, the in-memory reference, whether
# mergekit's own output is comparable (False for random draws))
CASES: dict[str, tuple[str, dict, list[dict] | None, list[int], str, Ref, bool]] = {
    "linear": (
        "linear",
        {"normalize": True},
        [{"weight": w} for w in W3],
        [0, 1, 2],
        "none",
        _whole("average", "none", weights=W3),
        True,
    ),
    "slerp": (
        "slerp",
        {"t": SLERP_T},
        None,
        [0],
        "first",
        _per_key("slerp", _slerp_t, "first"),
        True,
    ),
    "model_stock": ("model_stock", {}, None, [0, 1, 2], "base", _whole("model_stock"), True),
    "task_arithmetic": (
        "task_arithmetic",
        {"lambda": 0.8},
        [{"weight": w} for w in W3],
        [0, 1, 2],
        "base",
        _whole("task_arithmetic", weights=W3, scale=0.8),
        True,
    ),
    "dare_linear": (
        "dare_linear",
        {"lambda": 0.9},
        [{"weight": w, "density": 0.6} for w in W3],
        [0, 1, 2],
        "base",
        _whole("dare", weights=W3, scale=0.9, drop=0.4),
        False,
    ),
    "dare_ties": (
        "dare_ties",
        {"lambda": 1.0},
        [{"weight": w, "density": 0.7} for w in W3],
        [0, 1, 2],
        "base",
        _whole("dare_ties", weights=W3, drop=0.3, density=1.0, disjoint="sum", trim="tensor"),
        False,
    ),
    "ties": (
        "ties",
        {"lambda": 1.0},
        # equal weights: mergekit elects on weighted deltas, core.merge weighs after the
        # election (PEFT), so only equal weights mean the same in both
        [{"weight": 1.0, "density": d} for d in [0.3, 0.5, 0.7]],
        [0, 1, 2],
        "base",
        _ties_per_model([0.3, 0.5, 0.7], [1.0] * 3, 1.0),
        True,
    ),
    "breadcrumbs": (
        "breadcrumbs",
        {"lambda": 1.0},
        [{"weight": w, "density": 0.8, "gamma": 0.05} for w in W3],
        [0, 1, 2],
        "base",
        _whole("breadcrumbs", weights=W3, density=0.8, gamma=0.05),
        False,  # core.merge ranks per row (the paper); mergekit's breadcrumbs per tensor
    ),
    "breadcrumbs_ties": (
        "breadcrumbs_ties",
        {"lambda": 1.0},
        [{"weight": w, "density": 0.6, "gamma": 0.05} for w in W3],
        [0, 1, 2],
        "base",
        _whole(
            "breadcrumbs_ties", weights=W3, density=0.6, gamma=0.05, scope="tensor", disjoint="sum"
        ),
        True,
    ),
    "della": (
        "della",
        {"lambda": 1.1},
        [
            {"weight": w, "density": d, "epsilon": e}
            for w, d, e in zip(W3, [0.5, 0.6, 0.7], [0.1, 0.15, 0.2], strict=True)
        ],
        [0, 1, 2],
        "base",
        _whole(
            "della",
            weights=W3,
            density=[0.5, 0.6, 0.7],
            epsilon=[0.1, 0.15, 0.2],
            scale=1.1,
            rescale="l1",
            disjoint="mean",
        ),
        False,
    ),
    "della_linear": (
        "della_linear",
        {"lambda": 1.0, "normalize": True},
        [
            {"weight": w, "density": d, "epsilon": 0.1}
            for w, d in zip([1.0, 3.0, 1.0], [0.4, 0.6, 0.8], strict=True)
        ],
        [0, 1, 2],
        "base",
        _whole(
            "della_linear",
            weights=[0.2, 0.6, 0.2],
            density=[0.4, 0.6, 0.8],
            epsilon=0.1,
            rescale="l1",
        ),
        False,
    ),
    "sce": ("sce", {"select_topk": 0.5}, None, [0, 1, 2], "base", _whole("sce", density=0.5), True),
    "ram": ("ram", {"epsilon": 1e-5}, None, [0, 1, 2], "base", _whole("ram", epsilon=1e-5), True),
    "ramplus_tl": (
        "ramplus_tl",
        {"epsilon": 1e-5, "r": 0.5, "alpha": 2.0},
        None,
        [0, 1, 2],
        "base",
        _whole("ram", epsilon=1e-5, rescale="tensor", r=0.5, alpha=2.0),
        True,
    ),
    "ramplus_global": (
        "ramplus_tl",
        {"epsilon": 1e-5, "r": 0.5, "alpha": 2.0, "overlap": "global"},
        None,
        [0, 1, 2],
        "base",
        _ram_global(1e-5, 0.5, 2.0),
        False,  # the paper's whole-model ratio: a workbench extension mergekit lacks
    ),
    "nuslerp": (
        "nuslerp",
        {"nuslerp_flatten": False},
        [{"weight": 0.3}, {"weight": 0.7}],
        [0, 1],
        "base",
        _whole("nuslerp", n=2, weights=[0.3, 0.7], flatten=False),
        True,
    ),
    "multislerp": (
        "multislerp",
        {},
        [{"weight": w} for w in W3],
        [0, 1, 2],
        "base",
        _whole("multislerp", weights=W3),
        True,
    ),
    "karcher": (
        "karcher",
        {"max_iter": 20, "tol": 1e-6},
        None,  # mergekit's karcher takes no per-model weight (equal weights)
        [0, 1, 2],
        "none",
        _whole("karcher", "none", max_iter=20, tol=1e-6),
        True,
    ),
    "nearswap": (
        "nearswap",
        {"t": 0.02},
        None,
        [1],
        "first",
        _whole("nearswap", "first", n=1, t=0.02),
        True,
    ),
    "arcee_fusion": (
        "arcee_fusion",
        {},
        None,
        [2],
        "first",
        _whole("arcee_fusion", "first", n=1),
        True,
    ),
}


def _registry_names() -> set[str]:
    return {mk for e in METHODS.entries() for mk in getattr(e, "mergekit", ())}


def test_every_registry_mergekit_name_has_a_case() -> None:
    covered = {spec[0] for spec in CASES.values()}
    assert _registry_names() <= covered, sorted(_registry_names() - covered)


def _config(case: str, bpath: Path, paths: list[Path]) -> dict[str, Any]:
    mk, params, per, used, role, _, _ = CASES[case]
    models: list[dict[str, Any]] = []
    for j, i in enumerate(used):
        entry: dict[str, Any] = {"model": str(paths[i])}
        if per is not None:
            entry["parameters"] = dict(per[j])
        models.append(entry)
    cfg: dict[str, Any] = {"merge_method": mk}
    if role != "none":
        cfg["base_model"] = str(bpath)
        if role == "first" and mk == "slerp":  # mergekit's slerp lists the base among models
            models.insert(0, {"model": str(bpath)})
    cfg["models"] = models
    if params:
        cfg["parameters"] = dict(params)
    cfg["dtype"] = "float32"
    return cfg


def _mergekit(cfg_file: Path, out: Path) -> dict[str, torch.Tensor]:
    """mergekit's own output for the same YAML file (skips where mergekit is not installed)."""
    if not MK_PYTHON.exists():
        pytest.skip(f"mergekit is not installed ({MK_PYTHON}); the in-memory check still ran")
    res = subprocess.run(
        [str(MK_PYTHON.parent / "mergekit-yaml"), str(cfg_file), str(out), "--lazy-unpickle"],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "2"},
    )
    assert res.returncode == 0, res.stderr[-3000:]
    from safetensors.torch import load_file

    got: dict[str, torch.Tensor] = {}
    for f in sorted(out.glob("*.safetensors")):
        got.update(load_file(str(f)))
    return got


def _assert_equals_mergekit(
    case: str, cfg_file: Path, got: dict[str, torch.Tensor], out: Path
) -> None:
    """mergekit's output of ``cfg_file`` has the tensors ``got``, equal to MK_TOL."""
    theirs = _mergekit(cfg_file, out)
    assert set(theirs) == set(got), sorted(set(theirs) ^ set(got))
    for k in got:
        torch.testing.assert_close(
            theirs[k].float(), got[k], **MK_TOL, msg=lambda m, k=k: f"{case}: {k}: {m}"
        )


def _run_cli(cfg: dict[str, Any], tmp_path: Path) -> tuple[Path, Path]:
    """``python -m core merge`` of ``cfg`` written as YAML (seed 4, 8 KB shards): (its file,
    the output folder)."""
    cfg_file = tmp_path / "merge.yml"
    cfg_file.write_text(yaml.safe_dump(cfg, sort_keys=False))
    out = tmp_path / "out"
    args = ["merge", str(cfg_file), str(out), "--quiet", "--seed", "4", "--shard-size", "8KB"]
    assert cli_main(args) == 0
    return cfg_file, out


def _against(cases: list[str], comparable: Callable[[str], bool]) -> list[Any]:
    """Each case against the in-memory merge (fast), and again, marked slow, against mergekit
    where the definitions agree (a mergekit run takes seconds)."""
    fast = [pytest.param(c, False, id=c) for c in cases]
    slow = [
        pytest.param(c, True, id=f"{c}-mergekit", marks=pytest.mark.slow)
        for c in cases
        if comparable(c)
    ]
    return fast + slow


@pytest.mark.parametrize(("case", "vs_mergekit"), _against(sorted(CASES), lambda c: CASES[c][6]))
def test_cli_equals_in_memory_and_mergekit(
    case: str, vs_mergekit: bool, world, tmp_path: Path
) -> None:
    base, fts, bpath, paths = world
    mk, _, _, used, _, ref, _ = CASES[case]
    cfg_file, out = _run_cli(_config(case, bpath, paths), tmp_path)
    got = read_out(out)
    assert (
        len(
            set(
                json.loads((out / "model.safetensors.index.json").read_text())[
                    "weight_map"
                ].values()
            )
        )
        > 1
    )
    # the reference in the order the engine merges (shard, then offset: the fine-tunes' files)
    order = list(got)
    ins = [{k: fts[i][k] for k in order} for i in used]
    want = ref({k: base[k] for k in order}, ins, torch.Generator().manual_seed(4))
    assert set(got) == set(want)
    for k in want:
        assert got[k].dtype == want[k].dtype, k
        torch.testing.assert_close(
            got[k], want[k], rtol=0, atol=0, msg=lambda m, k=k: f"{case}: {k}: {m}"
        )
    k = "model.layers.1.mlp.up_proj.weight"
    assert not torch.equal(got[k], base[k]) and not torch.equal(got[k], fts[used[0]][k])
    if vs_mergekit:
        _assert_equals_mergekit(case, cfg_file, got, tmp_path / "mk")


def test_ramplus_global_ratio_differs_from_the_per_tensor_one(world, tmp_path: Path) -> None:
    """The whole-model ratio is a different merge from mergekit's per-tensor one here (else
    the ramplus_global case could not fail)."""
    base, fts, bpath, paths = world
    per_tensor = _whole("ram", epsilon=1e-5, rescale="tensor", r=0.5, alpha=2.0)
    gen = torch.Generator()
    a = per_tensor(base, fts, gen)
    b = _ram_global(1e-5, 0.5, 2.0)(base, fts, gen)
    assert any(not torch.equal(a[k], b[k]) for k in a)


# ---- slices with several sources, merged by a method ----------------------------------------

# a source: (model name, layer_range start, end, per-model parameters or None)
Src = tuple[str, int, int, dict | None]


def _layer(name: str) -> int | None:
    for i in range(N_LAYERS):
        if f".layers.{i}." in name:
            return i
    return None


def _hand_plan(slices: list[list[Src]]) -> dict[str, tuple[int, float, list[tuple[str, str]]]]:
    """Output name -> (slice index, t, (model, input name) per source), by hand as mergekit's
    plan.py: embeddings over the first slice's sources and the rest outside the layers over the
    last slice's, both at t = 0; layer k of a slice is layer start + k of each source, at
    t = k / (n − 1)."""
    names = list(llama_shapes(HIDDEN, INTER, N_LAYERS, VOCAB))
    plan: dict[str, tuple[int, float, list[tuple[str, str]]]] = {}
    for nm in names:
        if _layer(nm) is None:
            i = 0 if "embed" in nm else len(slices) - 1
            plan[nm] = (i, 0.0, [(m, nm) for m, _, _, _ in slices[i]])
    out = 0
    for i, srcs in enumerate(slices):
        n = srcs[0][2] - srcs[0][1]
        for k in range(n):
            for nm in names:
                if _layer(nm) == 0:
                    new = nm.replace(".layers.0.", f".layers.{out}.")
                    ins = [
                        (m, nm.replace(".layers.0.", f".layers.{lo + k}.")) for m, lo, _, _ in srcs
                    ]
                    plan[new] = (i, k / (n - 1) if n > 1 else 1.0, ins)
            out += 1
    return plan


# case -> (method, base model name or None, global parameters, slices (each: sources and the
# slice's parameters), the core.merge keyword arguments of one output tensor given (slice, name,
# t), mergekit comparable)
KwFn = Callable[[int, str, float], dict[str, Any]]
SLICE_CASES: dict[str, tuple[str, str | None, dict, list[tuple[list[Src], dict]], KwFn, bool]] = {
    # the usual frankenmerge slerp: a t gradient with filters; the second slice takes other
    # layers of the base and another fine-tune, with its own t for the MLPs (the rest, and
    # the final norm and head at t = 0, fall through to the global gradient)
    "slerp": (
        "slerp",
        "base",
        {"t": [{"filter": "self_attn", "value": [0.1, 0.9]}, {"value": [0.3, 0.6]}]},
        [
            ([("base", 0, 2, None), ("ft0", 0, 2, None)], {}),
            ([("base", 1, 3, None), ("ft1", 0, 2, None)], {"t": [{"filter": "mlp", "value": 0.7}]}),
        ],
        lambda i, nm, t: {
            "t": 0.7
            if i == 1 and "mlp" in nm
            else (0.1 + 0.8 * t if "self_attn" in nm else 0.3 + 0.3 * t)
        },
        True,
    ),
    # sources at different layer offsets, per-source weights, a slice's weight filter that
    # falls through to the global weight where it matches nothing, a slice's own lambda
    "task_arithmetic": (
        "task_arithmetic",
        "base",
        {"lambda": 0.8, "weight": 0.6},
        [
            (
                [
                    ("base", 0, 2, None),
                    ("ft0", 0, 2, {"weight": 0.5}),
                    ("ft1", 1, 3, {"weight": 1.5}),
                ],
                {},
            ),
            (
                [("base", 2, 3, None), ("ft2", 2, 3, None)],
                {"lambda": 1.2, "weight": [{"filter": "mlp", "value": 2.0}]},
            ),
        ],
        lambda i, nm, t: (
            {"weights": [0.5, 1.5], "scale": 0.8}
            if i == 0
            else {"weights": [2.0 if "mlp" in nm else 0.6], "scale": 1.2}
        ),
        True,
    ),
    # random drops: one generator over the slices, in output order; depth up-scaling
    "dare_ties": (
        "dare_ties",
        "base",
        {"lambda": 1.0, "density": 0.7},
        [
            ([("base", 0, 3, None), ("ft0", 0, 3, None), ("ft1", 0, 3, None)], {}),
            ([("base", 1, 2, None), ("ft2", 2, 3, None)], {"density": 0.5}),
        ],
        lambda i, nm, t: {
            "drop": 0.3 if i == 0 else 0.5,
            "density": 1.0,
            "disjoint": "sum",
            "trim": "tensor",
        },
        False,
    ),
    # no base: a weighted average of two models' different layers
    "linear": (
        "linear",
        None,
        {"normalize": True},
        [
            ([("ft0", 0, 2, {"weight": 1.0}), ("ft1", 1, 3, {"weight": 3.0})], {}),
        ],
        lambda i, nm, t: {"weights": [0.25, 0.75]},
        True,
    ),
}
SLICE_METHOD = {
    "slerp": "slerp",
    "task_arithmetic": "task_arithmetic",
    "dare_ties": "dare_ties",
    "linear": "average",
}


def _slice_config(case: str, paths: dict[str, Path]) -> dict[str, Any]:
    mk, base, params, slices, _, _ = SLICE_CASES[case]
    out: list[dict[str, Any]] = []
    for srcs, sp in slices:
        entry: dict[str, Any] = {"sources": []}
        for m, lo, hi, p in srcs:
            src: dict[str, Any] = {"model": str(paths[m]), "layer_range": [lo, hi]}
            if p:
                src["parameters"] = dict(p)
            entry["sources"].append(src)
        if sp:
            entry["parameters"] = dict(sp)
        out.append(entry)
    cfg: dict[str, Any] = {"slices": out, "merge_method": mk}
    if base is not None:
        cfg["base_model"] = str(paths[base])
    cfg["parameters"] = dict(params)
    cfg["dtype"] = "float32"
    return cfg


def _slice_reference(case: str, sds: dict[str, StateDict], order: list[str]) -> StateDict:
    """core.merge on the tensors the hand plan names, key by key in output order."""
    _, base, _, slices, kw, _ = SLICE_CASES[case]
    method = SLICE_METHOD[case]
    plan = _hand_plan([s for s, _ in slices])
    gen = torch.Generator().manual_seed(4)
    out: StateDict = {}
    for k in order:
        i, t, ins = plan[k]
        xs = {m: {k: sds[m][nm]} for m, nm in ins}
        others = [x for m, x in xs.items() if m != base]
        if base is None:
            out.update(merge(method, others, generator=gen, **kw(i, k, t)))
        elif method == "slerp":
            out.update(merge(method, [xs[base], *others], generator=gen, **kw(i, k, t)))
        else:
            out.update(merge(method, others, base=xs[base], generator=gen, **kw(i, k, t)))
    return out


@pytest.mark.parametrize(
    ("case", "vs_mergekit"), _against(sorted(SLICE_CASES), lambda c: SLICE_CASES[c][5])
)
def test_slices_with_several_sources_equal_in_memory_and_mergekit(
    case: str, vs_mergekit: bool, world, tmp_path: Path
) -> None:
    base, fts, bpath, fpaths = world
    sds = {"base": base, **{f"ft{i}": x for i, x in enumerate(fts)}}
    paths = {"base": bpath, **{f"ft{i}": p for i, p in enumerate(fpaths)}}
    cfg_file, out = _run_cli(_slice_config(case, paths), tmp_path)
    got = read_out(out)
    n_layers = sum(s[0][0][2] - s[0][0][1] for s in SLICE_CASES[case][3])
    conf = json.loads((out / "config.json").read_text())
    assert conf["num_hidden_layers"] == n_layers
    assert f"model.layers.{n_layers - 1}.mlp.up_proj.weight" in got
    assert f"model.layers.{n_layers}.mlp.up_proj.weight" not in got
    want = _slice_reference(case, sds, list(got))
    assert set(got) == set(want)
    for k in want:
        torch.testing.assert_close(
            got[k], want[k], rtol=0, atol=0, msg=lambda m, k=k: f"{case}: {k}: {m}"
        )
    if vs_mergekit:
        _assert_equals_mergekit(case, cfg_file, got, tmp_path / "mk")


def test_slice_merge_errors(world, tmp_path: Path) -> None:
    _, _, bpath, fpaths = world
    b, a, c = str(bpath), str(fpaths[0]), str(fpaths[1])

    def run(slices: list, **top: Any) -> None:
        cfg = {"merge_method": "task_arithmetic", "base_model": b, "slices": slices, **top}
        stream_merge(cfg, tmp_path / "x", progress=False)

    def src(m: str, lo: int, hi: int) -> dict[str, Any]:
        return {"model": m, "layer_range": [lo, hi]}

    with pytest.raises(StreamError, match=r"slices\[0\]: every source .* same number of layers"):
        run([{"sources": [src(b, 0, 2), src(a, 0, 3)]}])
    with pytest.raises(StreamError, match=r"slices\[0\]: base_model .* must be one of"):
        run([{"sources": [src(a, 0, 2), src(c, 0, 2)]}])
    with pytest.raises(StreamError, match=r"slices\[0\] lists .* more than once"):
        run([{"sources": [src(b, 0, 2), src(a, 0, 2), src(a, 1, 3)]}])
    with pytest.raises(StreamError, match=r"slices\[1\].sources\[1\]: .* has no layer 3"):
        run([{"sources": [src(b, 0, 1), src(a, 0, 1)]}, {"sources": [src(b, 1, 3), src(a, 2, 4)]}])
    with pytest.raises(
        StreamError, match=r"slices\[0\] has unknown key\(s\) \['residual_weight'\]"
    ):
        run([{"sources": [src(b, 0, 2), src(a, 0, 2)], "residual_weight": 0.5}])
    with pytest.raises(StreamError, match=r"slices\[0\].sources\[1\].parameters.weight"):
        run([{"sources": [src(b, 0, 2), {**src(a, 0, 2), "parameters": {"weight": "x"}}]}])
    with pytest.raises(StreamError, match="not both"):
        run([{"sources": [src(b, 0, 2), src(a, 0, 2)]}], models=[{"model": a}])
    with pytest.raises(StreamError, match="whole-model statistic"):
        stream_merge(
            {
                "merge_method": "ties",
                "base_model": b,
                "parameters": {"density": 0.5, "trim": "global"},
                "slices": [{"sources": [src(b, 0, 2), src(a, 0, 2)]}],
            },
            tmp_path / "x",
            progress=False,
        )
    assert not (tmp_path / "x").exists()
    assert list(tmp_path.iterdir()) == []  # no partial folder left behind


# ---- passthrough: scale gradients where mergekit evaluates them -----------------------------


def _gradient(values: list[float], t: float) -> float:
    """mergekit's evaluate_setting of a numeric gradient at t (piecewise linear)."""
    x = t * (len(values) - 1)
    i0 = int(x)
    i1 = min(len(values) - 1, i0 + 1)
    return values[i0] * (1 - (x - i0)) + values[i1] * (x - i0)


PASS_SCALE = [0.5, 1.5, 1.0]


@pytest.mark.parametrize(("form", "vs_mergekit"), _against(["slices", "models"], lambda c: True))
def test_passthrough_scale_gradient_equals_hand_plan_and_mergekit(
    form: str, vs_mergekit: bool, world, tmp_path: Path
) -> None:
    """A ``scale`` gradient is evaluated at the layer's place in its slice and at t = 0 for
    the tensors outside the layers (mergekit's pre- and post-weights; ``models:`` is one slice
    over every layer); a source's filter that matches nothing falls through to the config's
    gradient."""
    base, fts, bpath, fpaths = world
    sds = {f"ft{i}": x for i, x in enumerate(fts)}
    o_proj = {"scale": [{"filter": "o_proj", "value": 2.0}]}
    srcs: list[list[Src]] = (
        [[("ft0", 0, 2, None)], [("ft1", 1, 3, o_proj)]]
        if form == "slices"
        else [[("ft0", 0, N_LAYERS, None)]]
    )
    cfg: dict[str, Any] = {"merge_method": "passthrough"}
    if form == "slices":
        cfg["slices"] = [
            {
                "sources": [
                    {
                        "model": str(fpaths[int(m[2:])]),
                        "layer_range": [lo, hi],
                        **({"parameters": p} if p else {}),
                    }
                ]
            }
            for [(m, lo, hi, p)] in srcs
        ]
    else:
        cfg["models"] = [{"model": str(fpaths[0])}]
    cfg["parameters"] = {"scale": PASS_SCALE}
    cfg["dtype"] = "float32"
    cfg_file, out = _run_cli(cfg, tmp_path)
    got = read_out(out)
    plan = _hand_plan(srcs)
    assert set(got) == set(plan)
    for k, (i, t, ins) in plan.items():
        (m, nm), own = ins[0], srcs[i][0][3]
        s = 2.0 if own and "o_proj" in k else _gradient(PASS_SCALE, t)
        torch.testing.assert_close(got[k], sds[m][nm] * s, rtol=1e-6, atol=0, msg=k)
    assert not torch.equal(
        got["lm_head.weight"], fts[0 if form == "models" else 1]["lm_head.weight"]
    )
    if vs_mergekit:
        _assert_equals_mergekit(form, cfg_file, got, tmp_path / "mk")
