"""Shared helpers for pretrained weights that ship inside installed packages."""

from __future__ import annotations

import hashlib
from pathlib import Path


class WeightsUnavailable(RuntimeError):
    """A package that ships pretrained weights is missing or damaged; the message says how to
    install it."""


def file_sha256(path: Path) -> str:
    """sha256 of a file, read in 1 MiB chunks (pins shipped weights and data)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def check_sha256(path: Path, expected: str, fix: str) -> None:
    """Raise :class:`WeightsUnavailable` (saying ``fix``) when ``path``'s sha256 differs."""
    digest = file_sha256(path)
    if digest != expected:
        raise WeightsUnavailable(f"{path} has sha256 {digest}, expected {expected}; {fix}")
