"""Small sharded safetensors checkpoints built locally for the streaming-merge tests."""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from core.params import StateDict


def read_out(folder: Path) -> dict[str, torch.Tensor]:
    """Load a merged folder through the reference safetensors reader, via its index."""
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    out = {}
    for name, shard in index["weight_map"].items():
        with safe_open(str(folder / shard), "pt") as f:
            out[name] = f.get_tensor(name)
    return out


def make_state(
    seed: int,
    *,
    n_layers: int = 3,
    width: int = 24,
    scale: float = 1.0,
    base: StateDict | None = None,
    dtype: torch.dtype = torch.float32,
) -> StateDict:
    """A small LLM-shaped state dict; with ``base``, base + scale·noise (a fine-tune)."""
    g = torch.Generator().manual_seed(seed)
    shapes: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (50, width)}
    for i in range(n_layers):
        shapes[f"model.layers.{i}.self_attn.q_proj.weight"] = (width, width)
        shapes[f"model.layers.{i}.mlp.up_proj.weight"] = (2 * width, width)
        shapes[f"model.layers.{i}.input_layernorm.weight"] = (width,)
    shapes["lm_head.weight"] = (50, width)
    sd = {}
    for k, shp in shapes.items():
        noise = torch.randn(shp, generator=g)
        sd[k] = (noise if base is None else base[k].float() + scale * noise).to(dtype)
    sd["model.step"] = torch.tensor([7], dtype=torch.int64)
    return sd


def llama_shapes(hidden: int, inter: int, layers: int, vocab: int) -> dict[str, tuple[int, ...]]:
    """Every tensor name and shape of a Llama model (mergekit's llama architecture)."""
    shapes: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (vocab, hidden)}
    for i in range(layers):
        p = f"model.layers.{i}."
        for n in ("q", "k", "v", "o"):
            shapes[p + f"self_attn.{n}_proj.weight"] = (hidden, hidden)
        shapes[p + "mlp.gate_proj.weight"] = (inter, hidden)
        shapes[p + "mlp.up_proj.weight"] = (inter, hidden)
        shapes[p + "mlp.down_proj.weight"] = (hidden, inter)
        shapes[p + "input_layernorm.weight"] = (hidden,)
        shapes[p + "post_attention_layernorm.weight"] = (hidden,)
    shapes["model.norm.weight"] = (hidden,)
    shapes["lm_head.weight"] = (vocab, hidden)
    return shapes


def write_sharded(sd: StateDict, folder: Path, n_shards: int = 3, extra_files: bool = True) -> Path:
    """Write ``sd`` as a Hugging Face folder: n shards + model.safetensors.index.json."""
    folder.mkdir(parents=True, exist_ok=True)
    keys = list(sd)
    per = -(-len(keys) // n_shards)
    weight_map = {}
    for i in range(n_shards):
        part = keys[i * per : (i + 1) * per]
        name = f"model-{i + 1:05d}-of-{n_shards:05d}.safetensors"
        save_file({k: sd[k].contiguous() for k in part}, str(folder / name))
        weight_map.update(dict.fromkeys(part, name))
    total = sum(v.numel() * v.element_size() for v in sd.values())
    (folder / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map})
    )
    if extra_files:
        (folder / "config.json").write_text(
            json.dumps({"model_type": "toy", "torch_dtype": "float32"})
        )
        (folder / "tokenizer.json").write_text("{}")
    return folder


def make_family(
    root: Path, n_models: int = 3, **kw
) -> tuple[StateDict, list[StateDict], Path, list[Path]]:
    """A base and ``n_models`` fine-tunes written as sharded folders under ``root``."""
    base = make_state(0, **kw)
    fts = [make_state(10 + i, base=base, scale=0.05 * (i + 1), **kw) for i in range(n_models)]
    bpath = write_sharded(base, root / "base")
    paths = [write_sharded(sd, root / f"ft{i}") for i, sd in enumerate(fts)]
    return base, fts, bpath, paths


def merge_config(method: str, base: Path | None, models: list[Path], **params: object) -> dict:
    """A mergekit-style config mapping: ``merge_method``, ``models``, ``base_model`` and the
    global ``parameters``."""
    cfg: dict = {"merge_method": method, "models": [{"model": str(p)} for p in models]}
    if base is not None:
        cfg["base_model"] = str(base)
    if params:
        cfg["parameters"] = dict(params)
    return cfg


_OPENED: list[str] = []
_WATCH = {"on": False}


def _audit(event: str, args: tuple) -> None:
    if _WATCH["on"] and event == "open" and isinstance(args[0], str | bytes | os.PathLike):
        _OPENED.append(os.fsdecode(args[0]))


sys.addaudithook(_audit)  # cannot be removed: it records only inside files_opened()


@contextlib.contextmanager
def files_opened() -> Iterator[list[str]]:
    """The paths this process opens inside the block (Python's audit event ``open``)."""
    _OPENED.clear()
    _WATCH["on"] = True
    try:
        yield _OPENED
    finally:
        _WATCH["on"] = False


def opened_outside(opened: list[str], folder: Path, near: Path) -> list[str]:
    """The opened paths under ``near`` (or /etc) that are not inside ``folder``."""
    res = [Path(p).resolve() for p in opened]
    close = [p for p in res if p.is_relative_to(near.resolve()) or p.is_relative_to("/etc")]
    return [str(p) for p in close if not p.is_relative_to(folder.resolve())]
