"""Device choice and torch thread settings.

Every core routine takes ``device=``; ``"auto"`` picks CUDA when present. Threads are set once,
deliberately: on 2-core machines more intra-op threads than cores thrash.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

import torch

_THREADS_SET = False


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """Turn ``"auto"``/``None``/``"cpu"``/``"cuda"``/``"cuda:1"`` into a torch.device.

    Raises:
        ValueError: when CUDA is asked for but not available, or the name is unknown.
    """
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda[:i]', got {device!r}") from err
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} was requested but CUDA is not available here")
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda[:i]', got {device!r}")
    return dev


def configure_threads(n: int | None = None) -> int:
    """Set torch's intra-op thread count once per process.

    Args:
        n: thread count; default ``MIXMERGE_THREADS`` or the number of available cores.

    Returns:
        The thread count in force.
    """
    global _THREADS_SET
    if n is None:
        if _THREADS_SET:
            return torch.get_num_threads()
        env = os.environ.get("MIXMERGE_THREADS")
        n = int(env) if env else max(1, len(os.sched_getaffinity(0)))
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    torch.set_num_threads(n)
    _THREADS_SET = True
    return n


def describe_device(device: torch.device) -> str:
    """Readable description, e.g. 'CUDA: NVIDIA H100 (80 GB)' or 'CPU (2 threads)'."""
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        return f"CUDA: {props.name} ({props.total_memory / 2**30:.0f} GiB)"
    return f"CPU ({torch.get_num_threads()} threads)"


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (for benchmark reports), or a fallback."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"
