"""Safe checkpoint loading and validation.

Only two formats are read: safetensors (no code can run) and PyTorch files loaded with
``torch.load(weights_only=True)`` (a pickle that carries code is refused). Hugging Face model
folders are read through their safetensors files.
"""

from __future__ import annotations

import json
import os
import pickle
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import torch
from torch import Tensor, nn

from ._checks import kind_of
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


INDEX_NAME = "model.safetensors.index.json"


def hf_folder_tensors(folder: str | Path) -> list[Path]:
    """The safetensors shard files of a Hugging Face model folder, in index order.

    With an index, the shards are the files its ``weight_map`` names; without one, the
    folder's ``*.safetensors`` files. Every shard must be a regular file inside the folder
    (:func:`file_in_folder`): a name with ``..`` or an absolute path, or a link that leads out
    of the folder, is refused before anything is opened.

    Raises:
        CheckpointError: no safetensors weights in the folder, a malformed index, or shards
            that are missing or lie outside the folder.
    """
    f = Path(folder)
    weight_map = read_weight_map(f)
    if weight_map is not None:
        index = f / INDEX_NAME
        shards = sorted(set(weight_map.values()))
        missing = [s for s in shards if not os.path.lexists(f / s)]
        if missing:
            raise CheckpointError(f"{f}: index names missing shard files {missing}")
        return [_shard(f, s, f"{index}: shard {s!r}") for s in shards]
    files = sorted(f.glob("*.safetensors"))
    if not files:
        raise CheckpointError(f"{f} holds no .safetensors weights (other formats are not loaded)")
    return [_shard(f, p.name, f"{f}: shard {p.name!r}") for p in files]


def read_weight_map(folder: str | Path) -> dict[str, str] | None:
    """The ``weight_map`` (tensor name -> shard file name) of a folder's
    ``model.safetensors.index.json``, checked; None when the folder has no index.

    Shard names must be relative paths without ``..`` that end in ``.safetensors``.

    Raises:
        CheckpointError: the index is unreadable, not JSON, not an object, has no
            ``weight_map`` mapping, or names a shard that is not a plain relative path.
    """
    index = Path(folder) / INDEX_NAME
    if not os.path.lexists(index):
        return None
    target = file_in_folder(folder, INDEX_NAME)
    if target is None:
        raise CheckpointError(
            f"{index} is a link to a file outside the model folder, or not a regular file"
        )
    try:
        data = json.loads(target.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise CheckpointError(f"{index} is not UTF-8 text") from None
    except json.JSONDecodeError as err:
        raise CheckpointError(
            f"{index} is not valid JSON ({err.msg} at line {err.lineno} column {err.colno})"
        ) from None
    except RecursionError:
        raise CheckpointError(f"{index} is not valid JSON: it nests too deeply") from None
    except OSError as err:
        raise CheckpointError(f"{index} cannot be read: {err.strerror or err}") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{index} must hold a JSON object, got {kind_of(data)}")
    if "weight_map" not in data:
        raise CheckpointError(f"{index} has no 'weight_map' (tensor name -> shard file)")
    weight_map = data["weight_map"]
    if not isinstance(weight_map, dict):
        raise CheckpointError(
            f"{index}: 'weight_map' must map tensor names to shard files, got {kind_of(weight_map)}"
        )
    for name, shard in weight_map.items():
        if not isinstance(shard, str):
            raise CheckpointError(
                f"{index}: weight_map[{name!r}] must be a shard file name, got "
                f"{kind_of(shard)}: {_cut_repr(shard)}"
            )
        _check_relative(shard, f"{index}: weight_map[{name!r}]")
    return dict(weight_map)


def _check_relative(name: str, what: str) -> None:
    parts = PurePosixPath(name).parts
    if not name or "\x00" in name or name.startswith(("/", "\\")) or ".." in parts:
        raise CheckpointError(
            f"{what} names {_cut_repr(name)}, a path outside the model folder; shard names "
            "must be relative paths inside it"
        )
    if not name.endswith(".safetensors"):
        raise CheckpointError(f"{what} names {_cut_repr(name)}, not a .safetensors file")


def _shard(folder: Path, name: str, what: str) -> Path:
    path = file_in_folder(folder, name)
    if path is None:
        raise CheckpointError(
            f"{what} is a link to a file outside the model folder, or not a regular file; "
            "shards must be regular files inside the model folder"
        )
    return path


def file_in_folder(folder: str | Path, name: str) -> Path | None:
    """``folder/name`` resolved, when it is a regular file that lives inside ``folder``;
    None otherwise (a link that leads out of the folder, a folder, a FIFO, a device).

    Links that stay inside the folder are followed. One layout links out by design: a Hugging
    Face hub cache snapshot (``models--org--name/snapshots/REV/``), whose files are links into
    the same repository's ``blobs/``; those links are followed too, and nothing else outside.
    """
    if not name or "\x00" in name or PurePosixPath(name).is_absolute():
        return None
    base = Path(folder).resolve()
    target = (base / name).resolve()
    allowed = [base]
    if base.parent.name == "snapshots" and (base.parent.parent / "blobs").is_dir():
        allowed.append((base.parent.parent / "blobs").resolve())
    if not any(target.is_relative_to(a) for a in allowed):
        return None
    try:
        mode = os.stat(target).st_mode
    except OSError:
        return None
    return target if stat.S_ISREG(mode) else None


def _cut_repr(x: object, limit: int = 80) -> str:
    r = repr(x)
    return r if len(r) <= limit else r[: limit - 3] + "..."
