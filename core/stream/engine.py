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

Layout: :mod:`core.stream.inputs` (the models' tensors, their checks, the prefetching reader),
:mod:`core.stream.mergekit_names` (which kernel and arguments a tensor of a config gets),
:mod:`core.stream.thresholds` (the global TIES trim), this module (the run and the output).

Values: NaN/Inf in an input tensor is refused as :func:`core.merge.merge` refuses it (checked per
tensor as it is merged, so memory stays bounded), and so is a merged tensor that overflows its
stored dtype (float16 sums beyond ±65504). Integer tensors are copied, never cast and merged
(:func:`check_kinds`).
"""

from __future__ import annotations

import contextlib
import errno
import json
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
from ..merge._base import check_merged_finite
from .config import MergeConfig, layer_depths, load_config, parameter
from .inputs import (
    Buffers,
    Inputs,
    check_finite_inputs,
    check_inputs,
    check_kinds,
    load_key,
    model_tensors,
    open_inputs,
    prefetched,
)
from .mergekit_names import accepted, kernel, tensor_call
from .output import (
    INDEX_NAME,
    assembling,
    check_out_dir,
    check_output,
    copy_side_files,
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
)
from .thresholds import global_thresholds, ram_global_ratios

# names importable from here as before the split into inputs / mergekit_names / thresholds
__all__ = [
    "DEFAULT_SHARD_SIZE",
    "OVERFLOW_HINT",
    "MergeReport",
    "check_finite_inputs",
    "check_inputs",
    "check_kinds",
    "global_thresholds",
    "model_tensors",
    "parse_size",
    "stream_merge",
    "tensor_call",
]

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
        if raw is not None:  # passthrough / slices: layer stacking, per-slice merges
            if not isinstance(overwrite, bool):
                raise TypeError(f"overwrite must be a bool, got {type(overwrite).__name__}")
            file = Path(config) if isinstance(config, str | Path) else None
            where: dict[str, Any] = {
                "root": None if file is None else file.parent,
                "config_file": file,
                "overwrite": overwrite,
                "shard_size": shard_size,
            }
            if raw.get("merge_method") == "passthrough":
                return stream_passthrough(raw, out_dir, **where)
            from .slice_merge import stream_slice_merge

            if isinstance(seed, bool) or not isinstance(seed, int):
                raise TypeError(f"seed must be an int, got {type(seed).__name__}")
            return stream_slice_merge(
                raw, out_dir, **where, device=_device(device), seed=seed, progress=progress
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
    check_out_dir(out, _protected(cfg, config_file))  # before a model is opened
    inp = open_inputs(cfg)
    shard_files = {i.path for infos in [*inp.infos, inp.base_infos or {}] for i in infos.values()}
    check_output(out, _protected(cfg, config_file), shard_files, overwrite)
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
    ram_global = any(m == "ram" and h.get("rescale") == "global" for m, h, _ in calls.values())
    if ram_global:  # RAM+ with the paper's whole-model overlap ratio: a first pass counts it
        eps = {float(h["epsilon"]) for m, h, _ in calls.values() if m == "ram"}
        if len(eps) != 1:
            raise StreamError(
                f"ramplus_tl with overlap: global counts one overlap ratio over the whole "
                f"model, so epsilon must be the same for every tensor, got {sorted(eps)}"
            )
        rho = ram_global_ratios(inp, reader, eps.pop(), dev, stats)
        for m, h, _ in calls.values():
            if m == "ram":
                h["rho"] = rho
    check_space(out, total_out)
    try:
        with assembling(out, f" (needs {total_out / 1e9:.2f} GB)") as partial:
            writer = ShardWriter(partial, plans)
            # a CPU global pass has checked every input for NaN/Inf as it read them
            checked = (global_trim or ram_global) and dev.type == "cpu"
            _run(inp, calls, reader, writer, plans, dev, seed, progress, stats, checked)
            writer.close()
            skipped = _finish(cfg, inp, partial, plans, thresholds, seed)
            publish(partial, out, overwrite)
    finally:
        reader.close()
    warn_skipped(skipped, _side_source(cfg, inp), stacklevel=3)
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


def warn_skipped(skipped: Sequence[str], src: Path, stacklevel: int) -> None:
    """Warn about the side files of ``src`` that were not copied (none: no warning)."""
    if skipped:
        warnings.warn(
            f"not copied into the output (links out of {src}, or not regular files): "
            f"{', '.join(skipped)}",
            MixmergeWarning,
            stacklevel=stacklevel + 1,
        )


def check_space(out: Path, nbytes: int) -> None:
    """Refuse a merge whose ``nbytes`` of output cannot fit on the disk of ``out``.

    Raises:
        DiskFullError: naming the folder, the bytes needed and the bytes free.
    """
    existing = next(d for d in out.parents if d.exists())
    free = shutil.disk_usage(existing).free
    if nbytes > free:
        raise DiskFullError(
            errno.ENOSPC,
            f"not enough space for the merged model in {existing}: needs "
            f"{nbytes / 1e9:.2f} GB, {free / 1e9:.2f} GB free",
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


def _owned(t: Tensor, inputs: Sequence[Tensor | None]) -> Tensor:
    """``t``, cloned if it shares memory with an input buffer that will be reused."""
    ptrs = {x.untyped_storage().data_ptr() for x in inputs if x is not None}
    return t.clone() if t.untyped_storage().data_ptr() in ptrs else t


def _run(
    inp: Inputs,
    calls: dict[str, tuple[str, dict[str, Any], bool]],
    reader: ShardReader,
    writer: ShardWriter,
    plans: list,
    dev: torch.device,
    seed: int,
    progress: bool | ProgressFn,
    stats: dict[str, int],
    checked: bool = False,
    gen: torch.Generator | None = None,
    done0: int = 0,
    total: int | None = None,
) -> None:
    """Merge and write every key (``checked``: the inputs were already checked finite).

    A merge in several parts (the slices of a slice merge) passes one ``gen`` to every part,
    so the random methods draw in output order, and ``done0``/``total`` for the progress."""
    from tqdm import tqdm

    cfg = inp.cfg
    gen = gen if gen is not None else torch.Generator(device=dev).manual_seed(seed)
    total = len(inp.keys) if total is None else total
    pin = dev.type == "cuda"
    # NaN/Inf: checked by the CPU reader thread, or on the GPU once the tensors are there
    check_on_load, check_on_device = not checked and not pin, not checked and pin
    bar = tqdm(
        total=total, initial=done0, unit="tensor", desc="merge", disable=progress is not True
    )
    last_of = {p.tensors[-1].name: p.filename for p in plans}
    t0 = time.perf_counter()
    pending: Future | None = None
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="stream-write") as wpool:
        bufs = Buffers(inp, pin)
        loads = prefetched(
            inp.keys,
            lambda k, ph: load_key(inp, reader, k, calls[k][2], pin, bufs, ph, check_on_load),
        )
        for done, (key, (tensors, base)) in enumerate(loads, start=done0 + 1):
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
                        "total": total,
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


def _copied_integer(inp: Inputs, key: str, tensors: list[Tensor], base: Tensor | None) -> Tensor:
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


def _merge_one(
    inp: Inputs,
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

    fn = kernel(method)
    kw = dict(hyper)
    dens = kw.pop("_densities", None)
    if method == "ties" and kw.get("threshold") is None and kw.get("trim") == "tensor":
        # Per-tensor trim: the k-th largest |τ| of each model's tensor.
        dens = dens or [float(kw["density"])] * len(tensors)
        kw["threshold"] = tensor_thresholds(tensors, base, dens)
        kw.setdefault("density", dens[0])
    try:
        return fn(tensors, base, generator=gen, **accepted(fn, kw))
    except (ValueError, TypeError) as err:  # the config checks should have caught it first
        if type(err).__module__.startswith("numba"):
            raise  # _fused_errors says what to do about it
        raise StreamError(f"{method} cannot merge tensor {key!r}: {err}") from None


# ---------------------------------------------------------------------------------------------
# finishing: non-weight files, recipe, index last, then the rename


def _finish(
    cfg: MergeConfig,
    inp: Inputs,
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


def _side_source(cfg: MergeConfig, inp: Inputs) -> Path:
    """The model whose non-weight files are copied: tokenizer_source, else base, else first."""
    return cfg.tokenizer_source or (cfg.base.path if cfg.base is not None else inp.merged[0].path)
