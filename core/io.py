"""Safe checkpoint loading and validation.

Only two formats are read: safetensors (no code can run) and PyTorch files loaded with
``torch.load(weights_only=True)`` (a pickle that carries code is refused). Hugging Face model
folders are read through their safetensors files.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import stat
import zipfile
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


def load_checkpoint(
    path: str | Path, *, max_bytes: int | None = None, name: str | None = None
) -> StateDict:
    """Load a state dict from a safetensors file or a PyTorch file (weights only).

    PyTorch files may hold the state dict itself or a dict with a "state_dict" or "model" entry.

    Args:
        max_bytes: refuse a file whose tensors would take more memory than this, checked from
            the file's metadata before any tensor is read or unpacked (see
            :func:`load_checkpoint_bytes`).
        name: the name used in messages (default: the file's name).

    Raises:
        CheckpointError: unknown suffix, a file that is not a checkpoint, a damaged file, one
            too large, or a pickle that needs code to load (refused, nothing is executed).
    """
    if not isinstance(path, str | os.PathLike) or isinstance(path, bytes):
        raise TypeError(f"path must be a str or Path, got {type(path).__name__} {path!r}")
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"checkpoint file not found: {p}")
    shown = name or p.name
    _check_suffix(shown if name else p.name)
    if max_bytes is not None and p.suffix.lower() in SAFETENSORS_SUFFIXES:
        _check_size(p.stat().st_size, max_bytes, shown)
    return load_checkpoint_bytes(p.read_bytes(), shown, max_bytes=max_bytes)


def _check_suffix(name: str) -> str:
    suffix = PurePosixPath(name).suffix.lower()
    if suffix not in SAFETENSORS_SUFFIXES + TORCH_SUFFIXES:
        raise CheckpointError(
            f"checkpoint must end in {SAFETENSORS_SUFFIXES + TORCH_SUFFIXES}, got {name!r}"
        )
    return suffix


def _mb(n: int) -> str:
    return f"{n / 2**20:.1f} MB"


def _check_size(n: int, max_bytes: int, name: str, what: str = "holds") -> None:
    if n > max_bytes:
        raise CheckpointError(
            f"{name} {what} {_mb(n)} of tensors, more than the {_mb(max_bytes)} the chosen "
            "architecture can need; refused before unpacking anything"
        )


def load_checkpoint_bytes(data: bytes, name: str, *, max_bytes: int | None = None) -> StateDict:
    """Load a state dict from the bytes of a checkpoint called ``name`` (an upload).

    The format follows ``name``'s suffix. Sizes are checked before anything is inflated: for
    a torch zip archive, the uncompressed size of every record (from the archive's central
    directory) and the storage sizes its pickle declares (read with no tensor data, on the
    ``meta`` device); for a legacy pickle and safetensors, the file's size.

    Raises:
        CheckpointError: as :func:`load_checkpoint`; messages name ``name``.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise TypeError(f"data must be bytes, got {type(data).__name__}")
    if not isinstance(name, str) or not name:
        raise TypeError(f"name must be a non-empty str, got {name!r}")
    data = bytes(data)
    suffix = _check_suffix(name)
    if suffix in SAFETENSORS_SUFFIXES:
        from safetensors import SafetensorError
        from safetensors.torch import load

        if max_bytes is not None:
            _check_size(len(data), max_bytes, name)
        try:
            return dict(load(data))
        except (SafetensorError, OSError, ValueError) as err:
            raise CheckpointError(f"{name} is not a valid safetensors file: {err}") from None
    if data[:4] == b"PK\x03\x04":
        _check_torch_zip(data, name, max_bytes)
    elif data[:1] == b"\x80":  # a pickle: the legacy torch format stores tensors uncompressed
        if max_bytes is not None:
            _check_size(len(data), max_bytes, name)
    else:
        raise CheckpointError(
            f"{name} is not a PyTorch checkpoint: it is neither a torch zip archive nor a "
            f"pickle (it begins with {data[:8]!r}); is it damaged, or another format?"
        )
    obj = _torch_load(data, name, "cpu")
    return _unwrap(obj, name)


def _check_torch_zip(data: bytes, name: str, max_bytes: int | None) -> None:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            infos = zf.infolist()
    except (zipfile.BadZipFile, EOFError, ValueError, OSError) as err:
        raise CheckpointError(
            f"{name} is damaged or truncated: it begins like a PyTorch checkpoint (a zip "
            f"archive) but the archive cannot be read ({err})"
        ) from None
    if not any(i.filename.endswith("data.pkl") for i in infos):
        raise CheckpointError(f"{name} is a zip archive without data.pkl, not a PyTorch checkpoint")
    if max_bytes is None:
        return
    _check_size(sum(i.file_size for i in infos), max_bytes, name, "unpacks to")
    skeleton = _torch_load(data, name, "meta")  # shapes and storage sizes, no tensor data
    declared = sum(
        t.untyped_storage().nbytes() for t in _tensors_in(skeleton) if t.layout == torch.strided
    )
    _check_size(declared, max_bytes, name, "declares")


def _tensors_in(obj: object, depth: int = 0) -> list[Tensor]:
    if isinstance(obj, Tensor):
        return [obj]
    if depth > 3:
        return []
    if isinstance(obj, Mapping):
        return [t for v in obj.values() for t in _tensors_in(v, depth + 1)]
    if isinstance(obj, list | tuple):
        return [t for v in obj for t in _tensors_in(v, depth + 1)]
    return []


_CODE_MARKERS = ("GLOBAL", "reduce", "Can only build", "Can only create new object")


def _torch_load(data: bytes, name: str, map_location: str) -> object:
    try:
        return torch.load(io.BytesIO(data), map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        text = str(err)
        first = text.splitlines()[0] if text else type(err).__name__
        calls = _foreign_globals(data)
        if calls or any(m in text for m in _CODE_MARKERS):
            detail = f"it calls {', '.join(calls[:3])}" if calls else _code_detail(text) or first
            raise CheckpointError(
                f"{name} was refused: it is not a plain weights file (loading it would run code "
                f"from the file). Convert it to safetensors in a trusted environment. Details: "
                f"{detail}"
            ) from None
        raise CheckpointError(
            f"{name} is damaged or not a PyTorch checkpoint (its pickle cannot be read: {first})"
        ) from None
    except Exception as err:  # noqa: BLE001 - corrupt files raise many types in torch.load
        first = (str(err).splitlines() or [""])[0]
        raise CheckpointError(
            f"{name} is damaged or not a PyTorch checkpoint: {type(err).__name__}: {first}"
        ) from None


_PLAIN_GLOBALS = ("torch.", "collections.OrderedDict", "_codecs.encode", "builtins.set")


def _foreign_globals(data: bytes) -> list[str]:
    """The functions and classes a checkpoint's pickle names beyond torch's own, read with
    ``pickletools`` (nothing is executed): what would run if it were loaded unsafely."""
    import pickletools

    pkl = data
    if data[:4] == b"PK\x03\x04":
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as zf:
                entry = next(i for i in zf.infolist() if i.filename.endswith("data.pkl"))
                if entry.file_size > 64 * 2**20:
                    return []
                pkl = zf.read(entry)
        except (zipfile.BadZipFile, StopIteration, OSError, ValueError, EOFError):
            return []
    found: list[str] = []
    strings: list[str] = []
    try:
        for op, arg, _ in pickletools.genops(pkl):
            if isinstance(arg, str):
                strings = [*strings[-1:], arg]
            if op.name in ("GLOBAL", "INST") and isinstance(arg, str):
                found.append(arg.replace(" ", "."))
            elif op.name == "STACK_GLOBAL" and len(strings) == 2:
                found.append(".".join(strings))
            if op.name == "STOP":
                break
    except Exception:  # noqa: BLE001 - damaged pickles stop the scan; what was found counts
        pass
    return [g for g in dict.fromkeys(found) if not g.startswith(_PLAIN_GLOBALS)]


def _code_detail(text: str) -> str:
    for line in text.splitlines():
        if "GLOBAL" in line or "reduce" in line:
            return line.strip()
    return ""


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


def check_dense(sd: Mapping[str, Tensor]) -> None:
    """Refuse sparse, meta (data-less) and other non-strided tensors, naming them.

    Raises:
        CheckpointError: listing the keys and what they are.
    """
    bad = []
    for k, v in sd.items():
        if v.is_meta:
            bad.append(f"{k} holds no data (a meta tensor)")
        elif v.layout != torch.strided:
            bad.append(f"{k} is a sparse tensor ({v.layout})")
    if bad:
        raise CheckpointError(
            f"checkpoint has tensors that are not plain weights: {'; '.join(bad[:5])}"
            + (f" (+{len(bad) - 5} more)" if len(bad) > 5 else "")
            + "; save dense tensors with data (e.g. t.to_dense() on the real device)"
        )


def conform_dtypes(model: nn.Module, sd: Mapping[str, Tensor]) -> StateDict:
    """``sd`` with every tensor in the dtype ``model`` keeps it in.

    Floating-point tensors (float16, bfloat16, float64, ...) are converted to the model's
    floating dtype (a value that overflows it is refused); integer buffers to the model's
    integer dtype when every value fits. Anything else (integer, bool or complex tensors where
    the model has floating weights, floats where it has integers) would be rounded or lose its
    imaginary part, and is refused.

    Raises:
        CheckpointError: naming the tensors, their dtype and the dtype the model needs.
    """
    want = model.state_dict()
    out: StateDict = {}
    bad: list[str] = []
    for k, v in sd.items():
        target = want[k].dtype if k in want else v.dtype
        if v.dtype == target:
            out[k] = v
        elif v.is_floating_point() and target.is_floating_point:
            c = v.to(target)
            if bool(torch.isfinite(v).all()) and not bool(torch.isfinite(c).all()):
                bad.append(f"{k} ({v.dtype}) overflows {target}")
            out[k] = c
        elif _is_int(v.dtype) and _is_int(target):
            c = v.to(target)
            if not torch.equal(c.to(v.dtype), v):
                bad.append(f"{k} ({v.dtype}) has values that do not fit {target}")
            out[k] = c
        else:
            bad.append(f"{k} is {v.dtype}, the architecture keeps it as {target}")
    if bad:
        raise CheckpointError(
            f"checkpoint has tensors of the wrong type: {'; '.join(bad[:5])}"
            + (f" (+{len(bad) - 5} more)" if len(bad) > 5 else "")
            + ". Floating-point weights are converted (float16, bfloat16, float64); integer, "
            "bool and complex weights are not (they would be rounded or lose their imaginary "
            "part): convert them to floating point where they were made"
        )
    return out


def _is_int(dtype: torch.dtype) -> bool:
    return not dtype.is_floating_point and not dtype.is_complex and dtype != torch.bool


def load_into(model: nn.Module, sd: Mapping[str, Tensor]) -> nn.Module:
    """Validate then load ``sd`` into ``model`` (floating dtypes converted to the model's).

    Raises:
        CheckpointError: listing missing/unexpected keys and shape mismatches, sparse or meta
            tensors, NaN/Inf values, and dtypes that cannot be converted
            (:func:`conform_dtypes`).
    """
    check_dense(sd)
    rep = check_against(model, sd)
    if not rep.ok:
        raise CheckpointError(rep.message())
    bad = [k for k, v in sd.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise CheckpointError(f"checkpoint has NaN/Inf values in {bad[:5]}")
    model.load_state_dict(conform_dtypes(model, sd), strict=True)
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
