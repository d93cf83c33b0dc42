"""``merge_method: passthrough`` with ``slices:`` — frankenmerges and depth up-scaling, streamed.

mergekit's layer-stacking config (README "slices", ``plan.py``)::

    slices:
      - sources:
          - model: ./a
            layer_range: [0, 24]          # half-open: layers 0..23 of a
      - sources:
          - model: ./b
            layer_range: [8, 32]
            parameters:
              scale:                      # optional, per tensor
                - filter: o_proj
                  value: 0.5
                - value: 1.0
    merge_method: passthrough
    dtype: bfloat16

The output's layers are the slices' layers in order, renumbered from 0 (layer i of a tensor
name ``...layers.<i>....``; also ``h``, ``blocks``, ``layer``, ``block``, as
:func:`core.stream.layer_depths`). Tensors outside the layer stack are taken as mergekit takes
its pre- and post-weights: embeddings (names with ``embed``, ``wte``, ``wpe``) from the first
slice's model, the rest (final norm, head) from the last slice's. ``scale`` multiplies a tensor
(a gradient list is evaluated at the layer's position inside its slice, 0 to 1, and at 0 for
the tensors outside the layers, as mergekit's ``plan.py``; ``models:`` is one slice over all
the layers);
floating tensors are cast to ``dtype``/``out_dtype``. ``passthrough`` with ``models:`` (one
model) copies that model, scaled. ``num_hidden_layers`` in the copied config.json is set to the
new depth. One tensor is mapped, scaled and written at a time; the output is assembled under a
temporary name and renamed when complete, as every streaming merge.

Slices with several sources merged by another method (``merge_method: slerp`` and so on) are
planned by :mod:`core.stream.slice_merge`; passthrough takes one source per slice.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import yaml

from ..merge._base import check_merged_finite
from .config import _LAYER, _check_acyclic, _dtype, _resolve, evaluate_setting, layer_depths
from .config import _TOP_KEYS as _CONFIG_KEYS
from .output import INDEX_NAME, assembling, check_output, copy_side_files, publish
from .st_io import (
    OutTensor,
    ShardReader,
    ShardWriter,
    StreamError,
    TensorInfo,
    plan_shards,
)

if TYPE_CHECKING:
    from .engine import MergeReport

_PRE = re.compile(r"embed|(?:^|\.)wte\.|(?:^|\.)wpe\.")
_TOP_KEYS = _CONFIG_KEYS | {"slices"}


@dataclass(frozen=True)
class Piece:
    """One output tensor: where it comes from and the scale applied."""

    out_name: str
    info: TensorInfo
    scale: float | None


@dataclass(frozen=True)
class SlicePlan:
    """The output of a passthrough config, tensor by tensor, in output order."""

    pieces: tuple[Piece, ...]
    inputs: tuple[Path, ...]  # the source models
    n_layers: int
    dtype: torch.dtype | None
    out_dtype: torch.dtype | None
    files_from: Path  # model whose non-weight files are copied
    raw: dict[str, Any]


def is_passthrough(source: Any) -> dict[str, Any] | None:
    """The parsed config when ``source`` (path or mapping) is a passthrough/slices config."""
    raw: Any = source
    if isinstance(source, str | os.PathLike):
        p = Path(source)
        if not p.is_file():
            return None
        try:
            raw = yaml.safe_load(p.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError, RecursionError):
            return None  # load_config reports what is wrong with the file
    if not isinstance(raw, Mapping):
        return None
    if raw.get("merge_method") == "passthrough" or raw.get("slices") is not None:
        return dict(raw)
    return None


def plan_slices(raw: Mapping[str, Any], base_dir: Path) -> SlicePlan:
    """Check a passthrough config and list every output tensor with its source.

    Raises:
        StreamError: another method with slices, several sources in a slice, bad layer ranges,
            models without the layers asked for, unknown keys.
    """
    from .inputs import model_tensors

    _check_acyclic(raw)
    unknown = sorted(set(raw) - _TOP_KEYS, key=str)
    if unknown:
        raise StreamError(f"unknown config key(s) {unknown}; expected some of {sorted(_TOP_KEYS)}")
    if raw.get("merge_method") != "passthrough":
        raise StreamError(
            "slices are planned for merge_method: passthrough only (frankenmerges, depth "
            f"up-scaling), got {raw.get('merge_method')!r}"
        )
    sources = _sources(raw)
    params = raw.get("parameters") or {}
    if not isinstance(params, Mapping):
        raise StreamError(f"parameters must be a mapping, got {type(params).__name__}")
    models: dict[str, dict[str, TensorInfo]] = {}
    paths: dict[str, Path] = {}
    for i, src in enumerate(sources):
        ref = str(src["model"])
        if ref not in models:
            paths[ref] = _resolve(ref, base_dir, f"slices[{i}].sources[0].model")
            models[ref] = model_tensors(paths[ref])
    first, last = str(sources[0]["model"]), str(sources[-1]["model"])
    pieces: list[Piece] = []
    if sources[0]["layer_range"] is None:  # passthrough of one whole model
        infos = models[first]
        depth = layer_depths(list(infos))  # as mergekit: one slice over every layer
        pieces = [_piece(n, infos[n], sources[0], params, depth[n]) for n in _file_order(infos)]
        return SlicePlan(
            pieces=tuple(pieces),
            inputs=tuple(paths.values()),
            n_layers=len(_by_layer(infos)),
            dtype=_dtype(raw.get("dtype"), "dtype"),
            out_dtype=_dtype(raw.get("out_dtype"), "out_dtype"),
            files_from=_files_from(raw, paths[first], base_dir),
            raw=dict(raw),
        )
    outside = {ref: _outside_layers(infos) for ref, infos in models.items()}
    for name in outside[first]:
        if _PRE.search(name):
            pieces.append(_piece(name, models[first][name], sources[0], params, 0.0))
    out_layer = 0
    for i, src in enumerate(sources):
        ref = str(src["model"])
        by_layer = _by_layer(models[ref])
        lo, hi = src["layer_range"]
        missing = [j for j in range(lo, hi) if j not in by_layer]
        if missing:
            raise StreamError(
                f"slices[{i}]: {ref!r} has no layer(s) {missing[:8]} (it has "
                f"{len(by_layer)} layers)"
            )
        n = hi - lo
        for off, j in enumerate(range(lo, hi)):
            t = off / (n - 1) if n > 1 else 1.0
            for name in by_layer[j]:
                new = _renumber(name, out_layer)
                pieces.append(_piece(name, models[ref][name], src, params, t, new))
            out_layer += 1
    for name in outside[last]:
        if not _PRE.search(name):
            pieces.append(_piece(name, models[last][name], sources[-1], params, 0.0))
    seen: set[str] = set()
    for p in pieces:
        if p.out_name in seen:
            raise StreamError(f"two slices write the tensor {p.out_name!r}")
        seen.add(p.out_name)
    return SlicePlan(
        pieces=tuple(pieces),
        inputs=tuple(paths.values()),
        n_layers=out_layer,
        dtype=_dtype(raw.get("dtype"), "dtype"),
        out_dtype=_dtype(raw.get("out_dtype"), "out_dtype"),
        files_from=_files_from(raw, paths[first], base_dir),
        raw=dict(raw),
    )


def _files_from(raw: Mapping[str, Any], first: Path, base_dir: Path) -> Path:
    """The model whose non-weight files (config, tokenizer) are copied: tokenizer_source when
    it names a model, else the first slice's model."""
    tok = raw.get("tokenizer_source")
    if tok in (None, "base", "union"):
        return first
    return _resolve(str(tok), base_dir, "tokenizer_source")


def stream_passthrough(
    raw: Mapping[str, Any],
    out_dir: str | Path,
    *,
    root: str | Path | None = None,
    config_file: Path | None = None,
    overwrite: bool = False,
    shard_size: int | str = 5 * 10**9,
) -> MergeReport:
    """Write the output of a passthrough config into ``out_dir`` (atomically), with the same
    output guards as every streaming merge (:mod:`core.stream.output`): OUT_DIR clear of the
    inputs and the config, ``overwrite`` only over a previous merge output, finite inputs."""
    from .engine import (
        OVERFLOW_HINT,
        MergeReport,
        check_finite_inputs,
        check_space,
        parse_size,
        warn_skipped,
    )

    t0 = time.perf_counter()
    plan = plan_slices(raw, Path(root) if root is not None else Path.cwd())
    out = check_output(
        out_dir,
        stack_protected(plan.inputs, plan.files_from, config_file),
        [p.info.path for p in plan.pieces],
        overwrite,
    )
    specs = [OutTensor(p.out_name, _out_dtype(plan, p.info), p.info.shape) for p in plan.pieces]
    plans = plan_shards(specs, parse_size(shard_size))
    check_space(out, sum(p.size for p in plans))
    last_of = {s.tensors[-1].name: s.filename for s in plans}
    reader = ShardReader()
    read = 0
    try:
        with assembling(out) as partial:
            writer = ShardWriter(partial, plans)
            for piece, spec in zip(plan.pieces, specs, strict=True):
                x = reader.map(piece.info)
                read += piece.info.nbytes
                y = x
                if x.is_floating_point():
                    check_finite_inputs(piece.out_name, [x], None, [str(piece.info.path)], "")
                    y = x.to(plan.dtype or x.dtype)
                    if piece.scale is not None:
                        y = y * piece.scale
                    y = y.to(spec.dtype)
                    if piece.scale is not None or y.dtype != x.dtype:
                        check_merged_finite(piece.out_name, y, hint=OVERFLOW_HINT)
                writer.write(piece.out_name, y.contiguous())
                if piece.out_name in last_of:
                    writer.finish(last_of[piece.out_name])
                del x, y
            writer.close()
            skipped = finish_stack(
                plan.files_from,
                plan.n_layers,
                plan.out_dtype or plan.dtype,
                plan.raw,
                partial,
                plans,
            )
            publish(partial, out, overwrite)
    except ValueError as err:
        if isinstance(err, StreamError):
            raise
        raise StreamError(str(err)) from None  # an overflowing scale or cast
    finally:
        reader.close()
    warn_skipped(skipped, plan.files_from, stacklevel=3)
    return MergeReport(
        out,
        len(plan.pieces),
        read,
        sum(t.nbytes for t in specs),
        time.perf_counter() - t0,
        None,
        [p.filename for p in plans],
        skipped,
    )


def stack_protected(
    inputs: Sequence[Path], files_from: Path, config_file: Path | None
) -> list[tuple[str, Path]]:
    """The paths the output of a layer stack must keep clear of: its source models, the model
    its side files come from and the config file."""
    out = [(f"input model {str(p)!r}", p) for p in inputs]
    out.append(("tokenizer_source", files_from))
    if config_file is not None:
        out.append(("the config file", config_file))
    return out


def _sources(raw: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One source per slice (mergekit's ``models:`` form is one slice of the whole model)."""
    if raw.get("slices") is not None and raw.get("models") is not None:
        raise StreamError("give either 'slices:' or 'models:', not both")
    if raw.get("slices") is None:
        models = raw.get("models")
        if not isinstance(models, list) or len(models) != 1:
            raise StreamError(
                "passthrough copies exactly one model under 'models:' (use 'slices:' to stack "
                f"layer ranges), got {models!r}"
            )
        m = models[0] if isinstance(models[0], Mapping) else {"model": models[0]}
        if not isinstance(m, Mapping) or "model" not in m:
            raise StreamError(f"models[0] must be a mapping with a 'model' key, got {m!r}")
        return [{"model": m["model"], "layer_range": None, "parameters": m.get("parameters")}]
    slices = raw["slices"]
    if not isinstance(slices, list) or not slices:
        raise StreamError(f"slices must be a non-empty list, got {slices!r}")
    out = []
    for i, s in enumerate(slices):
        srcs = s.get("sources") if isinstance(s, Mapping) else None
        if not isinstance(srcs, list) or not srcs:
            raise StreamError(f"slices[{i}] needs 'sources:', a non-empty list, got {s!r}")
        if len(srcs) != 1:
            raise StreamError(
                f"slices[{i}] has {len(srcs)} sources; passthrough takes one per slice (to merge "
                "several models per slice, set merge_method to a merge method such as slerp)"
            )
        src = parse_source(srcs[0], f"slices[{i}].sources[0]")
        slice_params = s.get("parameters") or {}
        if not isinstance(slice_params, Mapping):
            raise StreamError(
                f"slices[{i}].parameters must be a mapping, got {type(slice_params).__name__}"
            )
        out.append({**src, "parameters": compose_parameters(src["parameters"], slice_params)})
    return out


def parse_source(src: Any, where: str) -> dict[str, Any]:
    """One slice source checked: ``{model, layer_range: [start, end), parameters}``.

    Raises:
        StreamError: naming ``where``, for a source that is not such a mapping, a bad
            ``layer_range`` or ``parameters`` that are not a mapping.
    """
    if not isinstance(src, Mapping) or "model" not in src:
        raise StreamError(f"{where} must be a mapping with 'model', got {src!r}")
    lr = src.get("layer_range")
    if (
        not isinstance(lr, list)
        or len(lr) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) for v in lr)
        or not 0 <= lr[0] < lr[1]
    ):
        raise StreamError(
            f"{where}.layer_range must be [start, end) with 0 <= start < end, got {lr!r}"
        )
    params = src.get("parameters") or {}
    if not isinstance(params, Mapping):
        raise StreamError(f"{where}.parameters must be a mapping, got {type(params).__name__}")
    return {"model": src["model"], "layer_range": list(lr), "parameters": dict(params)}


def _as_entries(setting: Any) -> list[Any]:
    """A parameter setting as a list of ``{filter, value}`` entries (a scalar or gradient is
    one entry without filter)."""
    if isinstance(setting, Mapping):
        return [dict(setting)]
    if isinstance(setting, list) and setting and all(isinstance(v, Mapping) for v in setting):
        return [dict(v) for v in setting]
    return [{"value": setting}]


def compose_parameters(high: Mapping[str, Any], low: Mapping[str, Any]) -> dict[str, Any]:
    """``high`` over ``low``, a key of both falling through to ``low`` where ``high``'s filters
    match nothing (mergekit's precedence of a slice's parameters over the config's)."""
    out = dict(low)
    for key, setting in high.items():
        out[key] = [*_as_entries(setting), *_as_entries(low[key])] if key in low else setting
    return out


def _outside_layers(infos: Mapping[str, TensorInfo]) -> list[str]:
    return [n for n in _file_order(infos) if not _LAYER.search(n)]


def _by_layer(infos: Mapping[str, TensorInfo]) -> dict[int, list[str]]:
    out: dict[int, list[str]] = {}
    for n in _file_order(infos):
        m = _LAYER.search(n)
        if m:
            out.setdefault(int(m.group(1)), []).append(n)
    return out


def _file_order(infos: Mapping[str, TensorInfo]) -> list[str]:
    return sorted(infos, key=lambda k: (str(infos[k].path), infos[k].start))


def _renumber(name: str, layer: int) -> str:
    m = _LAYER.search(name)
    assert m is not None
    return name[: m.start(1)] + str(layer) + name[m.end(1) :]


def _piece(
    name: str,
    info: TensorInfo,
    src: Mapping[str, Any],
    params: Mapping[str, Any],
    t: float,
    out_name: str | None = None,
) -> Piece:
    out_name = out_name or name
    setting = compose_parameters(src.get("parameters") or {}, params).get("scale")
    scale = evaluate_setting(setting, out_name, t)
    if scale is not None and (isinstance(scale, bool) or not isinstance(scale, int | float)):
        raise StreamError(f"scale for {out_name!r} must be a number, got {scale!r}")
    return Piece(out_name, info, None if scale is None else float(scale))


def _out_dtype(plan: SlicePlan, info: TensorInfo) -> torch.dtype:
    if not info.dtype.is_floating_point:
        return info.dtype
    return plan.out_dtype or plan.dtype or info.dtype


def finish_stack(
    files_from: Path,
    n_layers: int,
    out_dt: torch.dtype | None,
    raw: Mapping[str, Any],
    folder: Path,
    plans: list,
    extra: Mapping[str, Any] | None = None,
) -> list[str]:
    """Finish a layer-stacking output (passthrough, or a slice merge): side files of
    ``files_from``, config.json's depth and dtype, the recipe (``extra`` added), then the index
    (last); returns the side files that were not copied."""
    skipped = copy_side_files(files_from, folder)
    conf = folder / "config.json"
    if conf.exists():
        try:
            data = json.loads(conf.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            data = None
        if isinstance(data, dict):
            if "num_hidden_layers" in data and n_layers:
                data["num_hidden_layers"] = n_layers
            if out_dt is not None and "torch_dtype" in data:
                data["torch_dtype"] = str(out_dt).removeprefix("torch.")
            conf.write_text(json.dumps(data, indent=2))
    (folder / "mergekit_config.yml").write_text(yaml.safe_dump(dict(raw), sort_keys=False))
    recipe = {
        "engine": "mixmerge-workbench core.stream",
        "config": dict(raw),
        "method": raw.get("merge_method", "passthrough"),
        "layers": n_layers,
        **(extra or {}),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    (folder / "merge_recipe.json").write_text(json.dumps(recipe, indent=2, default=str))
    weight_map = {t.name: p.filename for p in plans for t in p.tensors}
    total = sum(t.nbytes for p in plans for t in p.tensors)
    tmp = folder / (INDEX_NAME + ".tmp")
    tmp.write_text(json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}))
    os.replace(tmp, folder / INDEX_NAME)  # the index is the last file written
    return skipped
