"""Streaming merge: tensor by tensor from safetensors shards into a new sharded checkpoint.

Memory: per output tensor, each input model's tensor (plus the base's) is mapped on its own
(CPU; read into pinned buffers for a GPU), merged by the per-tensor kernel of
:data:`core.merge.TENSOR_METHODS` and written at its planned offset. One key is prefetched while
the current one is merged and one result is written in the background, so the peak is about
``2 · (models + 1) + 2`` tensors of the largest size plus the kernels' temporaries — never a
whole model.

Output safety: everything is written into ``OUT.partial-<id>`` beside ``OUT``; the
``model.safetensors.index.json`` is written last and the folder is renamed to ``OUT`` only at the
end, so an interrupted run never leaves a folder that looks complete. ``OUT`` may not overlap an
input or the config, and ``overwrite`` replaces only a previous merge output
(:mod:`core.stream.output`).

Values: NaN/Inf in an input tensor is refused as :func:`core.merge.merge` refuses it (checked per
tensor as it is merged, so memory stays bounded), and so is a merged tensor that overflows its
stored dtype (float16 sums beyond ±65504). Integer tensors are copied, never cast and merged
(:func:`check_kinds`).
"""

from __future__ import annotations

import contextlib
import errno
import inspect
import json
import math
import os
import shutil
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import Tensor

from .._warnings import MixmergeWarning
from ..io import CheckpointError, hf_folder_tensors, read_weight_map
from ..merge._base import check_merged_finite, first_nonfinite
from .config import MergeConfig, ModelEntry, layer_depths, load_config, parameter
from .family import BASE_AS_INPUT, FAMILY_ALIASES, family_call
from .output import (
    INDEX_NAME,
    check_out_dir,
    check_replaceable,
    copy_side_files,
    make_partial,
    publish,
)
from .st_io import (
    DiskFullError,
    OutTensor,
    ShardReader,
    ShardWriter,
    StreamError,
    TensorInfo,
    plan_shards,
    read_header,
)

DEFAULT_SHARD_SIZE = 5 * 10**9  # bytes, mergekit's default "5B"
OVERFLOW_HINT = "store the merge in a wider type: set 'out_dtype: float32' (or bfloat16)"
ProgressFn = Callable[[dict[str, Any]], None]


@dataclass
class MergeReport:
    """What a streaming merge did.

    Attributes:
        out_dir: the finished output folder.
        n_tensors: tensors written.
        bytes_read: input bytes read (all passes).
        bytes_written: output tensor bytes.
        seconds: wall time.
        thresholds: the global TIES |τ| thresholds per model (global trim only).
        shards: output shard file names.
        skipped_files: side files of the source model that were not copied (links out of
            its folder, or not regular files).
    """

    out_dir: Path
    n_tensors: int
    bytes_read: int
    bytes_written: int
    seconds: float
    thresholds: list[float] | None = None
    shards: list[str] = field(default_factory=list)
    skipped_files: list[str] = field(default_factory=list)


def model_tensors(path: Path) -> dict[str, TensorInfo]:
    """Every tensor of a model: a .safetensors file or a folder (with or without an index).

    A folder's shards must be regular files inside it (:func:`core.io.hf_folder_tensors`).

    Raises:
        StreamError: missing shard files, shard names or links that leave the folder, a
            malformed index, names the index lists but the shards lack, a tensor stored twice,
            no safetensors weights, or no tensors at all.
    """
    p = Path(path)
    if p.is_file():
        if p.suffix != ".safetensors":
            raise StreamError(f"{p}: only .safetensors weights are streamed, got {p.suffix!r}")
        out = read_header(p)
    elif not p.is_dir():
        raise StreamError(f"model not found: {p}")
    else:
        try:
            files = hf_folder_tensors(p)
            weight_map = read_weight_map(p)
        except CheckpointError as err:
            raise StreamError(str(err)) from None
        out = {}
        for f in files:
            for name, info in read_header(f).items():
                if name in out:
                    raise StreamError(
                        f"{p}: tensor {name!r} is stored in both {out[name].path.name} and {f.name}"
                    )
                out[name] = info
        absent = sorted(n for n in weight_map or {} if n not in out)
        if absent:
            raise StreamError(
                f"{p}: the index lists {len(absent)} tensor(s) missing from the shards: "
                f"{_cut(absent)}"
            )
    if not out:
        raise StreamError(f"{p} holds no tensors: there is nothing to merge")
    return out


def check_inputs(
    named: Sequence[tuple[str, Mapping[str, TensorInfo]]], *, allow_dtype_mix: bool
) -> None:
    """Same tensor names and shapes in every model; same dtypes unless ``allow_dtype_mix``.

    Raises:
        StreamError: listing, per model, the missing and unexpected names, then the shape and
            dtype mismatches.
    """
    ref_name, ref = named[0]
    problems = []
    for nm, infos in named[1:]:
        missing = sorted(set(ref) - set(infos))
        extra = sorted(set(infos) - set(ref))
        if missing:
            problems.append(f"{nm} lacks {len(missing)} tensor(s) of {ref_name}: {_cut(missing)}")
        if extra:
            problems.append(f"{nm} has {len(extra)} tensor(s) {ref_name} lacks: {_cut(extra)}")
        shapes = [
            f"{k} {list(ref[k].shape)} vs {list(infos[k].shape)}"
            for k in ref
            if k in infos and ref[k].shape != infos[k].shape
        ]
        if shapes:
            problems.append(f"{nm} differs from {ref_name} in shape: {_cut(shapes)}")
        if not allow_dtype_mix:
            dts = [
                f"{k} {ref[k].dtype} vs {infos[k].dtype}"
                for k in ref
                if k in infos and ref[k].dtype != infos[k].dtype
            ]
            if dts:
                problems.append(
                    f"{nm} differs from {ref_name} in dtype (set 'dtype:' in the config to cast "
                    f"all inputs): {_cut(dts)}"
                )
    if problems:
        raise StreamError("the models do not match: " + "; ".join(problems))


def _cut(xs: Sequence[str], limit: int = 8) -> str:
    more = f" (+{len(xs) - limit} more)" if len(xs) > limit else ""
    return ", ".join(xs[:limit]) + more


def parse_size(text: str | int) -> int:
    """Bytes from ``"5B"`` (billion, as mergekit), ``"500M"``, ``"2GB"``, ``"1GiB"`` or an int."""
    if isinstance(text, int) and not isinstance(text, bool):
        value = text
    else:
        s = str(text).strip().upper().replace(" ", "")
        units = {
            "KIB": 2**10,
            "MIB": 2**20,
            "GIB": 2**30,
            "TIB": 2**40,
            "KB": 10**3,
            "MB": 10**6,
            "GB": 10**9,
            "TB": 10**12,
            "K": 10**3,
            "M": 10**6,
            "B": 10**9,
            "G": 10**9,
            "T": 10**12,
        }
        for u, mult in units.items():
            if s.endswith(u) and s[: -len(u)].replace(".", "", 1).isdigit():
                value = int(float(s[: -len(u)]) * mult)
                break
        else:
            if not s.isdigit():
                raise ValueError(f"shard_size must be bytes like '5B', '500M', '2GB', got {text!r}")
            value = int(s)
    if value <= 0:
        raise ValueError(f"shard_size must be > 0 bytes, got {text!r}")
    return value


# ---------------------------------------------------------------------------------------------
# per-tensor hyperparameters from the config


def tensor_call(cfg: MergeConfig, name: str, t: float) -> tuple[str, dict[str, Any], bool]:
    """The core.merge kernel, its keyword arguments and whether it takes the base tensor.

    Follows mergekit's parameter names and defaults: ``weight`` (1), ``density`` (1),
    ``lambda`` (1), ``normalize`` (linear and ties true, others false), ``t`` for slerp.
    """
    mk = cfg.merge_method
    if mk in FAMILY_ALIASES:
        return family_call(cfg, name, t)
    models = cfg.merged_models()

    def g(key: str, default: Any) -> Any:
        return parameter(cfg, None, key, name, t, default)

    def per(key: str, default: Any) -> list[Any]:
        return [parameter(cfg, m, key, name, t, default) for m in models]

    w = [float(x) for x in per("weight", 1.0)]
    if mk == "linear":
        if g("normalize", True):
            if any(x < 0 for x in w) or sum(w) <= 0:
                raise StreamError(
                    f"linear with normalize: true averages, so every 'weight' must be >= 0 with "
                    f"a positive sum; tensor {name!r} gets weights {w} (or set normalize: false "
                    "for a plain weighted sum)"
                )
            return "average", {"weights": w}, False
        return "task_arithmetic", {"weights": w, "scale": 1.0}, False
    if mk == "slerp":
        return "slerp", {"t": float(g("t", 0.5))}, False
    if mk == "model_stock":
        return "model_stock", {}, True
    lam = float(g("lambda", 1.0))
    if mk == "task_arithmetic":
        if g("normalize", False):
            w = _normalise(w)
        return "task_arithmetic", {"weights": w, "scale": lam}, True
    dens = [float(x) for x in per("density", 1.0)]
    if mk == "dare_linear":
        if g("normalize", False):
            w = _normalise(w)
        return (
            "dare",
            {"weights": w, "scale": lam, "drop": 1.0 - _uniform(dens, "density", mk)},
            True,
        )
    if mk == "ties":
        hyper: dict[str, Any] = {
            "weights": w,
            "scale": lam,
            "trim": str(g("trim", "tensor")),
            "disjoint": str(g("disjoint", "mean" if g("normalize", True) else "sum")),
        }
        if len(set(dens)) == 1:
            hyper["density"] = dens[0]
        else:
            hyper["_densities"] = dens  # per-model trim: thresholds computed per tensor
        return "ties", hyper, True
    if mk == "dare_ties":
        hyper = {
            "weights": w,
            "scale": lam,
            "drop": 1.0 - _uniform(dens, "density", mk),
            "disjoint": str(g("disjoint", "mean" if g("normalize", False) else "sum")),
            "density": 1.0,
            "trim": "tensor",
        }
        return "dare_ties", hyper, True
    if mk == "breadcrumbs":
        hyper = {
            "weights": w,
            "scale": lam,
            "density": _uniform(dens, "density", mk),
            "gamma": float(g("gamma", 0.01)),
        }
        if hyper["density"] + hyper["gamma"] > 1.0:
            raise StreamError(
                f"breadcrumbs keeps 'density' of each row after removing the top 'gamma': "
                f"density + gamma must be <= 1, got {hyper['density']} + {hyper['gamma']} for "
                f"tensor {name!r} (the defaults are density 1 and gamma 0.01)"
            )
        return "breadcrumbs", hyper, True
    raise StreamError(f"merge_method {mk!r} is not supported")  # pragma: no cover


def _normalise(w: list[float]) -> list[float]:
    s = sum(w)
    return [x / s for x in w] if s != 0 else w


def _uniform(values: list[float], key: str, method: str) -> float:
    if len(set(values)) != 1:
        raise StreamError(f"{method}: {key} must be the same for every model here, got {values}")
    return values[0]


def _kernel(method: str) -> Callable[..., Tensor]:
    from ..merge import TENSOR_METHODS

    if method not in TENSOR_METHODS:
        raise StreamError(
            f"core.merge has no per-tensor kernel {method!r} (available: {sorted(TENSOR_METHODS)})"
        )
    return TENSOR_METHODS[method]


def _accepted(fn: Callable[..., Any], hyper: dict[str, Any]) -> dict[str, Any]:
    """Drop keyword arguments the kernel does not take (e.g. ``trim`` for a DARE-TIES kernel
    without a trim step); unknown names starting with '_' are engine-internal."""
    params = inspect.signature(fn).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return {k: v for k, v in hyper.items() if not k.startswith("_")}
    return {k: v for k, v in hyper.items() if k in params}


# ---------------------------------------------------------------------------------------------
# the merge


@dataclass
class _Inputs:
    cfg: MergeConfig
    merged: list[ModelEntry]
    infos: list[dict[str, TensorInfo]]  # per merged model
    base_infos: dict[str, TensorInfo] | None
    keys: list[str]  # output order

    @property
    def labels(self) -> list[str]:
        """How messages name the merged models."""
        return [f"model {m.model!r}" for m in self.merged]

    @property
    def base_label(self) -> str:
        return "base_model" if self.cfg.base is None else f"base_model {self.cfg.base.model!r}"


def _open_inputs(cfg: MergeConfig) -> _Inputs:
    merged = cfg.merged_models()
    if cfg.merge_method in ("slerp", *BASE_AS_INPUT) and cfg.base is not None:
        merged = [cfg.base, *merged]  # slerp(t) goes from the base (t = 0) to the other model
    infos = [model_tensors(m.path) for m in merged]
    named: list[tuple[str, Mapping[str, TensorInfo]]] = [
        (f"{m.model!r}", inf) for m, inf in zip(merged, infos, strict=True)
    ]
    base_infos = None
    if cfg.base is not None and cfg.merge_method not in ("linear", "slerp", *BASE_AS_INPUT):
        base_infos = model_tensors(cfg.base.path)
        named.insert(0, (f"base_model {cfg.base.model!r}", base_infos))
    check_inputs(named, allow_dtype_mix=cfg.dtype is not None)
    check_kinds(named)
    first = infos[0]
    keys = sorted(first, key=lambda k: (str(first[k].path), first[k].start))
    return _Inputs(cfg, merged, infos, base_infos, keys)


def check_kinds(named: Sequence[tuple[str, Mapping[str, TensorInfo]]]) -> None:
    """Integer tensors are never cast and merged: refuse a tensor that is integer in one model
    and floating-point in another, and a model with no floating-point tensor at all (both
    would otherwise be copied from one model while the config asks for a merge).

    Raises:
        StreamError: naming the tensors, models and dtypes.
    """
    ref_name, ref = named[0]
    mixed = [
        f"{k} {ref[k].dtype} in {ref_name} vs {infos[k].dtype} in {nm}"
        for nm, infos in named[1:]
        for k in ref
        if k in infos and ref[k].dtype.is_floating_point != infos[k].dtype.is_floating_point
    ]
    if mixed:
        raise StreamError(
            f"integer and floating-point tensors do not mix: {_cut(mixed)}. Integer tensors "
            "are copied from one model, never cast to 'dtype:' and merged; dequantize a "
            "quantized model before merging it"
        )
    for nm, infos in named:
        if not any(i.dtype.is_floating_point for i in infos.values()):
            dts = sorted({str(i.dtype) for i in infos.values()})
            raise StreamError(
                f"{nm} holds no floating-point tensor (all {len(infos)} are {', '.join(dts)}): "
                "there is nothing to merge. Integer tensors are copied, never cast to 'dtype:' "
                "and merged; dequantize a quantized model before merging it"
            )


def stream_merge(
    config: MergeConfig | str | Path | Mapping[str, Any],
    out_dir: str | Path,
    *,
    device: str | torch.device = "cpu",
    overwrite: bool = False,
    shard_size: int | str = DEFAULT_SHARD_SIZE,
    seed: int = 0,
    progress: bool | ProgressFn = True,
) -> MergeReport:
    """Merge the models of a mergekit-style config tensor by tensor into ``out_dir``.

    Args:
        config: a :class:`MergeConfig`, a YAML path or a parsed mapping.
        out_dir: output folder (must not exist unless ``overwrite``); it may not be, contain
            or lie inside an input model, a shard file or the config file.
        device: where the arithmetic runs ("cpu", "cuda", "cuda:1", "auto").
        overwrite: replace an existing ``out_dir`` that holds a previous merge output (only
            once the new one is complete); any other folder is refused.
        shard_size: most bytes of tensor data per output shard ("5B", "500M", int).
        seed: seeds the random methods (DARE); tensors draw in output order, so the result
            equals :func:`core.merge.merge` on the same models with the same seed.
        progress: show a tqdm bar (True), nothing (False), or call ``fn(info)`` per tensor with
            ``done``, ``total``, ``name``, ``bytes_read``, ``seconds``.

    Returns:
        A :class:`MergeReport`.

    Raises:
        StreamError: bad config or parameter, mismatched models, missing or malformed shards,
            shard paths or links that leave a model folder, NaN/Inf inputs, a merged tensor
            that overflows its dtype, integer weights, an ``out_dir`` that exists, overlaps an
            input or cannot be written.
        DiskFullError: the disk filled up (the partial output is removed).

    Warns:
        MixmergeWarning: side files of the source model that were not copied (links out of
            its folder, or not regular files); also in ``MergeReport.skipped_files``.
    """
    t0 = time.perf_counter()
    if not isinstance(config, MergeConfig):
        from .slices import is_passthrough, stream_passthrough

        raw = is_passthrough(config)
        if raw is not None:  # passthrough / slices: layer stacking, no arithmetic
            if not isinstance(overwrite, bool):
                raise TypeError(f"overwrite must be a bool, got {type(overwrite).__name__}")
            file = Path(config) if isinstance(config, str | Path) else None
            return stream_passthrough(
                raw,
                out_dir,
                root=None if file is None else file.parent,
                config_file=file,
                overwrite=overwrite,
                shard_size=shard_size,
            )
    cfg = config if isinstance(config, MergeConfig) else load_config(config)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    if not isinstance(overwrite, bool):
        raise TypeError(f"overwrite must be a bool, got {type(overwrite).__name__}")
    size = parse_size(shard_size)
    dev = _device(device)
    out = Path(out_dir).expanduser().resolve()
    config_file = Path(config) if isinstance(config, str | Path) else None
    check_out_dir(out, _protected(cfg, config_file))
    if (out.exists() or out.is_symlink()) and not overwrite:
        raise StreamError(
            f"output folder {out} exists; pass overwrite=True (--overwrite) to replace it"
        )
    inp = _open_inputs(cfg)
    shard_files = {i.path for infos in [*inp.infos, inp.base_infos or {}] for i in infos.values()}
    check_out_dir(out, [("a shard file of an input model", f) for f in sorted(shard_files)])
    if out.exists() and overwrite:
        check_replaceable(out)
    depth = layer_depths(inp.keys)
    ref = inp.infos[0]
    out_specs = [OutTensor(k, _out_dtype(cfg, ref[k]), ref[k].shape) for k in inp.keys]
    plans = plan_shards(out_specs, size)
    total_out = sum(p.size for p in plans)
    calls = {k: tensor_call(cfg, k, depth[k]) for k in inp.keys}
    reader = ShardReader()
    stats = {"read": 0}
    thresholds = None
    global_trim = any(m == "ties" and h.get("trim") == "global" for m, h, _ in calls.values())
    if global_trim:
        dens = [float(parameter(cfg, m, "density", "", 0.0, 1.0)) for m in inp.merged]
        with _fused_errors("ties", len(inp.merged)):
            thresholds = global_thresholds(inp, reader, dens, dev, stats)
        for m, h, _ in calls.values():
            if m == "ties":
                h["threshold"] = thresholds
    existing = next(d for d in out.parents if d.exists())
    free = shutil.disk_usage(existing).free
    if total_out > free:
        raise DiskFullError(
            errno.ENOSPC,
            f"not enough space for the merged model in {existing}: needs "
            f"{total_out / 1e9:.2f} GB, {free / 1e9:.2f} GB free",
        )
    skipped: list[str] = []
    partial = make_partial(out)
    try:
        writer = ShardWriter(partial, plans)
        # a CPU global trim has checked every input for NaN/Inf in its first pass
        checked = global_trim and dev.type == "cpu"
        _run(inp, calls, reader, writer, plans, dev, seed, progress, stats, checked)
        writer.close()
        skipped = _finish(cfg, inp, partial, plans, thresholds, seed)
        publish(partial, out, overwrite)
    except OSError as err:
        shutil.rmtree(partial, ignore_errors=True)
        if err.errno == errno.ENOSPC:
            raise DiskFullError(
                errno.ENOSPC,
                f"disk full while writing the merged model into {out.parent} (needs "
                f"{total_out / 1e9:.2f} GB); the partial output was removed",
            ) from None
        where = f" ({err.filename})" if err.filename else ""
        raise StreamError(
            f"cannot write the merged model into {out.parent}: {err.strerror or err}{where}; "
            "the partial output was removed"
        ) from None
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    finally:
        reader.close()
    if skipped:
        src = _side_source(cfg, inp)
        warnings.warn(
            f"not copied into the output (links out of {src}, or not regular files): "
            f"{', '.join(skipped)}",
            MixmergeWarning,
            stacklevel=2,
        )
    return MergeReport(
        out,
        len(inp.keys),
        stats["read"],
        sum(s.nbytes for s in out_specs),
        time.perf_counter() - t0,
        thresholds,
        [p.filename for p in plans],
        skipped,
    )


def _protected(cfg: MergeConfig, config_file: Path | None) -> list[tuple[str, Path]]:
    """The paths an output folder must keep clear of: the models and the config file."""
    out = [] if cfg.base is None else [(f"base_model {cfg.base.model!r}", cfg.base.path)]
    out += [(f"input model {m.model!r}", m.path) for m in cfg.models]
    if cfg.tokenizer_source is not None:
        out.append(("tokenizer_source", cfg.tokenizer_source))
    if config_file is not None:
        out.append(("the config file", config_file))
    return out


@contextlib.contextmanager
def _fused_errors(method: str, n_models: int) -> Iterator[None]:
    """Turn a failure inside the fused numba kernels into a message with the way out."""
    try:
        yield
    except Exception as err:
        if not type(err).__module__.startswith("numba"):
            raise
        lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
        detail = next((ln for ln in lines if "tuple" in ln), lines[0] if lines else "")
        raise StreamError(
            f"merging {n_models} models with {method} failed in the fused CPU kernels "
            f"({type(err).__name__}: {detail[:200]}); set MIXMERGE_FUSED=0 to run the torch "
            "kernels instead, or merge fewer models at once"
        ) from None


def _device(device: str | torch.device) -> torch.device:
    if isinstance(device, str) and device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(
            f"device must be 'cpu', 'cuda', 'cuda:N' or 'auto', got {device!r}"
        ) from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} was asked for but CUDA is not available here")
    return dev


def _out_dtype(cfg: MergeConfig, info: TensorInfo) -> torch.dtype:
    if not info.dtype.is_floating_point:
        return info.dtype
    return cfg.out_dtype or cfg.dtype or info.dtype


class _Buffers:
    """Two sets of reusable read buffers (one per input model and the base), used in turn by
    the prefetching reader: key i reads into set i % 2 while key i − 1 is merged from the other."""

    def __init__(self, inp: _Inputs, pin: bool):
        slots = [*inp.infos, *([inp.base_infos] if inp.base_infos is not None else [])]
        self.size = [max((x.nbytes for x in infos.values()), default=0) for infos in slots]
        self.pin = pin
        self.sets: list[list[Tensor | None]] = [[None] * len(slots), [None] * len(slots)]

    def get(self, phase: int, slot: int) -> Tensor:
        buf = self.sets[phase][slot]
        if buf is None:
            buf = torch.empty(self.size[slot], dtype=torch.uint8, pin_memory=self.pin)
            self.sets[phase][slot] = buf
        return buf


def _load_key(
    inp: _Inputs,
    reader: ShardReader,
    key: str,
    use_base: bool,
    pin: bool,
    bufs: _Buffers | None = None,
    phase: int = 0,
    check: bool = False,
) -> tuple[list[Tensor], Tensor | None]:
    """The tensors of ``key`` (and the base's); with ``check``, NaN/Inf is refused here, in
    the reader thread, where it overlaps the merge of the previous key."""

    def into(slot: int) -> Tensor | None:
        return None if bufs is None else bufs.get(phase, slot)

    def get(info: TensorInfo, slot: int) -> Tensor:
        # CPU: map the tensor's pages (no copy); GPU: read into pinned buffers for the transfer
        return reader.read(info, pin=True, into=into(slot)) if pin else reader.map(info)

    tensors = [get(infos[key], i) for i, infos in enumerate(inp.infos)]
    base = None
    if use_base and inp.base_infos is not None:
        base = get(inp.base_infos[key], len(inp.infos))
    if check:
        check_finite_inputs(key, tensors, base, inp.labels, inp.base_label)
    return tensors, base


def _owned(t: Tensor, inputs: Sequence[Tensor | None]) -> Tensor:
    """``t``, cloned if it shares memory with an input buffer that will be reused."""
    ptrs = {x.untyped_storage().data_ptr() for x in inputs if x is not None}
    return t.clone() if t.untyped_storage().data_ptr() in ptrs else t


def _prefetched(items: Sequence[str], load: Callable[[str, int], Any]) -> Iterator[tuple[str, Any]]:
    """Yield ``(item, load(item, i % 2))`` with the next item's load running in a thread
    (the phase ``i % 2`` picks the buffer set, so a load never overwrites the item in use)."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="stream-read") as pool:
        nxt: Future | None = pool.submit(load, items[0], 0) if items else None
        for i, item in enumerate(items):
            assert nxt is not None
            value = nxt.result()
            nxt = pool.submit(load, items[i + 1], (i + 1) % 2) if i + 1 < len(items) else None
            yield item, value
            del value


def _run(
    inp: _Inputs,
    calls: dict[str, tuple[str, dict[str, Any], bool]],
    reader: ShardReader,
    writer: ShardWriter,
    plans: list,
    dev: torch.device,
    seed: int,
    progress: bool | ProgressFn,
    stats: dict[str, int],
    checked: bool = False,
) -> None:
    """Merge and write every key (``checked``: the inputs were already checked finite)."""
    from tqdm import tqdm

    cfg = inp.cfg
    gen = torch.Generator(device=dev).manual_seed(seed)
    pin = dev.type == "cuda"
    # NaN/Inf: checked by the CPU reader thread, or on the GPU once the tensors are there
    check_on_load, check_on_device = not checked and not pin, not checked and pin
    bar = tqdm(total=len(inp.keys), unit="tensor", desc="merge", disable=progress is not True)
    last_of = {p.tensors[-1].name: p.filename for p in plans}
    t0 = time.perf_counter()
    pending: Future | None = None
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="stream-write") as wpool:
        bufs = _Buffers(inp, pin)
        loads = _prefetched(
            inp.keys,
            lambda k, ph: _load_key(inp, reader, k, calls[k][2], pin, bufs, ph, check_on_load),
        )
        for done, (key, (tensors, base)) in enumerate(loads, start=1):
            stats["read"] += sum(x.nbytes for x in tensors) + (0 if base is None else base.nbytes)
            method, hyper, _ = calls[key]
            out_dtype = _out_dtype(cfg, inp.infos[0][key])
            if not tensors[0].is_floating_point():
                merged = _copied_integer(inp, key, tensors, base)
            else:
                with _fused_errors(method, len(tensors)):
                    merged = _merge_one(
                        inp, key, method, hyper, tensors, base, dev, gen, check_on_device
                    )
                merged = merged.to(out_dtype)
                try:
                    check_merged_finite(key, merged, hint=OVERFLOW_HINT)
                except ValueError as err:
                    raise StreamError(str(err)) from None
                merged = merged.cpu() if merged.device.type != "cpu" else merged
                merged = _owned(merged, [*tensors, base])
            del tensors, base
            if pending is not None:
                pending.result()  # at most one write in flight
            pending = wpool.submit(_write, writer, key, merged, last_of.get(key))
            del merged
            secs = time.perf_counter() - t0
            if progress is True:
                bar.update(1)
                bar.set_postfix_str(f"{stats['read'] / max(secs, 1e-9) / 1e9:.2f} GB/s read")
            elif callable(progress):
                progress(
                    {
                        "done": done,
                        "total": len(inp.keys),
                        "name": key,
                        "bytes_read": stats["read"],
                        "seconds": secs,
                    }
                )
        if pending is not None:
            pending.result()
    bar.close()


def _write(writer: ShardWriter, key: str, t: Tensor, last_in_shard: str | None) -> None:
    writer.write(key, t)
    if last_in_shard is not None:
        writer.finish(last_in_shard)


def _copied_integer(inp: _Inputs, key: str, tensors: list[Tensor], base: Tensor | None) -> Tensor:
    """An integer tensor is copied from the base (else the first model), as core.merge does.
    One with more than one entry must then be equal in every model: otherwise the copy would
    silently drop the others' values (quantized weights, for instance).

    Raises:
        StreamError: naming the tensor and the two models that differ.
    """
    src, src_label = (base, inp.base_label) if base is not None else (tensors[0], inp.labels[0])
    if src.numel() > 1:
        for label, x in zip(inp.labels, tensors, strict=True):
            if not torch.equal(x.to(src.dtype), src):
                raise StreamError(
                    f"integer tensor {key!r} ({src.dtype}) differs between {src_label} and "
                    f"{label}: integer tensors are copied from one model, never merged, so "
                    "the merge would drop the other values. Dequantize integer (quantized) "
                    "weights before merging"
                )
    return src.clone()


def check_finite_inputs(
    key: str, tensors: Sequence[Tensor], base: Tensor | None, labels: Sequence[str], base_label: str
) -> None:
    """Refuse NaN/Inf in the inputs of one tensor, as :func:`core.merge.merge` does (one
    sum per tensor and one device sync for all models: :func:`core.merge._base.first_nonfinite`).

    Raises:
        StreamError: naming the model and the tensor.
    """
    i = first_nonfinite([*tensors, *([base] if base is not None else [])])
    if i is None:
        return
    bad = [*labels, base_label][i]
    raise StreamError(
        f"{bad}: tensor {key!r} has NaN/Inf values; expected finite tensors (the in-memory "
        "merge refuses them too)"
    )


def _merge_one(
    inp: _Inputs,
    key: str,
    method: str,
    hyper: dict[str, Any],
    tensors: list[Tensor],
    base: Tensor | None,
    dev: torch.device,
    gen: torch.Generator,
    check: bool,
) -> Tensor:
    work = inp.cfg.dtype
    tensors = [x.to(dev, non_blocking=True) for x in tensors]
    if base is not None:
        base = base.to(dev, non_blocking=True)
    if check:  # before any cast
        check_finite_inputs(key, tensors, base, inp.labels, inp.base_label)
    if work is not None:
        tensors = [x.to(work) for x in tensors]
        base = None if base is None else base.to(work)
    from ..merge._blocks import tensor_thresholds

    fn = _kernel(method)
    kw = dict(hyper)
    dens = kw.pop("_densities", None)
    if method == "ties" and kw.get("threshold") is None and kw.get("trim") == "tensor":
        # Per-tensor trim: the k-th largest |τ| of each model's tensor.
        dens = dens or [float(kw["density"])] * len(tensors)
        kw["threshold"] = tensor_thresholds(tensors, base, dens)
        kw.setdefault("density", dens[0])
    try:
        return fn(tensors, base, generator=gen, **_accepted(fn, kw))
    except (ValueError, TypeError) as err:  # the config checks should have caught it first
        if type(err).__module__.startswith("numba"):
            raise  # _fused_errors says what to do about it
        raise StreamError(f"{method} cannot merge tensor {key!r}: {err}") from None


# ---------------------------------------------------------------------------------------------
# global TIES trim: the model-wide |τ| threshold per model, exact, in two streaming passes


SAMPLE = 65536


def global_thresholds(
    inp: _Inputs,
    reader: ShardReader,
    densities: Sequence[float],
    dev: torch.device,
    stats: dict[str, int],
) -> list[float]:
    """Per model, the k-th largest |τ| over all its floating-point entries, k = ⌊density·n⌋.

    Exact, and equal to :func:`core.merge._blocks.magnitude_threshold` over the whole model:
    pass 1 takes a strided sample of |τ| (about 65 536 entries) whose order statistics bracket
    the answer with a margin of 4√j + 8 sample ranks; pass 2 counts the entries above the
    bracket and keeps those inside it (about 1-2 % of all entries); ``kthvalue`` on those gives
    the exact value. If the bracket misses (very unlikely), pass 2 is repeated for that model
    with the bracket opened on the missing side, so the answer stays exact.
    """
    keys = [k for k in inp.keys if inp.infos[0][k].dtype.is_floating_point]
    n = sum(inp.infos[0][k].numel for k in keys)
    m_count = len(inp.infos)
    if n == 0:
        return [0.0] * m_count
    from ..merge._blocks import keep_count

    ks = [keep_count(n, d) if d < 1.0 else n for d in densities]
    stride = max(1, n // SAMPLE)
    work = inp.cfg.dtype

    def cast(t: Tensor | None) -> Tensor | None:
        if t is None:
            return None
        dt = work or t.dtype
        dt = torch.float32 if dt in (torch.float16, torch.bfloat16) else dt
        return t.to(dev).reshape(-1).to(dt)

    def count_read(tensors: list[Tensor], base: Tensor | None) -> None:
        stats["read"] += sum(x.nbytes for x in tensors) + (0 if base is None else base.nbytes)

    pin = dev.type == "cuda"

    bufs = _Buffers(inp, pin)

    def load(k: str, phase: int) -> tuple[list[Tensor], Tensor | None]:
        return _load_key(inp, reader, k, True, pin, bufs, phase)

    def load_checked(k: str, phase: int) -> tuple[list[Tensor], Tensor | None]:
        # CPU: pass 1 checks every model and the base for NaN/Inf, which would keep the exact
        # search below from ever closing its bracket (a GPU run checks in pass 2, on device)
        return _load_key(inp, reader, k, True, pin, bufs, phase, check=not pin)

    samples: list[list[Tensor]] = [[] for _ in range(m_count)]
    for _key, (tensors, base) in _prefetched(keys, load_checked):
        count_read(tensors, base)
        b = cast(None if base is None else base.reshape(-1)[::stride])
        for i, x in enumerate(tensors):
            d = cast(x.reshape(-1)[::stride])
            assert d is not None
            samples[i].append((d if b is None else d - b).abs())
    brackets, width = [], 0.0
    for i in range(m_count):
        s = torch.sort(torch.cat(samples[i]), descending=True).values  # (m,)
        m = s.numel()
        j = ks[i] * m / n
        margin = 4.0 * math.sqrt(max(j, 1.0)) + 8.0
        hi_i, lo_i = math.floor(j - margin), math.ceil(j + margin)
        brackets.append(
            (0.0 if lo_i >= m else float(s[lo_i]), math.inf if hi_i < 0 else float(s[hi_i]))
        )
        width = max(width, (min(lo_i, m) - max(hi_i, 0)) / m)
    del samples
    result: list[float | None] = [None if ks[i] < n else 0.0 for i in range(m_count)]
    todo = [i for i in range(m_count) if result[i] is None]
    from ..kernels import merge as _fused

    first_pass = True
    while todo:
        above = dict.fromkeys(todo, 0)
        inside: dict[int, list[Tensor]] = {i: [] for i in todo}
        for key, (tensors, base) in _prefetched(keys, load):
            count_read(tensors, base)
            b = cast(base)
            xs = [x for i in todo if (x := cast(tensors[i])) is not None]
            if first_pass and pin:
                labels = [inp.labels[i] for i in todo]
                check_finite_inputs(key, xs, b, labels, inp.base_label)
            if _fused.usable(xs, b):  # one fused pass over the base and the models
                los, his = zip(*(brackets[i] for i in todo), strict=True)
                ab, hits = _fused.bracket_many(xs, b, los, his, expect=width)
                for i, n_above, h in zip(todo, ab, hits, strict=True):
                    above[i] += n_above
                    inside[i].append(torch.from_numpy(h[h >= 0]))  # without the -1 pads
                continue
            for i, x in zip(todo, xs, strict=True):
                lo, hi = brackets[i]
                a = (x if b is None else x - b).abs_()
                above[i] += int((a > hi).sum())
                inside[i].append(a[(a <= hi) & (a >= lo)].cpu())
        nxt = []
        for i in todo:
            cand = torch.cat(inside[i])
            need = ks[i] - above[i]
            if 1 <= need <= cand.numel():
                result[i] = float(cand.kthvalue(cand.numel() - need + 1).values)
            else:  # open the bracket on the side that missed and go again
                lo, hi = brackets[i]
                brackets[i] = (lo, math.inf) if need < 1 else (0.0, hi)
                nxt.append(i)
        todo = nxt
        first_pass = False
        width = 0.5  # a reopened bracket holds a large share of the entries
    return [float(r) for r in result if r is not None]


# ---------------------------------------------------------------------------------------------
# finishing: non-weight files, recipe, index last, then the rename


def _finish(
    cfg: MergeConfig,
    inp: _Inputs,
    folder: Path,
    plans: list,
    thresholds: list[float] | None,
    seed: int,
) -> list[str]:
    skipped = copy_side_files(_side_source(cfg, inp), folder)
    conf = folder / "config.json"
    out_dt = cfg.out_dtype or cfg.dtype
    if conf.exists() and out_dt is not None:
        try:
            data = json.loads(conf.read_text())
            if isinstance(data, dict) and "torch_dtype" in data:
                data["torch_dtype"] = str(out_dt).removeprefix("torch.")
                conf.write_text(json.dumps(data, indent=2))
        except ValueError:  # not JSON, or not UTF-8: copied as it is
            pass
    (folder / "mergekit_config.yml").write_text(yaml.safe_dump(cfg.raw, sort_keys=False))
    recipe = {
        "engine": "mixmerge-workbench core.stream",
        "config": cfg.raw,
        "method": cfg.method,
        "inputs": [str(m.path) for m in inp.merged],
        "base_model": None if cfg.base is None else str(cfg.base.path),
        "seed": seed,
        "global_thresholds": thresholds,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    (folder / "merge_recipe.json").write_text(json.dumps(recipe, indent=2, default=str))
    weight_map = {t.name: p.filename for p in plans for t in p.tensors}
    total = sum(t.nbytes for p in plans for t in p.tensors)
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    tmp = folder / (INDEX_NAME + ".tmp")
    tmp.write_text(json.dumps(index, indent=2))
    os.replace(tmp, folder / INDEX_NAME)  # the index is the last file written
    return skipped


def _side_source(cfg: MergeConfig, inp: _Inputs) -> Path:
    """The model whose non-weight files are copied: tokenizer_source, else base, else first."""
    return cfg.tokenizer_source or (cfg.base.path if cfg.base is not None else inp.merged[0].path)
