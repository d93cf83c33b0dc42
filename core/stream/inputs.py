"""The inputs of a streaming merge: the models' tensors from their safetensors headers, the
checks that they match, and the prefetching reader that maps (CPU) or reads into pinned
buffers (GPU) one key of every model at a time."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..io import CheckpointError, hf_folder_tensors, read_weight_map
from ..merge._base import first_nonfinite
from .config import MergeConfig, ModelEntry
from .family import BASE_AS_INPUT
from .st_io import ShardReader, StreamError, TensorInfo, read_header


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


@dataclass
class Inputs:
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


def open_inputs(cfg: MergeConfig) -> Inputs:
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
    return Inputs(cfg, merged, infos, base_infos, keys)


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


class Buffers:
    """Two sets of reusable read buffers (one per input model and the base), used in turn by
    the prefetching reader: key i reads into set i % 2 while key i − 1 is merged from the other."""

    def __init__(self, inp: Inputs, pin: bool):
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


def load_key(
    inp: Inputs,
    reader: ShardReader,
    key: str,
    use_base: bool,
    pin: bool,
    bufs: Buffers | None = None,
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


def prefetched(items: Sequence[str], load: Callable[[str, int], Any]) -> Iterator[tuple[str, Any]]:
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
