"""PEFT LoRA folders <-> :class:`LoraAdapter` <-> task vectors of the base model.

PEFT (``peft.tuners.lora``) stores, for every adapted module at path ``p``, the factors
``base_model.model.p.lora_A.weight`` (r × in) and ``…p.lora_B.weight`` (out × r) — for
embeddings ``…p.lora_embedding_A`` (r × num) and ``…p.lora_embedding_B`` (dim × r), for conv
layers A (r, in, kh, kw) and B (out, r, 1, 1) — and the scaling in ``adapter_config.json``:
s = lora_alpha / r, or lora_alpha / √r with ``use_rslora`` (``alpha_pattern`` / ``rank_pattern``
override per module by PEFT's regex rule ``(.*\\.)?(pattern)$``). The module's update is

    linear:    ΔW = s · B A            (out × in), transposed when ``fan_in_fan_out`` (GPT-2 Conv1D)
    embedding: ΔW = s · (B A)ᵀ         (num × dim)
    conv:      ΔW = s · reshape(B₍out×r₎ A₍r×in·kh·kw₎)   (out, in, kh, kw)

which is PEFT's ``get_delta_weight``. A ``lora_B.bias`` (``lora_bias=True``) times s is the
update of ``p.bias`` (PEFT's ``merge``). DoRA, other PEFT methods and ``modules_to_save`` entries are refused with a
message: their update is not B·A. Files are read with safetensors (or ``torch.load`` with
``weights_only=True`` for ``adapter_model.bin``).
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .._checks import check_int, check_range
from ..params import StateDict

PREFIX = "base_model.model."
KINDS = ("linear", "embedding", "conv")
CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"


@dataclass(frozen=True)
class LoraLayer:
    """One adapted module.

    Attributes:
        kind: "linear", "embedding" or "conv".
        a: the A factor as PEFT stores it ((r, in), (r, num) or (r, in, kh, kw)).
        b: the B factor ((out, r), (dim, r) or (out, r, 1, 1)).
        scaling: s, multiplying B·A.
        fan_in_fan_out: the base weight is stored (in, out) (linear only).
        bias: the update of the module's bias (``lora_bias``), or None.
    """

    kind: str
    a: Tensor
    b: Tensor
    scaling: float
    fan_in_fan_out: bool = False
    bias: Tensor | None = None

    @property
    def rank(self) -> int:
        return int(self.a.shape[0])

    def delta_weight(self) -> Tensor:
        """ΔW of this module in the base weight's orientation (float32 at least)."""
        dtype = torch.promote_types(self.a.dtype, torch.float32)
        a, b = self.a.to(dtype), self.b.to(dtype)
        if self.kind == "conv":
            out = (b.flatten(1) @ a.flatten(1)).reshape(b.shape[0], *a.shape[1:])
        else:
            out = b @ a  # (out, in) or (dim, num)
            if self.kind == "embedding" or self.fan_in_fan_out:
                out = out.T
        return out * self.scaling


@dataclass(frozen=True)
class LoraAdapter:
    """A LoRA adapter: its layers keyed by the module path in the base model.

    Attributes:
        layers: module path (e.g. ``"trunk.fc0"``) -> :class:`LoraLayer`, in file order.
        config: the adapter_config.json fields (for provenance and export).
    """

    layers: dict[str, LoraLayer]
    config: dict[str, Any] = field(default_factory=dict)

    def delta(self) -> StateDict:
        """The task vector: ``"<path>.weight"`` -> ΔW (and ``"<path>.bias"`` with lora_bias)."""
        out: StateDict = {}
        for path, layer in self.layers.items():
            out[f"{path}.weight"] = layer.delta_weight()
            if layer.bias is not None:
                out[f"{path}.bias"] = layer.bias.to(torch.float32) * layer.scaling
        return out

    @property
    def kinds(self) -> dict[str, str]:
        return {p: layer.kind for p, layer in self.layers.items()}


def load_adapter(folder: str | Path, *, base: Mapping[str, Tensor] | None = None) -> LoraAdapter:
    """Read a PEFT LoRA adapter folder.

    Args:
        folder: a folder with ``adapter_config.json`` and ``adapter_model.safetensors`` (or
            ``adapter_model.bin``, loaded with ``weights_only=True``).
        base: the base model's state dict; when given, every adapted module must have a
            ``<path>.weight`` of the matching shape in it (PEFT's ``base_model.model.`` prefix
            is removed first, then leading path components until the key is found).

    Raises:
        ValueError: a missing or malformed file, an unsupported adapter (DoRA, not LoRA,
            modules_to_save), factors of inconsistent shapes, or modules absent from ``base``.
    """
    root = Path(folder)
    if not root.is_dir():
        raise ValueError(f"folder must be an adapter folder, got {str(root)!r} (not a folder)")
    config = _read_config(root / CONFIG_NAME)
    tensors = _read_weights(root)
    groups: dict[str, dict[str, Tensor]] = {}
    for key, value in tensors.items():
        name = key[len(PREFIX) :] if key.startswith(PREFIX) else key
        m = re.fullmatch(
            r"(.+)\.(lora_A\.weight|lora_B\.weight|lora_B\.bias|lora_embedding_A|lora_embedding_B)",
            name,
        )
        if m is None:
            raise ValueError(
                f"adapter tensor {key!r} is not a LoRA factor (lora_A/lora_B/lora_embedding_A/B); "
                "DoRA magnitudes, modules_to_save and other PEFT methods are not supported"
            )
        groups.setdefault(m.group(1), {})[m.group(2)] = value
    if not groups:
        raise ValueError(f"adapter {str(root)!r} holds no LoRA factors")
    fan = bool(config.get("fan_in_fan_out", False))
    layers: dict[str, LoraLayer] = {}
    for path, parts in groups.items():
        layer = _layer(path, parts, config, fan)
        target = path if base is None else _match_base(path, layer, base)
        if target in layers:
            raise ValueError(f"two adapter modules map onto the base module {target!r}")
        layers[target] = layer
    return LoraAdapter(layers, dict(config))


def _read_config(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ValueError(f"adapter folder has no {CONFIG_NAME}: {str(path)!r}")
    try:
        cfg = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{str(path)!r} is not valid JSON: {err}") from None
    if not isinstance(cfg, dict):
        raise ValueError(f"{str(path)!r} must hold a JSON object, got {type(cfg).__name__}")
    peft_type = str(cfg.get("peft_type", "LORA")).upper()
    if peft_type != "LORA":
        raise ValueError(f"peft_type must be 'LORA', got {cfg.get('peft_type')!r}")
    if cfg.get("use_dora"):
        raise ValueError("DoRA adapters (use_dora=true) are not B·A updates; not supported")
    for name in ("r", "lora_alpha"):
        v = cfg.get(name)
        if isinstance(v, bool) or not isinstance(v, int | float) or not v > 0:
            raise ValueError(f"{CONFIG_NAME}: {name} must be a positive number, got {v!r}")
    for name in ("rank_pattern", "alpha_pattern"):
        if not isinstance(cfg.get(name) or {}, dict):
            raise ValueError(f"{CONFIG_NAME}: {name} must be a mapping, got {cfg.get(name)!r}")
    return cfg


def _read_weights(root: Path) -> dict[str, Tensor]:
    st, binary = root / WEIGHTS_NAME, root / "adapter_model.bin"
    if st.is_file():
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return dict(load_file(str(st)))
        except (SafetensorError, OSError, ValueError) as err:
            raise ValueError(f"{str(st)!r} is not a readable safetensors file: {err}") from None
    if binary.is_file():
        try:
            obj = torch.load(binary, map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001  (torch.load raises many types on bad bytes)
            raise ValueError(f"{str(binary)!r} is not a readable weights file: {err}") from None
        if not isinstance(obj, dict) or not all(isinstance(v, Tensor) for v in obj.values()):
            raise ValueError(f"{str(binary)!r} must hold a dict of tensors")
        return dict(obj)
    raise ValueError(f"adapter folder {str(root)!r} has no {WEIGHTS_NAME} (or adapter_model.bin)")


def _pattern(patterns: Mapping[str, Any], path: str) -> Any:
    for pat, value in patterns.items():
        if re.match(rf"(.*\.)?({pat})$", path):
            return value
    return None


def _layer(path: str, parts: dict[str, Tensor], cfg: Mapping[str, Any], fan: bool) -> LoraLayer:
    if "lora_embedding_A" in parts or "lora_embedding_B" in parts:
        kind, ka, kb = "embedding", "lora_embedding_A", "lora_embedding_B"
    else:
        kind, ka, kb = "linear", "lora_A.weight", "lora_B.weight"
    if ka not in parts or kb not in parts:
        raise ValueError(f"adapter module {path!r} needs both {ka} and {kb}")
    a, b = parts[ka], parts[kb]
    if not (a.is_floating_point() and b.is_floating_point()):
        raise ValueError(f"adapter module {path!r}: factors must be floating point")
    if a.ndim == 4 and b.ndim == 4 and kind == "linear":
        kind = "conv"
        ok = b.shape[1] == a.shape[0] and b.shape[2:] == (1, 1)
    else:
        ok = a.ndim == 2 and b.ndim == 2 and b.shape[1] == a.shape[0]
    if not ok:
        raise ValueError(
            f"adapter module {path!r}: factor shapes A {tuple(a.shape)} and B {tuple(b.shape)} "
            "do not form B·A"
        )
    r = int(a.shape[0])
    alpha = _pattern(cfg.get("alpha_pattern") or {}, path)
    alpha = float(cfg["lora_alpha"] if alpha is None else alpha)
    scaling = alpha / math.sqrt(r) if cfg.get("use_rslora") else alpha / r
    bias = parts.get("lora_B.bias")
    return LoraLayer(kind, a, b, scaling, fan and kind == "linear", bias)


def _match_base(path: str, layer: LoraLayer, base: Mapping[str, Tensor]) -> str:
    parts = path.split(".")
    for i in range(len(parts)):
        cand = ".".join(parts[i:])
        w = base.get(f"{cand}.weight")
        if w is None:
            continue
        want = _delta_shape(layer)
        if tuple(w.shape) != want:
            raise ValueError(
                f"adapter module {path!r}: ΔW has shape {want}, but base {cand}.weight has "
                f"shape {tuple(w.shape)} (fan_in_fan_out set correctly?)"
            )
        return cand
    raise ValueError(f"adapter module {path!r} has no '<path>.weight' in the base state dict")


def _delta_shape(layer: LoraLayer) -> tuple[int, ...]:
    a, b = layer.a.shape, layer.b.shape
    if layer.kind == "conv":
        return (b[0], *a[1:])
    if layer.kind == "embedding" or layer.fan_in_fan_out:
        return (a[1], b[0])
    return (b[0], a[1])


# --------------------------------------------------------------------------------- export
def adapter_from_delta(
    delta: Mapping[str, Tensor],
    kinds: Mapping[str, str],
    *,
    rank: int,
    fan_in_fan_out: bool = False,
) -> LoraAdapter:
    """Factorise a task vector into a LoRA adapter of rank ``rank`` (truncated SVD per module).

    Args:
        delta: ``"<path>.weight"`` -> ΔW in the base orientation (``"<path>.bias"`` entries
            become ``lora_B.bias``); e.g. :meth:`LoraAdapter.delta` or a merge of several.
        kinds: module path -> "linear", "embedding" or "conv".
        rank: r of every module (capped at the module's full rank); the exported scaling is
            1 (lora_alpha = r, no rslora), B = U_r Σ_r and A = V_rᵀ as in PEFT's SVD merge.
        fan_in_fan_out: linear base weights are stored (in, out).

    Returns:
        A :class:`LoraAdapter` whose ΔW is the best rank-``rank`` approximation of ``delta``.
    """
    rank = check_int("rank", rank, 1)
    layers: dict[str, LoraLayer] = {}
    for path, kind in kinds.items():
        if kind not in KINDS:
            raise ValueError(f"kinds[{path!r}] must be one of {KINDS}, got {kind!r}")
        w = delta.get(f"{path}.weight")
        if w is None:
            raise ValueError(f"delta has no {path}.weight for module {path!r}")
        w = w.detach().to(torch.promote_types(w.dtype, torch.float32))
        if kind == "conv":
            mat = w.flatten(1)  # (out, in·kh·kw)
        elif kind == "embedding" or fan_in_fan_out:
            mat = w.T  # (dim, num) or (out, in)
        else:
            mat = w
        u, s, vh = torch.linalg.svd(mat, full_matrices=False)
        r = min(rank, s.numel())
        b, a = u[:, :r] * s[:r], vh[:r]  # (out, r), (r, in)
        if kind == "conv":
            a, b = a.reshape(r, *w.shape[1:]), b[:, :, None, None]
        bias = delta.get(f"{path}.bias")
        layers[path] = LoraLayer(
            kind,
            a.contiguous(),
            b.contiguous(),
            1.0,
            fan_in_fan_out and kind == "linear",
            None if bias is None else bias.detach().clone(),
        )
    return LoraAdapter(layers, {"r": rank, "lora_alpha": rank, "fan_in_fan_out": fan_in_fan_out})


def save_adapter(
    adapter: LoraAdapter, folder: str | Path, *, base_model_name_or_path: str | None = None
) -> Path:
    """Write ``adapter`` as a PEFT LoRA folder (config + safetensors), atomically.

    Every module gets lora_alpha = scaling · r (so PEFT's scaling is the adapter's), written as
    ``r`` / ``lora_alpha`` with per-module ``rank_pattern`` / ``alpha_pattern`` entries where a
    module differs. An existing folder is refused unless it is an adapter folder (holds
    adapter_config.json) — then it is replaced.

    Returns:
        The folder.
    """
    from safetensors.torch import save_file

    if not isinstance(adapter, LoraAdapter) or not adapter.layers:
        raise ValueError("adapter must be a LoraAdapter with at least one layer")
    out = Path(folder)
    if out.exists() and not (out.is_dir() and (out / CONFIG_NAME).is_file()):
        raise ValueError(f"folder {str(out)!r} exists and is not an adapter folder; not replaced")
    paths = list(adapter.layers)
    ranks = {p: adapter.layers[p].rank for p in paths}
    alphas = {p: adapter.layers[p].scaling * ranks[p] for p in paths}
    r0 = _most_common(list(ranks.values()))
    a0 = _most_common(list(alphas.values()))
    fans = {layer.fan_in_fan_out for layer in adapter.layers.values() if layer.kind == "linear"}
    if len(fans) > 1:
        raise ValueError(
            "adapter mixes fan_in_fan_out linear layers with plain ones; not exportable"
        )
    config = {
        "peft_type": "LORA",
        "task_type": None,
        "base_model_name_or_path": base_model_name_or_path,
        "r": int(r0),
        "lora_alpha": float(a0),
        "use_rslora": False,
        "target_modules": paths,
        "rank_pattern": {_exact(p): int(r) for p, r in ranks.items() if r != r0},
        "alpha_pattern": {_exact(p): float(a) for p, a in alphas.items() if a != a0},
        "fan_in_fan_out": bool(fans and fans.pop()),
        "bias": "none",
        "lora_bias": any(layer.bias is not None for layer in adapter.layers.values()),
        "lora_dropout": 0.0,
        "inference_mode": True,
        "init_lora_weights": True,
    }
    tensors: dict[str, Tensor] = {}
    for p, layer in adapter.layers.items():
        ka, kb = (
            ("lora_embedding_A", "lora_embedding_B")
            if layer.kind == "embedding"
            else ("lora_A.weight", "lora_B.weight")
        )
        tensors[f"{PREFIX}{p}.{ka}"] = layer.a.detach().contiguous()
        tensors[f"{PREFIX}{p}.{kb}"] = layer.b.detach().contiguous()
        if layer.bias is not None:
            tensors[f"{PREFIX}{p}.lora_B.bias"] = layer.bias.detach().contiguous()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        (tmp / CONFIG_NAME).write_text(json.dumps(config, indent=2))
        save_file(tensors, str(tmp / WEIGHTS_NAME))
        if out.exists():
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            os.replace(out, old)
            os.replace(tmp, out)
            for f in old.iterdir():
                f.unlink()
            old.rmdir()
        else:
            os.replace(tmp, out)
    finally:
        if tmp.exists():
            for f in tmp.iterdir():
                f.unlink()
            tmp.rmdir()
    return out


def _exact(path: str) -> str:
    """A PEFT pattern (matched as ``(.*\\.)?(pattern)$``) for this module path."""
    return re.escape(path)


def _most_common(values: list[Any]) -> Any:
    return max(dict.fromkeys(values), key=values.count)


def merge_into_base(
    base: Mapping[str, Tensor], delta: Mapping[str, Tensor], *, scale: float = 1.0
) -> StateDict:
    """θ₀ + scale · ΔW for every key of ``delta`` (other keys copied); a new state dict."""
    scale = check_range("scale", scale)
    missing = sorted(set(delta) - set(base))
    if missing:
        raise ValueError(f"delta has keys the base lacks: {missing[:5]}")
    out: StateDict = {}
    for k, v in base.items():
        if k in delta:
            d = delta[k]
            if d.shape != v.shape:
                raise ValueError(
                    f"delta[{k!r}] has shape {tuple(d.shape)}, base has {tuple(v.shape)}"
                )
            out[k] = (v.to(torch.float32) + scale * d.to(torch.float32)).to(v.dtype)
        else:
            out[k] = v.detach().clone()
    return out


def layer_order(adapters: Sequence[LoraAdapter], base: Mapping[str, Tensor] | None) -> list[str]:
    """Every adapted module path, in the base's key order when given (PEFT's module order)."""
    paths: dict[str, None] = {}
    for ad in adapters:
        paths.update(dict.fromkeys(ad.layers))
    if base is None:
        return list(paths)
    rank = {k.rsplit(".", 1)[0]: i for i, k in enumerate(base)}
    return sorted(paths, key=lambda p: rank.get(p, len(rank)))
