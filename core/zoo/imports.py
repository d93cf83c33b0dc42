"""Models from outside into the zoo: an uploaded checkpoint file checked against its
architecture (external model folders and factories: :mod:`core.zoo.import_cli`)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..models import create_model
from .plan import default_zoo_ids
from .store import ModelRecord, Zoo, slugify


def import_checkpoint(
    zoo: Zoo,
    data: bytes,
    filename: str,
    *,
    arch: str,
    arch_kwargs: Mapping[str, Any],
    task: str,
    name: str | None = None,
) -> ModelRecord:
    """Import the bytes of a checkpoint file (an upload) as a model of ``arch``.

    Everything is checked before anything is stored, and every message names ``filename``
    (the user's file, never a temporary one): the name may not be a default zoo id; the file's
    tensors may take at most three times what ``arch`` needs at float64 (plus 1 MB), checked
    from the file's metadata before inflating anything; then keys, shapes, dense tensors,
    finiteness and dtypes (floating types are converted to the architecture's; integer, bool
    and complex weights are refused) as in :meth:`Zoo.add`.

    Raises:
        CheckpointError: the file is not a checkpoint that fits ``arch``.
        ValueError: a reserved name, or a bad argument.
    """
    from ..io import CheckpointError, check_against, check_dense, load_checkpoint_bytes

    if not isinstance(zoo, Zoo):
        raise TypeError(f"zoo must be a Zoo, got {type(zoo).__name__}")
    if not isinstance(filename, str) or not filename:
        raise ValueError(f"filename must be a non-empty str, got {filename!r}")
    zoo._check_writable()
    model_id = slugify(name or Path(filename).stem)
    if model_id in default_zoo_ids():
        raise ValueError(
            f"the name {model_id!r} is reserved for the default zoo (the default build would "
            "take this model for its own); choose another name"
        )
    probe = create_model(arch, seed=None, **dict(arch_kwargs))
    need = sum(v.numel() * 8 for v in probe.state_dict().values())
    sd = load_checkpoint_bytes(data, filename, max_bytes=3 * need + 2**20)
    try:
        check_dense(sd)
        report = check_against(probe, sd)
        if not report.ok:
            raise CheckpointError(f"it does not fit {arch} {dict(arch_kwargs)}: {report.message()}")
        return zoo.add(
            sd,
            arch=arch,
            arch_kwargs=arch_kwargs,
            task=task,
            role="imported",
            name=model_id,
            recipe={"source_file": filename},
        )
    except CheckpointError as err:
        raise CheckpointError(f"{filename}: {err}") from None
