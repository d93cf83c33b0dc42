"""Persistent model zoo: safetensors checkpoints plus an SQLite index in a workspace folder.

The package is split by what it holds; every name is importable from ``core.zoo`` as before:

- :mod:`~core.zoo.store`: workspace paths, the index, hashes, atomic load and save (:class:`Zoo`);
- :mod:`~core.zoo.recovery`: :func:`repair`, the index rebuilt from the checkpoints' metadata;
- :mod:`~core.zoo.plan`: the default zoo as a list of :class:`ModelSpec` (:class:`ZooPlan`);
- :mod:`~core.zoo.build`: training into the zoo (:func:`ensure_default`, :func:`train_custom`);
- :mod:`~core.zoo.worker`: the default build in a background process (the Home page);
- :mod:`~core.zoo.imports` and :mod:`~core.zoo.import_cli`: checkpoints and external models
  brought in from outside.
"""

from .build import ProgressFn, ensure_default, train_custom
from .imports import import_checkpoint
from .plan import (
    DEFAULT_PLAN,
    ArchRun,
    ModelSpec,
    ZooPlan,
    check_default_ids,
    default_zoo_ids,
    pretrain_data,
)
from .recovery import RepairReport, repair
from .store import (
    ROLES,
    WORKSPACE_ENV,
    ModelRecord,
    WorkspaceError,
    Zoo,
    atomic_write_bytes,
    default_workspace,
    slugify,
)

__all__ = [
    "DEFAULT_PLAN",
    "ROLES",
    "WORKSPACE_ENV",
    "ArchRun",
    "ModelRecord",
    "ModelSpec",
    "ProgressFn",
    "RepairReport",
    "WorkspaceError",
    "Zoo",
    "ZooPlan",
    "atomic_write_bytes",
    "check_default_ids",
    "default_workspace",
    "default_zoo_ids",
    "ensure_default",
    "import_checkpoint",
    "pretrain_data",
    "repair",
    "slugify",
    "train_custom",
]
