"""Slices with several sources merged by a method: mergekit's per-slice merges, streamed.

The usual mergekit config (the layers of two models, slerped with a gradient over depth)::

    slices:
      - sources:
          - model: ./a
            layer_range: [0, 32]
          - model: ./b
            layer_range: [0, 32]
    merge_method: slerp
    base_model: ./a
    parameters:
      t:
        - filter: self_attn
          value: [0, 0.5, 0.3, 0.7, 1]
        - value: 0.5
    dtype: bfloat16

Planned as mergekit 0.1.5 plans it (``plan.py``: ``plan_module`` / ``plan_slice``): the output's
layers are the slices' layers in order, renumbered from 0; layer ``k`` of a slice merges layer
``start + k`` of every source (all sources of a slice span the same number of layers). Each
slice is its own merge of its sources with the config's ``merge_method``: ``base_model`` is the
slice's own ``base_model`` or the config's, and must be one of the slice's sources where the
method uses a base (its ``layer_range`` says which of its layers are the base); a parameter is
taken from the source's ``parameters`` (per model), else the slice's, else the config's — each
level falls through to the next where its filters match nothing, as mergekit's
``ConfigReader.parameter_sources``. A gradient is evaluated at the layer's position in its
slice, ``k / (n − 1)`` (1 for a one-layer slice). Tensors outside the layer stack (embeddings
``embed``/``wte``/``wpe``) are merged over the first slice's sources, the rest (final norm,
head) over the last slice's, both at t = 0 with their slice's parameters, as mergekit's pre- and
post-weights.

Every part is an ordinary streaming merge (:func:`core.stream.engine._run`, the same kernels,
checks and bounded memory: one key of every source at a time), written into one sharded output;
one generator draws for the random methods in output order, so the result equals
:func:`core.merge.merge` run slice by slice on the renumbered layers with that generator.

Not here, with a message: the whole-model TIES trim (``trim: global``) and RAM+'s whole-model
ratio (``overlap: global``), whose statistic over a stack of slices of different models has no
one meaning; the same model twice in one slice; ``modules:``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .config import (
    _LAYER,
    MergeConfig,
    _check_acyclic,
    _resolve,
    check_parameters,
    load_config,
)
from .config import _TOP_KEYS as _CONFIG_KEYS
from .engine import (
    MergeReport,
    ProgressFn,
    _fused_errors,
    _out_dtype,
    _run,
    check_space,
    parse_size,
    warn_skipped,
)
from .family import BASE_AS_INPUT
from .inputs import Inputs, check_inputs, check_kinds, model_tensors
from .mergekit_names import tensor_call
from .output import assembling, check_output, publish
from .slices import (
    _PRE,
    _by_layer,
    _file_order,
    _files_from,
    _renumber,
    compose_parameters,
    finish_stack,
    parse_source,
    stack_protected,
)
from .st_io import (
    OutTensor,
    ShardReader,
    ShardWriter,
    StreamError,
    TensorInfo,
    plan_shards,
)

_TOP_KEYS = (_CONFIG_KEYS - {"models"}) | {"slices"}
_SLICE_KEYS = {"sources", "parameters", "base_model"}


@dataclass(frozen=True)
class Part:
    """One merge of a slice merge: the output tensors of one slice (or the pre-/post-weights)
    with each merged model's source tensor, and the kernel call per tensor."""

    inputs: Inputs
    calls: dict[str, tuple[str, dict[str, Any], bool]]


@dataclass(frozen=True)
class SliceMergePlan:
    """The parts in output order, the output depth and where the side files come from."""

    parts: tuple[Part, ...]
    n_layers: int
    dtype: torch.dtype | None
    out_dtype: torch.dtype | None
    files_from: Path
    paths: tuple[Path, ...]  # every source model
    bases: tuple[Path, ...] = ()  # every base_model named (a linear merge may not read it)


def plan_slice_merge(raw: Mapping[str, Any], base_dir: Path) -> SliceMergePlan:
    """Check a ``slices:`` config with a merge method and plan every output tensor.

    Raises:
        StreamError: unknown keys, ``models:`` beside ``slices:``, bad sources or layer ranges,
            sources of one slice with different layer counts, a base that is not among a
            slice's sources, the same model twice in a slice, models without the layers or
            tensors asked for, parameters the method does not take, the whole-model
            statistics (``trim: global``, ``overlap: global``).
    """
    _check_acyclic(raw)
    unknown = sorted(set(raw) - _TOP_KEYS, key=str)
    if unknown:
        hint = " (give either 'slices:' or 'models:', not both)" if "models" in unknown else ""
        raise StreamError(
            f"unknown config key(s) {unknown}{hint}; expected some of {sorted(_TOP_KEYS)}"
        )
    slices = raw.get("slices")
    if not isinstance(slices, list) or not slices:
        raise StreamError(f"slices must be a non-empty list, got {slices!r}")
    params = raw.get("parameters") or {}
    if not isinstance(params, Mapping):
        raise StreamError(f"parameters must be a mapping, got {type(params).__name__}")
    check_parameters(params, "parameters")
    parsed = [_slice(s, i) for i, s in enumerate(slices)]
    tensors: dict[str, dict[str, TensorInfo]] = {}  # model reference -> its tensors
    paths: dict[str, Path] = {}
    for i, (srcs, _, _) in enumerate(parsed):
        for j, src in enumerate(srcs):
            ref = str(src["model"])
            if ref not in tensors:
                paths[ref] = _resolve(ref, base_dir, f"slices[{i}].sources[{j}].model")
                tensors[ref] = model_tensors(paths[ref])

    parts: list[Part] = []
    out_layer = 0

    def add(i: int, picks: list[dict[str, TensorInfo]], t: dict[str, float]) -> None:
        srcs, slice_params, base_ref = parsed[i]
        cfg = _config(raw, srcs, slice_params, base_ref, params, base_dir, i)
        part = _part(cfg, srcs, picks, t, base_dir, i)
        if part is not None:
            parts.append(part)

    first_srcs = parsed[0][0]
    pre = [_outside(tensors[str(s["model"])], True) for s in first_srcs]
    add(0, pre, dict.fromkeys(pre[0], 0.0))
    for i, (srcs, _, _) in enumerate(parsed):
        spans = [s["layer_range"][1] - s["layer_range"][0] for s in srcs]
        if len(set(spans)) != 1:
            raise StreamError(
                f"slices[{i}]: every source of a slice must span the same number of layers, "
                f"got {spans} (layer_range {[s['layer_range'] for s in srcs]})"
            )
        n = spans[0]
        for k in range(n):
            picks = []
            for j, src in enumerate(srcs):
                ref = str(src["model"])
                by_layer = _by_layer(tensors[ref])
                layer = src["layer_range"][0] + k
                if layer not in by_layer:
                    raise StreamError(
                        f"slices[{i}].sources[{j}]: {ref!r} has no layer {layer} (it has "
                        f"{len(by_layer)} layers)"
                    )
                picks.append({_renumber(nm, out_layer): tensors[ref][nm] for nm in by_layer[layer]})
            add(i, picks, dict.fromkeys(picks[0], k / (n - 1) if n > 1 else 1.0))
            out_layer += 1
    last_srcs = parsed[-1][0]
    post = [_outside(tensors[str(s["model"])], False) for s in last_srcs]
    add(len(parsed) - 1, post, dict.fromkeys(post[0], 0.0))

    seen: set[str] = set()
    for part in parts:
        for name in part.inputs.keys:
            if name in seen:
                raise StreamError(f"two slices write the tensor {name!r}")
            seen.add(name)
    base0 = parts[0].inputs.cfg.base
    first = paths[str(first_srcs[0]["model"])] if base0 is None else base0.path
    files_from = _files_from(raw, first, base_dir)
    if files_from not in paths.values():
        raise StreamError(
            f"tokenizer_source must be 'base', 'union' or one of the slices' sources, got "
            f"{raw.get('tokenizer_source')!r} ({files_from}); its files are copied into the output"
        )
    cfg0 = parts[0].inputs.cfg
    return SliceMergePlan(
        parts=tuple(parts),
        n_layers=out_layer,
        dtype=cfg0.dtype,
        out_dtype=cfg0.out_dtype,
        files_from=files_from,
        paths=tuple(paths.values()),
        bases=tuple(_named_bases(raw, base_dir)),
    )


def stream_slice_merge(
    raw: Mapping[str, Any],
    out_dir: str | Path,
    *,
    root: str | Path | None = None,
    config_file: Path | None = None,
    overwrite: bool = False,
    shard_size: int | str = 5 * 10**9,
    device: torch.device | None = None,
    seed: int = 0,
    progress: bool | ProgressFn = True,
) -> MergeReport:
    """Write the output of a ``slices:`` config with a merge method into ``out_dir``
    (atomically), with the output guards of every streaming merge (:mod:`core.stream.output`).
    Arguments as :func:`core.stream.stream_merge`, which hands such configs here."""
    t0 = time.perf_counter()
    dev = device if device is not None else torch.device("cpu")
    plan = plan_slice_merge(raw, Path(root) if root is not None else Path.cwd())
    shard_files = [
        info.path
        for part in plan.parts
        for infos in [*part.inputs.infos, part.inputs.base_infos or {}]
        for info in infos.values()
    ]
    out = check_output(
        out_dir,
        stack_protected([*plan.paths, *plan.bases], plan.files_from, config_file),
        shard_files,
        overwrite,
    )
    specs = [
        OutTensor(
            k, _out_dtype(part.inputs.cfg, part.inputs.infos[0][k]), part.inputs.infos[0][k].shape
        )
        for part in plan.parts
        for k in part.inputs.keys
    ]
    plans = plan_shards(specs, parse_size(shard_size))
    total_out = sum(p.size for p in plans)
    check_space(out, total_out)
    reader = ShardReader()
    stats = {"read": 0}
    try:
        with assembling(out, f" (needs {total_out / 1e9:.2f} GB)") as partial:
            writer = ShardWriter(partial, plans)
            gen = torch.Generator(device=dev).manual_seed(seed)
            done = 0
            for part in plan.parts:
                with _fused_errors(part.inputs.cfg.method, len(part.inputs.merged)):
                    _run(
                        part.inputs,
                        part.calls,
                        reader,
                        writer,
                        plans,
                        dev,
                        seed,
                        progress,
                        stats,
                        gen=gen,
                        done0=done,
                        total=len(specs),
                    )
                done += len(part.inputs.keys)
            writer.close()
            skipped = finish_stack(
                plan.files_from,
                plan.n_layers,
                plan.out_dtype or plan.dtype,
                raw,
                partial,
                plans,
                {"seed": seed, "inputs": [str(p) for p in plan.paths]},
            )
            publish(partial, out, overwrite)
    finally:
        reader.close()
    warn_skipped(skipped, plan.files_from, stacklevel=3)
    return MergeReport(
        out,
        len(specs),
        stats["read"],
        sum(s.nbytes for s in specs),
        time.perf_counter() - t0,
        None,
        [p.filename for p in plans],
        skipped,
    )


def _named_bases(raw: Mapping[str, Any], base_dir: Path) -> list[Path]:
    """The folders named as ``base_model`` (the config's, each slice's; already checked to
    exist): OUT_DIR keeps clear of them even where the method does not read them (linear)."""
    refs = [raw.get("base_model"), *(s.get("base_model") for s in raw["slices"])]
    return [_resolve(r, base_dir, "base_model") for r in refs if isinstance(r, str)]


def _slice(s: Any, i: int) -> tuple[list[dict[str, Any]], dict[str, Any], str | None]:
    """(sources, the slice's parameters, its base_model reference) of ``slices[i]``."""
    if not isinstance(s, Mapping):
        raise StreamError(f"slices[{i}] must be a mapping with 'sources:', got {s!r}")
    unknown = sorted(set(s) - _SLICE_KEYS, key=str)
    if unknown:
        raise StreamError(
            f"slices[{i}] has unknown key(s) {unknown}; expected some of {sorted(_SLICE_KEYS)}"
        )
    srcs = s.get("sources")
    if not isinstance(srcs, list) or not srcs:
        raise StreamError(f"slices[{i}] needs 'sources:', a non-empty list, got {s!r}")
    out = [parse_source(src, f"slices[{i}].sources[{j}]") for j, src in enumerate(srcs)]
    for j, src in enumerate(out):
        check_parameters(src["parameters"], f"slices[{i}].sources[{j}].parameters")
    refs = [str(src["model"]) for src in out]
    twice = sorted({r for r in refs if refs.count(r) > 1})
    if twice:
        raise StreamError(
            f"slices[{i}] lists {twice} more than once: a slice merges each model once (stack "
            "two slices to reuse a model's layers)"
        )
    params = s.get("parameters") or {}
    if not isinstance(params, Mapping):
        raise StreamError(f"slices[{i}].parameters must be a mapping, got {type(params).__name__}")
    check_parameters(params, f"slices[{i}].parameters")
    base = s.get("base_model")
    if base is not None and not isinstance(base, str):
        raise StreamError(f"slices[{i}].base_model must be a model path, got {base!r}")
    return out, dict(params), base


def _config(
    raw: Mapping[str, Any],
    srcs: Sequence[Mapping[str, Any]],
    slice_params: Mapping[str, Any],
    slice_base: str | None,
    params: Mapping[str, Any],
    base_dir: Path,
    i: int,
) -> MergeConfig:
    """The merge of one slice as an ordinary config of whole models (its sources)."""
    base_ref = slice_base if slice_base is not None else raw.get("base_model")
    refs = [str(s["model"]) for s in srcs]
    doc: dict[str, Any] = {
        "merge_method": raw.get("merge_method"),
        "models": [
            {"model": r, "parameters": s["parameters"]} for r, s in zip(refs, srcs, strict=True)
        ],
        "parameters": compose_parameters(slice_params, params),
    }
    for key in ("dtype", "out_dtype"):
        if raw.get(key) is not None:
            doc[key] = raw[key]
    if base_ref is not None:
        base_path = _resolve(str(base_ref), base_dir, f"slices[{i}].base_model")
        src_paths = [_resolve(r, base_dir, f"slices[{i}].sources") for r in refs]
        if base_path in src_paths:
            doc["base_model"] = base_ref
        elif raw.get("merge_method") != "linear":
            raise StreamError(
                f"slices[{i}]: base_model {base_ref!r} must be one of the slice's sources (its "
                "layer_range says which of its layers are the base), as in mergekit; got "
                f"sources {refs}"
            )
    try:
        return load_config(doc, root=base_dir)
    except StreamError as err:
        raise StreamError(f"slices[{i}]: {err}") from None


def _part(
    cfg: MergeConfig,
    srcs: Sequence[Mapping[str, Any]],
    picks: Sequence[dict[str, TensorInfo]],
    t: Mapping[str, float],
    base_dir: Path,
    i: int,
) -> Part | None:
    """The merge of the tensors ``picks`` (one {output name: tensor} per source, in source
    order) by ``cfg``; None when there is nothing to write."""
    if not picks[0]:
        return None
    by_path = {
        _resolve(str(s["model"]), base_dir, "model"): pick
        for s, pick in zip(srcs, picks, strict=True)
    }
    merged = cfg.merged_models()
    if cfg.merge_method in ("slerp", *BASE_AS_INPUT) and cfg.base is not None:
        merged = [cfg.base, *merged]  # as open_inputs: the base is the first input
    infos = [by_path[m.path] for m in merged]
    named = [(f"{m.model!r}", inf) for m, inf in zip(merged, infos, strict=True)]
    base_infos = None
    if cfg.base is not None and cfg.merge_method not in ("linear", "slerp", *BASE_AS_INPUT):
        base_infos = by_path[cfg.base.path]
        named.insert(0, (f"base_model {cfg.base.model!r}", base_infos))
    try:
        check_inputs(named, allow_dtype_mix=cfg.dtype is not None)
        if any(x.dtype.is_floating_point for x in infos[0].values()):
            check_kinds(named)
    except StreamError as err:
        raise StreamError(f"slices[{i}]: {err}") from None
    keys = _file_order(infos[0])
    calls = {k: tensor_call(cfg, k, t[k]) for k in keys}
    for _, hyper, _ in calls.values():
        if hyper.get("trim") == "global" or hyper.get("rescale") == "global":
            raise StreamError(
                f"slices[{i}]: {cfg.merge_method} with a whole-model statistic (trim: global, "
                "overlap: global) is not supported with slices (a stack of slices of different "
                "models has no one whole model); use the per-tensor form"
            )
    return Part(Inputs(cfg, merged, infos, base_infos, keys), calls)


def _outside(infos: Mapping[str, TensorInfo], pre: bool) -> dict[str, TensorInfo]:
    """A model's tensors outside the layer stack: the embeddings (``pre``) or the rest."""
    return {
        n: infos[n]
        for n in _file_order(infos)
        if not _LAYER.search(n) and bool(_PRE.search(n)) == pre
    }
