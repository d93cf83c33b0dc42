"""Safe checkpoint loading and validation.

Only two formats are read: safetensors (no code can run) and PyTorch files loaded with
``torch.load(weights_only=True)`` (a pickle that carries code is refused). Hugging Face model
folders are read through their safetensors files.
"""

from __future__ import annotations

import json
import os
import pickle
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from .params import StateDict

SAFETENSORS_SUFFIXES = (".safetensors",)
TORCH_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")


class CheckpointError(ValueError):
    """A checkpoint could not be loaded or does not fit the chosen architecture."""


@dataclass
class CheckReport:
    """Differences between a state dict and a model's expected state dict."""

    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def message(self, limit: int = 10) -> str:
        """Readable summary listing the problems."""
        if self.ok:
            return "checkpoint matches the architecture"
        parts = []

        def cut(xs: list) -> str:
            return ", ".join(map(str, xs[:limit])) + (
                f" (+{len(xs) - limit} more)" if len(xs) > limit else ""
            )

        if self.missing:
            parts.append(f"missing keys ({len(self.missing)}): {cut(self.missing)}")
        if self.unexpected:
            parts.append(f"unexpected keys ({len(self.unexpected)}): {cut(self.unexpected)}")
        if self.mismatched:
            items = [
                f"{k} has {tuple(got)}, expected {tuple(want)}" for k, got, want in self.mismatched
            ]
            parts.append(f"shape mismatches ({len(items)}): {cut(items)}")
        return "; ".join(parts)


def _strip_prefixes(sd: Mapping[str, Tensor]) -> StateDict:
    """Unwrap common containers and prefixes ('state_dict', 'model', 'module.')."""
    out = dict(sd)
    if all(k.startswith("module.") for k in out):
        out = {k[len("module.") :]: v for k, v in out.items()}
    return out


def load_checkpoint(path: str | Path) -> StateDict:
    """Load a state dict from a safetensors file or a PyTorch file (weights only).

    PyTorch files may hold the state dict itself or a dict with a "state_dict" or "model" entry.

    Raises:
        CheckpointError: unknown suffix, a file that is not a checkpoint, or a pickle that
            needs code to load (refused, nothing is executed).
    """
    if not isinstance(path, str | os.PathLike) or isinstance(path, bytes):
        raise TypeError(f"path must be a str or Path, got {type(path).__name__} {path!r}")
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"checkpoint file not found: {p}")
    suffix = p.suffix.lower()
    if suffix in SAFETENSORS_SUFFIXES:
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return dict(load_file(str(p)))
        except (SafetensorError, OSError, ValueError) as err:
            raise CheckpointError(f"{p.name} is not a valid safetensors file: {err}") from None
    if suffix in TORCH_SUFFIXES:
        try:
            obj = torch.load(str(p), map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as err:
            raise CheckpointError(
                f"{p.name} was refused: it is not a plain weights file (loading it would run code "
                f"from the file). Convert it to safetensors in a trusted environment. Details: "
                f"{str(err).splitlines()[0]}"
            ) from None
        except Exception as err:  # noqa: BLE001 - corrupt files raise many types in torch.load
            raise CheckpointError(
                f"{p.name} is not a readable PyTorch checkpoint: {type(err).__name__}: {err}"
            ) from None
        return _unwrap(obj, p.name)
    raise CheckpointError(
        f"checkpoint must end in {SAFETENSORS_SUFFIXES + TORCH_SUFFIXES}, got {p.name!r}"
    )


def _unwrap(obj: object, name: str) -> StateDict:
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model", "model_state_dict"):
            inner = obj.get(key)
            if (
                isinstance(inner, Mapping)
                and inner
                and all(isinstance(v, Tensor) for v in inner.values())
            ):
                obj = inner
                break
        tensors = {k: v for k, v in obj.items() if isinstance(v, Tensor)}  # type: ignore[union-attr]
        if tensors and all(isinstance(k, str) for k in tensors):
            return _strip_prefixes(tensors)
    raise CheckpointError(f"{name} does not contain a state dict (a mapping of names to tensors)")


def check_against(model: nn.Module, sd: Mapping[str, Tensor]) -> CheckReport:
    """Compare ``sd`` with ``model.state_dict()``: missing, unexpected and mis-shaped keys."""
    want = model.state_dict()
    rep = CheckReport(
        missing=sorted(set(want) - set(sd)),
        unexpected=sorted(set(sd) - set(want)),
        mismatched=[
            (k, tuple(sd[k].shape), tuple(want[k].shape))
            for k in want
            if k in sd and sd[k].shape != want[k].shape
        ],
    )
    return rep


def load_into(model: nn.Module, sd: Mapping[str, Tensor]) -> nn.Module:
    """Validate then load ``sd`` into ``model`` (dtype cast to the model's).

    Raises:
        CheckpointError: listing missing/unexpected keys and shape mismatches.
    """
    rep = check_against(model, sd)
    if not rep.ok:
        raise CheckpointError(rep.message())
    bad = [k for k, v in sd.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise CheckpointError(f"checkpoint has NaN/Inf values in {bad[:5]}")
    model.load_state_dict(dict(sd), strict=True)
    return model


def hf_folder_tensors(folder: str | Path) -> list[Path]:
    """The safetensors shard files of a Hugging Face model folder, in index order.

    Raises:
        CheckpointError: no safetensors weights in the folder, or the index names missing shards.
    """
    f = Path(folder)
    index = f / "model.safetensors.index.json"
    if index.exists():
        weight_map = json.loads(index.read_text())["weight_map"]
        shards = sorted(set(weight_map.values()))
        missing = [s for s in shards if not (f / s).exists()]
        if missing:
            raise CheckpointError(f"{f}: index names missing shard files {missing}")
        return [f / s for s in shards]
    files = sorted(f.glob("*.safetensors"))
    if not files:
        raise CheckpointError(f"{f} holds no .safetensors weights (other formats are not loaded)")
    return files
