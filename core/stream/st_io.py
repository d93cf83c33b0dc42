"""Safetensors shards read and written with positioned I/O, one tensor at a time.

The format (https://huggingface.co/docs/safetensors) is an 8-byte little-endian header length,
a JSON header mapping names to ``{"dtype", "shape", "data_offsets": [begin, end]}`` (offsets
relative to the byte buffer after the header) and the raw little-endian tensor bytes.

Why not ``safe_open``: it memory-maps the whole file, and every page a merge touches then counts
in the process's resident memory until the file is closed (measured: reading a 512 MB shard
tensor by tensor through ``safe_open`` peaks at +512 MB RSS, positioned reads at +20 MB). Here
each tensor is either mapped on its own (:meth:`ShardReader.map`: a private mapping of just its
pages, populated up front and unmapped when the tensor is freed — no copy, and resident memory
is the tensors in flight) or read with ``readinto`` into a buffer the caller owns
(:meth:`ShardReader.read`, for pinned buffers on the way to a GPU).

Writing plans every shard's header up front (names, dtypes and shapes are known before any
arithmetic), so each merged tensor is written at its offset as soon as it is computed and no
output shard is ever buffered whole.
"""

from __future__ import annotations

import errno
import json
import mmap
import os
import stat
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from .._checks import kind_of

# safetensors dtype code <-> torch dtype
DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}
CODES = {v: k for k, v in DTYPES.items()}
MAX_HEADER = 100 * 1024 * 1024  # the reference implementation's limit


class StreamError(ValueError):
    """A streaming merge cannot run: bad inputs, config or output folder (message says why)."""


class DiskFullError(OSError):
    """The output disk filled up while writing (ENOSPC); the partial output was removed."""


@dataclass(frozen=True)
class TensorInfo:
    """Where one tensor lives: shard file, dtype, shape and absolute byte range."""

    name: str
    path: Path
    dtype: torch.dtype
    shape: tuple[int, ...]
    start: int  # absolute offset in the file
    nbytes: int

    @property
    def numel(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n


def read_header(path: Path) -> dict[str, TensorInfo]:
    """Parse a safetensors header into ``name -> TensorInfo`` (file order).

    The checks are the reference loader's (``safetensors`` ``read_metadata`` / ``validate``):
    a UTF-8 JSON object of at most 100 MB; ``__metadata__`` a mapping of text to text; every
    tensor an object with a known ``dtype``, a ``shape`` of non-negative integers and
    ``data_offsets`` ``[begin, end]`` matching its size; the tensors, in offset order, tile the
    data buffer exactly (no overlap, no gap) and end at the end of the file. Messages name the
    file and the tensor, never the file's bytes.

    Raises:
        StreamError: not a regular file, not a safetensors file, unsupported dtype, or offsets
            that overlap, leave gaps or pass the end of the file.
    """
    p = Path(path)
    header, n, size = _header_json(p)
    if not isinstance(header, dict):
        raise StreamError(
            f"{p} is not a safetensors file: its header must be a JSON object of tensors, "
            f"got {kind_of(header)}"
        )
    meta = header.pop("__metadata__", None)
    if meta is not None and not (
        isinstance(meta, dict) and all(isinstance(v, str) for v in meta.values())
    ):
        raise StreamError(f"{p}: '__metadata__' must map text to text, got {_short(meta)}")
    entries = [_tensor_entry(p, name, spec) for name, spec in header.items()]
    entries.sort(key=lambda e: (e[1], e[2]))
    data_start = 8 + n
    pos = 0
    out: dict[str, TensorInfo] = {}
    for (name, code, shape), begin, end in entries:
        if begin != pos:
            how = "overlaps the tensor before it" if begin < pos else "leaves a gap before it"
            raise StreamError(
                f"{p}: tensor {_short(name)} has data_offsets [{begin}, {end}], which {how} "
                f"(the previous tensor ends at {pos}); the reference loader refuses this file"
            )
        pos = end
        out[name] = TensorInfo(name, p, DTYPES[code], shape, data_start + begin, end - begin)
    if data_start + pos != size:
        raise StreamError(
            f"{p}: the tensors' data ends at byte {data_start + pos} but the file has {size} "
            "bytes (truncated shard, or bytes that no tensor owns)"
        )
    return out


def _header_json(p: Path) -> tuple[object, int, int]:
    """``(header, header length, file size)`` of ``p``: the header as any JSON value; the
    messages name the file, never its bytes."""
    try:
        st = os.stat(p)
        if not stat.S_ISREG(st.st_mode):
            raise StreamError(f"{p} is not a safetensors file: not a regular file")
        with open(p, "rb") as f:
            raw = f.read(8)
            if len(raw) != 8:
                raise StreamError(f"{p} is not a safetensors file: shorter than 8 bytes")
            n = int.from_bytes(raw, "little")
            if n > MAX_HEADER:
                raise StreamError(
                    f"{p} is not a safetensors file: its first 8 bytes give a header longer "
                    f"than the 100 MB limit"
                )
            if 8 + n > st.st_size:
                raise StreamError(
                    f"{p} is not a safetensors file: its first 8 bytes give a header longer "
                    f"than the file ({st.st_size} bytes)"
                )
            text = f.read(n)
    except FileNotFoundError:
        raise StreamError(f"shard file not found: {p}") from None
    except OSError as err:
        raise StreamError(f"{p} cannot be read: {err.strerror or err}") from None
    try:
        return json.loads(text.decode("utf-8"), parse_constant=_no_constant), n, st.st_size
    except UnicodeDecodeError:
        raise StreamError(f"{p} is not a safetensors file: its header is not UTF-8 text") from None
    except json.JSONDecodeError as err:
        raise StreamError(
            f"{p} is not a safetensors file: bad JSON header ({err.msg} at line {err.lineno} "
            f"column {err.colno})"
        ) from None
    except ValueError as err:  # NaN / Infinity, which JSON does not have
        raise StreamError(f"{p} is not a safetensors file: bad JSON header ({err})") from None
    except RecursionError:
        raise StreamError(f"{p} is not a safetensors file: its header nests too deeply") from None


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not a JSON value")


def _tensor_entry(
    p: Path, name: str, spec: object
) -> tuple[tuple[str, str, tuple[int, ...]], int, int]:
    """``((name, dtype code, shape), begin, end)`` of one header entry, checked."""
    what = f"{p}: tensor {_short(name)}"
    if not isinstance(spec, dict):
        raise StreamError(
            f"{what} must be an object with dtype, shape and data_offsets, got {_short(spec)}"
        )
    for key in ("dtype", "shape", "data_offsets"):
        if key not in spec:
            raise StreamError(f"{what} has no {key!r} (expected dtype, shape and data_offsets)")
    code = spec["dtype"]
    if not isinstance(code, str) or code not in DTYPES:
        raise StreamError(f"{what} has dtype {_short(code)}; supported: {sorted(DTYPES)}")
    shape, offsets = spec["shape"], spec["data_offsets"]
    if not isinstance(shape, list) or not all(_count(s) for s in shape):
        raise StreamError(
            f"{what} has shape {_short(shape)}; expected a list of non-negative integers"
        )
    if not isinstance(offsets, list) or len(offsets) != 2 or not all(_count(o) for o in offsets):
        raise StreamError(
            f"{what} has data_offsets {_short(offsets)}; expected [begin, end], two "
            "non-negative integers"
        )
    begin, end = offsets
    numel = 1
    for s in shape:
        numel *= s
    if end < begin or end - begin != numel * DTYPES[code].itemsize:
        raise StreamError(
            f"{what}: byte range [{begin}, {end}) does not fit its shape {shape} / dtype {code} "
            f"({numel * DTYPES[code].itemsize} bytes)"
        )
    return (name, code, tuple(shape)), begin, end


def _count(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x >= 0


def _short(x: object, limit: int = 60) -> str:
    """``repr(x)``, cut to ``limit`` characters (header text can be long)."""
    r = repr(x)
    return r if len(r) <= limit else r[: limit - 3] + "..."


def _as_bytes(t: Tensor) -> memoryview:
    """A writable byte view of a contiguous CPU tensor."""
    return memoryview(t.reshape(-1).view(torch.uint8).numpy()).cast("B")  # type: ignore[arg-type]


# madvise(MADV_POPULATE_READ) (Linux 5.14+; Python names it from 3.13 on): map every page of a
# range in one call instead of one fault per 64 KiB on first touch.
POPULATE_READ = getattr(mmap, "MADV_POPULATE_READ", 22 if sys.platform == "linux" else None)
CAN_MAP = hasattr(mmap, "MAP_PRIVATE") and hasattr(mmap, "PROT_WRITE")


class ShardReader:
    """Reads tensors from shard files (mapped or with positioned reads); one handle per file."""

    def __init__(self) -> None:
        self._files: dict[Path, int] = {}

    def _fd(self, path: Path) -> int:
        fd = self._files.get(path)
        if fd is None:
            try:
                fd = os.open(path, os.O_RDONLY)
            except FileNotFoundError:
                raise StreamError(f"shard file disappeared during the merge: {path}") from None
            self._files[path] = fd
        return fd

    def map(self, info: TensorInfo) -> Tensor:
        """A CPU tensor over ``info``'s bytes in a private mapping of just that range: no copy,
        pages populated now (not on first touch), unmapped once the tensor is freed. Writes to
        it would stay private (copy-on-write); the file is never changed. Falls back to
        :meth:`read` where mapping is unavailable or the data is misaligned for its dtype."""
        if not CAN_MAP or info.nbytes == 0 or info.start % info.dtype.itemsize:
            return self.read(info)
        fd = self._fd(info.path)
        if os.fstat(fd).st_size < info.start + info.nbytes:
            raise StreamError(f"{info.path}: unexpected end of file reading {info.name!r}")
        off = info.start - info.start % mmap.ALLOCATIONGRANULARITY
        try:
            mm = mmap.mmap(
                fd,
                info.start + info.nbytes - off,
                flags=mmap.MAP_PRIVATE,
                prot=mmap.PROT_READ | mmap.PROT_WRITE,
                offset=off,
            )
        except OSError:  # a file system without mmap support: read it instead
            return self.read(info)
        if POPULATE_READ is not None:
            try:
                mm.madvise(POPULATE_READ)
            except OSError:  # older kernel: pages fault in on first touch instead
                pass
        t = torch.frombuffer(mm, dtype=info.dtype, count=info.numel, offset=info.start - off)
        return t.view(info.shape)

    def read(self, info: TensorInfo, *, pin: bool = False, into: Tensor | None = None) -> Tensor:
        """A CPU tensor holding ``info``'s data: new (pinned memory if ``pin``), or a view of
        ``into`` (a flat uint8 buffer of at least ``info.nbytes`` that the caller reuses, which
        saves the page faults of a fresh allocation per tensor)."""
        if into is not None and into.numel() >= info.nbytes and info.nbytes > 0:
            t = into[: info.nbytes].view(info.dtype).view(info.shape)
        else:
            t = torch.empty(info.shape, dtype=info.dtype, pin_memory=pin)
        if info.nbytes == 0:
            return t
        fd = self._fd(info.path)
        buf = _as_bytes(t)
        done = 0
        while done < info.nbytes:
            got = os.preadv(fd, [buf[done:]], info.start + done)
            if got <= 0:
                raise StreamError(f"{info.path}: unexpected end of file reading {info.name!r}")
            done += got
        return t

    def close(self) -> None:
        for fd in self._files.values():
            os.close(fd)
        self._files.clear()


@dataclass(frozen=True)
class OutTensor:
    """One planned output tensor."""

    name: str
    dtype: torch.dtype
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        n = self.dtype.itemsize
        for s in self.shape:
            n *= s
        return n


@dataclass
class ShardPlan:
    """One output shard: file name, tensors in write order, header bytes and offsets."""

    filename: str
    tensors: list[OutTensor]
    header: bytes
    offsets: dict[str, int]  # absolute file offset of each tensor

    @property
    def size(self) -> int:
        return len(self.header) + sum(t.nbytes for t in self.tensors)


def plan_shards(tensors: Sequence[OutTensor], shard_size: int) -> list[ShardPlan]:
    """Split ``tensors`` (in order) into shards of at most ``shard_size`` bytes of data
    (a tensor larger than that gets a shard of its own), named like Hugging Face's
    ``model-0000k-of-0000n.safetensors`` (``model.safetensors`` when there is one shard)."""
    if shard_size <= 0:
        raise ValueError(f"shard_size must be > 0 bytes, got {shard_size}")
    groups: list[list[OutTensor]] = [[]]
    used = 0
    for t in tensors:
        if groups[-1] and used + t.nbytes > shard_size:
            groups.append([])
            used = 0
        groups[-1].append(t)
        used += t.nbytes
    n = len(groups)
    plans = []
    for i, group in enumerate(groups):
        name = "model.safetensors" if n == 1 else f"model-{i + 1:05d}-of-{n:05d}.safetensors"
        header: dict[str, object] = {"__metadata__": {"format": "pt"}}
        pos = 0
        for t in group:
            header[t.name] = {
                "dtype": CODES[t.dtype],
                "shape": list(t.shape),
                "data_offsets": [pos, pos + t.nbytes],
            }
            pos += t.nbytes
        raw = json.dumps(header, separators=(",", ":")).encode()
        raw += b" " * (-len(raw) % 8)  # align the data buffer to 8 bytes
        head = len(raw).to_bytes(8, "little") + raw
        offsets = {}
        pos = len(head)
        for t in group:
            offsets[t.name] = pos
            pos += t.nbytes
        plans.append(ShardPlan(name, group, head, offsets))
    return plans


class ShardWriter:
    """Writes planned shards into a folder, each tensor at its offset as it arrives."""

    def __init__(self, folder: Path, plans: Iterable[ShardPlan]):
        self.folder = folder
        self._where: dict[str, tuple[ShardPlan, int]] = {}
        self._fds: dict[str, int] = {}
        for plan in plans:
            for t in plan.tensors:
                self._where[t.name] = (plan, plan.offsets[t.name])

    def _fd(self, plan: ShardPlan) -> int:
        fd = self._fds.get(plan.filename)
        if fd is None:
            fd = os.open(self.folder / plan.filename, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            self._fds[plan.filename] = fd
            _pwrite_all(fd, memoryview(plan.header), 0)
        return fd

    def write(self, name: str, t: Tensor) -> None:
        """Write tensor ``name`` (already in its planned dtype and shape, on the CPU)."""
        plan, offset = self._where[name]
        if t.numel() == 0:
            self._fd(plan)
            return
        _pwrite_all(self._fd(plan), _as_bytes(t.contiguous()), offset)

    def finish(self, filename: str) -> None:
        """Close one shard file (no fsync: the final rename is what marks completion)."""
        fd = self._fds.pop(filename, None)
        if fd is not None:
            os.close(fd)

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()


def _pwrite_all(fd: int, data: memoryview, offset: int) -> None:
    done = 0
    while done < len(data):
        try:
            done += os.pwrite(fd, data[done:], offset + done)
        except OSError as err:
            if err.errno == errno.ENOSPC:
                raise DiskFullError(errno.ENOSPC, "no space left on the output disk") from None
            raise
