"""Extract a LoRA adapter from a fine-tuned model: truncated SVD of each layer's task vector.

Hu et al., "LoRA: Low-Rank Adaptation of Large Language Models", ICLR 2022, arXiv:2106.09685,
for the adapter form W = W₀ + (α/r) B A; the extraction is the Eckart–Young truncation used
by mergekit's ``mergekit-extract-lora`` (``scripts/extract_lora.py``).

For every Linear weight (2-d) and Conv2d weight (4-d, flattened to out × in·kh·kw) with
τ = W_tuned − W_base = U S Vᵀ, keep the top r = min(rank, out, in) singular triplets and split
the singular values evenly: B = U_r √S_r (out × r), A = √S_r V_rᵀ (r × in), so B A is the best
rank-r approximation of τ in the Frobenius norm. The energy kept, Σ_{i<r} σᵢ² / Σ σᵢ², is
reported per layer (its complement is the squared relative Frobenius error).

:func:`save_peft_adapter` writes the result in PEFT's format — ``adapter_config.json`` and
``adapter_model.safetensors`` with PEFT's key names ``base_model.model.<module>.lora_A.weight``
/ ``lora_B.weight``, ``lora_alpha = r`` and ``rank_pattern``/``alpha_pattern`` for layers of
smaller rank, so the scale α/r is 1 everywhere — and ``peft.PeftModel.from_pretrained`` loads
it onto the base model. Other floating tensors (biases, norms, embeddings when a model says
so) are not factorised; they are listed in ``skipped``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import Tensor, nn

from .._checks import check_int
from ..params import check_compatible


@dataclass(frozen=True)
class LoraLayer:
    """The factors of one layer.

    Attributes:
        a: ``lora_A.weight``, (r, in) for Linear, (r, in, kh, kw) for Conv2d.
        b: ``lora_B.weight``, (out, r) for Linear, (out, r, 1, 1) for Conv2d.
        rank: r.
        energy: Σ_{i<r} σᵢ² / Σ σᵢ² of the layer's task vector (1 for a zero task vector).
    """

    a: Tensor
    b: Tensor
    rank: int
    energy: float

    def delta(self) -> Tensor:
        """B A reshaped to the layer's weight shape (the scale α/r is 1)."""
        a = self.a.reshape(self.a.shape[0], -1)  # (r, in·k)
        b = self.b.reshape(self.b.shape[0], -1)  # (out, r)
        shape = (self.b.shape[0], *self.a.shape[1:])
        return (b @ a).reshape(shape)


@dataclass(frozen=True)
class LoraExtraction:
    """A LoRA adapter extracted from a fine-tuned model.

    Attributes:
        layers: module name (the state-dict key without ``.weight``) -> its factors.
        rank: the requested rank (layers may have less: min(rank, out, in)).
        skipped: floating-point keys with a non-zero task vector that were not factorised.
    """

    layers: dict[str, LoraLayer]
    rank: int
    skipped: tuple[str, ...]

    def energy(self) -> dict[str, float]:
        """Energy kept per layer (fraction of ‖τ‖²_F in the rank-r truncation)."""
        return {name: layer.energy for name, layer in self.layers.items()}

    def apply(self, base: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """The base state dict with every extracted layer's B A added (a new dict)."""
        out = dict(base)
        for name, layer in self.layers.items():
            k = f"{name}.weight"
            out[k] = (base[k].to(layer.a.dtype) + layer.delta()).to(base[k].dtype)
        return out


def extract_lora(
    base: Mapping[str, Tensor],
    tuned: Mapping[str, Tensor],
    *,
    rank: int,
    keys: Sequence[str] | None = None,
    model: nn.Module | None = None,
) -> LoraExtraction:
    """Truncated SVD of every layer's task vector.

    Args:
        base: the pre-trained state dict.
        tuned: the fine-tuned state dict (same keys, shapes and dtypes).
        rank: r >= 1 (per layer at most min(out, in)).
        keys: weight keys to extract (default: every 2-d and 4-d floating ``*.weight``, or
            with ``model`` every ``nn.Linear`` / ``nn.Conv2d`` weight).
        model: optional module of the architecture; only its Linear and Conv2d (groups 1)
            weights are extracted, so e.g. an ``nn.Embedding`` is never mistaken for a Linear.

    Returns:
        A :class:`LoraExtraction`; the factors are float32 (float64 inputs stay float64), on
        the inputs' device.
    """
    check_int("rank", rank, 1)
    check_compatible([base, tuned], ["base", "tuned"])
    allowed = _layer_keys(model) if model is not None else None
    if keys is None:
        keys = [
            k
            for k, v in base.items()
            if k.endswith(".weight")
            and v.is_floating_point()
            and v.ndim in (2, 4)
            and (allowed is None or k in allowed)
        ]
    else:
        if isinstance(keys, str) or not isinstance(keys, Sequence):
            raise TypeError(f"keys must be a list of state-dict keys, got {type(keys).__name__}")
        for k in keys:
            if k not in base:
                raise ValueError(f"keys names {k!r}, which is not in the state dict")
            if not k.endswith(".weight") or base[k].ndim not in (2, 4):
                raise ValueError(
                    f"keys[{k!r}] must be a 2-d (Linear) or 4-d (Conv2d) '.weight', "
                    f"got shape {tuple(base[k].shape)}"
                )
            if allowed is not None and k not in allowed:
                raise ValueError(f"keys[{k!r}] is not the weight of an nn.Linear or nn.Conv2d")
    layers = {k.removesuffix(".weight"): _factorise(base[k], tuned[k], rank) for k in keys}
    skipped = tuple(
        k
        for k, v in base.items()
        if v.is_floating_point() and k not in keys and not torch.equal(v, tuned[k])
    )
    return LoraExtraction(layers=layers, rank=rank, skipped=skipped)


def save_peft_adapter(
    extraction: LoraExtraction,
    folder: str | os.PathLike[str],
    *,
    base_model_name_or_path: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Write ``adapter_config.json`` + ``adapter_model.safetensors`` (PEFT's format).

    The folder is assembled beside the target and renamed into place, so an interrupted
    write leaves no half adapter. An existing folder is replaced only with ``overwrite``.

    Returns:
        The adapter folder.
    """
    if not isinstance(extraction, LoraExtraction):
        raise TypeError(f"extraction must be a LoraExtraction, got {type(extraction).__name__}")
    if not extraction.layers:
        raise ValueError("extraction holds no layer; nothing to save")
    target = Path(folder)
    if target.exists() and not overwrite:
        raise ValueError(f"folder {target} exists; pass overwrite=True to replace it")
    if target.exists() and not target.is_dir():
        raise ValueError(f"folder {target} exists and is not a directory")
    target.parent.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, Tensor] = {}
    ranks: dict[str, int] = {}
    for name, layer in extraction.layers.items():
        tensors[f"base_model.model.{name}.lora_A.weight"] = layer.a.contiguous().cpu()
        tensors[f"base_model.model.{name}.lora_B.weight"] = layer.b.contiguous().cpu()
        if layer.rank != extraction.rank:
            ranks[_exact(name)] = layer.rank
    names = sorted(extraction.layers)
    config = {
        "peft_type": "LORA",
        "task_type": None,
        "base_model_name_or_path": base_model_name_or_path,
        "r": extraction.rank,
        "lora_alpha": extraction.rank,
        "target_modules": "^(?:" + "|".join(re.escape(n) for n in names) + ")$",
        "rank_pattern": ranks,
        "alpha_pattern": dict(ranks),
        "lora_dropout": 0.0,
        "bias": "none",
        "fan_in_fan_out": False,
        "use_rslora": False,
        "inference_mode": True,
        "init_lora_weights": True,
    }
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent))
    try:
        save_file(tensors, str(tmp / "adapter_model.safetensors"), metadata={"format": "pt"})
        (tmp / "adapter_config.json").write_text(json.dumps(config, indent=2))
        old = None
        if target.exists():
            old = target.with_name(f".{target.name}.old-{os.getpid()}")
            target.rename(old)
        tmp.rename(target)
        if old is not None:
            _remove(old)
    except BaseException:
        _remove(tmp)
        raise
    return target


def _factorise(w0: Tensor, w1: Tensor, rank: int) -> LoraLayer:
    dtype = torch.float64 if w0.dtype == torch.float64 else torch.float32
    tau = w1.to(dtype) - w0.to(dtype)
    out_dim = tau.shape[0]
    mat = tau.reshape(out_dim, -1)  # (out, in·k)
    u, s, vh = torch.linalg.svd(mat, full_matrices=False)
    r = min(rank, s.numel())
    total = float(s.square().sum())
    kept = float(s[:r].square().sum())
    root = s[:r].sqrt()  # (r,)
    b = u[:, :r] * root  # (out, r)
    a = root[:, None] * vh[:r]  # (r, in·k)
    if tau.ndim == 4:
        a = a.reshape(r, *tau.shape[1:])  # (r, in, kh, kw): lora_A is a Conv2d(in, r, k)
        b = b.reshape(out_dim, r, 1, 1)  # (out, r, 1, 1): lora_B is a 1x1 Conv2d(r, out)
    energy = 1.0 if total == 0.0 else min(1.0, kept / total)
    return LoraLayer(a=a.contiguous(), b=b.contiguous(), rank=r, energy=energy)


def _layer_keys(model: nn.Module) -> set[str]:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module or None, got {type(model).__name__}")
    out = set()
    for name, mod in model.named_modules():
        if isinstance(mod, nn.Linear) or (isinstance(mod, nn.Conv2d) and mod.groups == 1):
            out.add(f"{name}.weight")
    return out


def _exact(name: str) -> str:
    """A rank_pattern key matching exactly this module: PEFT matches each key K as
    ``(.*\\.)?(K)$`` against the module name, and a leading ^ rules out the prefix."""
    return "^" + re.escape(name)


def _remove(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
