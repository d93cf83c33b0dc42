"""Persistent model zoo: safetensors checkpoints plus an SQLite index in a workspace folder.

Layout of a workspace (default ``./workspace``; ``MIXMERGE_WORKSPACE`` overrides)::

    workspace/
      index.sqlite        models + generic records (WAL mode, every write in a transaction)
      models/<id>.safetensors
      figures/            exported figures
      tmp/                half-written files (never listed; cleaned on open)

Writes are atomic: a checkpoint is written to a temporary name, flushed, fsynced and renamed,
and its index row is committed in the same SQLite transaction only after the rename. A crash
at any point leaves either a complete, listed model or nothing listed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .io import load_into
from .models import Classifier, create_model
from .params import StateDict, check_state_dict

WORKSPACE_ENV = "MIXMERGE_WORKSPACE"
ROLES = ("base", "finetune", "independent", "custom", "imported", "merged", "mixup")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS models (
    id TEXT PRIMARY KEY,
    arch TEXT NOT NULL,
    arch_kwargs TEXT NOT NULL,
    task TEXT NOT NULL,
    seed INTEGER,
    role TEXT NOT NULL,
    parent_id TEXT,
    base_id TEXT,
    train_config TEXT NOT NULL DEFAULT '{}',
    metrics TEXT NOT NULL DEFAULT '{}',
    recipe TEXT NOT NULL DEFAULT '{}',
    file TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    n_params INTEGER NOT NULL,
    created TEXT NOT NULL,
    note TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS records (
    kind TEXT NOT NULL,
    key TEXT NOT NULL,
    data TEXT NOT NULL,
    created TEXT NOT NULL,
    PRIMARY KEY (kind, key)
);
"""


def default_workspace() -> Path:
    """``$MIXMERGE_WORKSPACE`` or ``./workspace``."""
    return Path(os.environ.get(WORKSPACE_ENV, "workspace")).expanduser().resolve()


@dataclass(frozen=True)
class ModelRecord:
    """One row of the zoo index."""

    id: str
    arch: str
    arch_kwargs: dict[str, Any]
    task: str
    seed: int | None
    role: str
    parent_id: str | None
    base_id: str | None
    train_config: dict[str, Any]
    metrics: dict[str, Any]
    recipe: dict[str, Any]
    file: str
    sha256: str
    n_params: int
    created: str
    note: str = ""

    @property
    def test_accuracy(self) -> float | None:
        v = self.metrics.get("test_accuracy")
        return float(v) if v is not None else None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_JSON_FIELDS = ("arch_kwargs", "train_config", "metrics", "recipe")
_SLUG = re.compile(r"[^a-zA-Z0-9_.-]+")


def slugify(text: str) -> str:
    """A safe id fragment: letters, digits, '_', '.', '-'."""
    s = _SLUG.sub("-", text).strip("-.")
    return s[:80] or "model"


def _check_id(model_id: object) -> None:
    if not isinstance(model_id, str):
        raise TypeError(f"model_id must be a str, got {type(model_id).__name__} {model_id!r}")


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def atomic_write_bytes(path: Path, data: bytes, tmp_dir: Path | None = None) -> None:
    """Write ``data`` to ``path`` atomically (temp file in the same filesystem, fsync, rename)."""
    tmp_dir = tmp_dir or path.parent
    tmp_dir.mkdir(parents=True, exist_ok=True)
    tmp = tmp_dir / f".tmp-{uuid.uuid4().hex}-{path.name}"
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


class Zoo:
    """A workspace's model store.

    Args:
        root: workspace folder (created if missing); default :func:`default_workspace`.

    Thread- and process-safe: each call opens its own SQLite connection; writers serialise on
    SQLite's lock (``BEGIN IMMEDIATE``, 30 s busy timeout).
    """

    def __init__(self, root: str | Path | None = None):
        self.root = Path(root).expanduser().resolve() if root is not None else default_workspace()
        if self.root.exists() and not self.root.is_dir():
            raise ValueError(f"root must be a folder, got a file: {self.root}")
        self.models_dir = self.root / "models"
        self.figures_dir = self.root / "figures"
        self.tmp_dir = self.root / "tmp"
        for d in (self.models_dir, self.figures_dir, self.tmp_dir):
            d.mkdir(parents=True, exist_ok=True)
        self.db_path = self.root / "index.sqlite"
        with self._connect() as con:
            con.execute("PRAGMA journal_mode=WAL")
            con.executescript(_SCHEMA)
        self._clean_tmp()

    def __repr__(self) -> str:
        return f"Zoo({str(self.root)!r}, {len(self)} models)"

    # ------------------------------------------------------------------ plumbing
    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        con = sqlite3.connect(self.db_path, timeout=30, isolation_level=None)
        con.row_factory = sqlite3.Row
        con.execute("PRAGMA busy_timeout=30000")
        con.execute("PRAGMA synchronous=NORMAL")
        try:
            yield con
        finally:
            con.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """An immediate (write-locked) transaction, committed on success, rolled back on error."""
        with self._connect() as con:
            con.execute("BEGIN IMMEDIATE")
            try:
                yield con
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise

    def _clean_tmp(self, older_than_s: float = 3600.0) -> None:
        now = time.time()
        for d in (self.tmp_dir, self.models_dir):
            for f in d.glob(".tmp-*"):
                with contextlib.suppress(OSError):
                    if now - f.stat().st_mtime > older_than_s:
                        f.unlink()

    def _inside(self, rel: str) -> bool:
        """True when ``rel`` (an index ``file`` entry) names a file inside ``models/``."""
        return (self.root / rel).resolve().parent == self.models_dir.resolve()

    def _file_path(self, rel: str) -> Path:
        if not self._inside(rel):
            raise ValueError(
                f"index entry file must lie inside {self.models_dir}, got {rel!r} (outside the "
                "workspace: the index was edited by hand or comes from an untrusted source)"
            )
        return self.root / rel

    def _row(self, row: sqlite3.Row) -> ModelRecord:
        d = dict(row)
        for k in _JSON_FIELDS:
            d[k] = json.loads(d[k])
        return ModelRecord(**d)

    # ------------------------------------------------------------------ queries
    def __len__(self) -> int:
        with self._connect() as con:
            return int(con.execute("SELECT COUNT(*) FROM models").fetchone()[0])

    def __contains__(self, model_id: object) -> bool:
        if not isinstance(model_id, str):
            return False
        with self._connect() as con:
            return (
                con.execute("SELECT 1 FROM models WHERE id=?", (model_id,)).fetchone() is not None
            )

    def list(
        self, *, role: str | None = None, arch: str | None = None, task: str | None = None
    ) -> list[ModelRecord]:
        """All models (optionally filtered), oldest first; only complete checkpoints are listed."""
        where, args = [], []
        for col, val in (("role", role), ("arch", arch), ("task", task)):
            if val is not None:
                where.append(f"{col}=?")
                args.append(val)
        sql = (
            "SELECT * FROM models"
            + (" WHERE " + " AND ".join(where) if where else "")
            + " ORDER BY created, rowid"
        )
        with self._connect() as con:
            rows = [self._row(r) for r in con.execute(sql, args)]
        return [r for r in rows if self._inside(r.file) and (self.root / r.file).exists()]

    def table(self) -> Any:
        """The index as a pandas DataFrame (one row per model) for display."""
        import pandas as pd

        rows = [
            {
                "id": r.id,
                "architecture": r.arch,
                "task": r.task,
                "role": r.role,
                "seed": r.seed,
                "parent": r.parent_id or "",
                "base": r.base_id or "",
                "test_accuracy": r.test_accuracy,
                "params": r.n_params,
                "created": r.created,
            }
            for r in self.list()
        ]
        cols = [
            "id",
            "architecture",
            "task",
            "role",
            "seed",
            "parent",
            "base",
            "test_accuracy",
            "params",
            "created",
        ]
        return pd.DataFrame(rows, columns=cols)

    def get(self, model_id: str) -> ModelRecord:
        """The record of ``model_id``.

        Raises:
            KeyError: no such model (message lists a few ids that exist).
            TypeError: ``model_id`` is not a str.
        """
        _check_id(model_id)
        with self._connect() as con:
            row = con.execute("SELECT * FROM models WHERE id=?", (model_id,)).fetchone()
        if row is None:
            ids = [r.id for r in self.list()][:8]
            raise KeyError(
                f"model_id {model_id!r} is not in the zoo at {self.root}; some ids: {ids}"
            )
        return self._row(row)

    def state_dict(self, model_id: str, *, verify: bool = False) -> StateDict:
        """Load the checkpoint of ``model_id`` (CPU tensors). ``verify`` checks the sha256."""
        from safetensors.torch import load_file

        rec = self.get(model_id)
        path = self._file_path(rec.file)
        try:
            if verify and _sha256(path) != rec.sha256:
                raise ValueError(
                    f"checkpoint of {model_id!r} is corrupt: sha256 differs from the index"
                )
            return dict(load_file(str(path)))
        except FileNotFoundError:
            raise KeyError(
                f"model_id {model_id!r} was deleted (its checkpoint file is gone)"
            ) from None

    def load_model(self, model_id: str, *, device: str | torch.device = "cpu") -> Classifier:
        """Rebuild the architecture from the index and load the checkpoint (eval mode)."""
        rec = self.get(model_id)
        model = create_model(rec.arch, seed=None, **rec.arch_kwargs)
        load_into(model, self.state_dict(model_id))
        return model.to(device).eval()

    # ------------------------------------------------------------------ writes
    def add(
        self,
        model: nn.Module | Mapping[str, Tensor],
        *,
        arch: str,
        arch_kwargs: Mapping[str, Any],
        task: str,
        role: str = "custom",
        name: str | None = None,
        seed: int | None = None,
        parent_id: str | None = None,
        base_id: str | None = None,
        train_config: Mapping[str, Any] | None = None,
        metrics: Mapping[str, Any] | None = None,
        recipe: Mapping[str, Any] | None = None,
        note: str = "",
        replace: bool = False,
    ) -> ModelRecord:
        """Store a model (or state dict) and index it atomically.

        Args:
            model: the module or its state dict; it must load into ``create_model(arch, **arch_kwargs)``.
            name: preferred id (made unique with a suffix unless ``replace``).
            role: one of ``ROLES``.
            recipe: how it was made (merge method, hyperparameters, source ids), for provenance.

        Returns:
            The stored record.
        """
        from safetensors.torch import save

        if role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}, got {role!r}")
        sd = model.state_dict() if isinstance(model, nn.Module) else dict(model)
        sd = check_state_dict("model", sd)
        probe = create_model(arch, seed=None, **dict(arch_kwargs))
        load_into(probe, sd)  # validates keys, shapes, finiteness
        sd = {k: v.detach().to("cpu").contiguous() for k, v in sd.items()}
        for pid, label in ((parent_id, "parent_id"), (base_id, "base_id")):
            if pid is not None and pid not in self:
                raise ValueError(f"{label} {pid!r} is not in the zoo")
        base_name = slugify(
            name or f"{arch}-{task}-{role}" + (f"-s{seed}" if seed is not None else "")
        )
        meta = {
            "arch": arch,
            "arch_kwargs": json.dumps(dict(arch_kwargs)),
            "task": task,
            "format": "pt",
        }
        blob = save(sd, metadata=meta)
        n_params = sum(v.numel() for v in sd.values() if v.is_floating_point())
        with self.transaction() as con:
            model_id = base_name
            if replace:
                old = con.execute("SELECT file FROM models WHERE id=?", (model_id,)).fetchone()
                if old is not None:
                    con.execute("DELETE FROM models WHERE id=?", (model_id,))
            else:
                k = 2
                while con.execute("SELECT 1 FROM models WHERE id=?", (model_id,)).fetchone():
                    model_id = f"{base_name}-{k}"
                    k += 1
            rel = f"models/{model_id}.safetensors"
            atomic_write_bytes(self.root / rel, blob, self.tmp_dir)
            rec = ModelRecord(
                id=model_id,
                arch=arch,
                arch_kwargs=dict(arch_kwargs),
                task=task,
                seed=seed,
                role=role,
                parent_id=parent_id,
                base_id=base_id,
                train_config=dict(train_config or {}),
                metrics=dict(metrics or {}),
                recipe=dict(recipe or {}),
                file=rel,
                sha256=hashlib.sha256(blob).hexdigest(),
                n_params=n_params,
                created=_now(),
                note=note,
            )
            d = rec.to_dict()
            for f in _JSON_FIELDS:
                d[f] = json.dumps(d[f], default=str)
            cols = ", ".join(d)
            con.execute(
                f"INSERT INTO models ({cols}) VALUES ({', '.join('?' * len(d))})", list(d.values())
            )
        return rec

    def update_metrics(self, model_id: str, metrics: Mapping[str, Any]) -> ModelRecord:
        """Merge ``metrics`` into the stored metrics of ``model_id``."""
        _check_id(model_id)
        with self.transaction() as con:
            row = con.execute("SELECT metrics FROM models WHERE id=?", (model_id,)).fetchone()
            if row is None:
                raise KeyError(f"model_id {model_id!r} is not in the zoo")
            merged = {**json.loads(row[0]), **dict(metrics)}
            con.execute(
                "UPDATE models SET metrics=? WHERE id=?",
                (json.dumps(merged, default=str), model_id),
            )
        return self.get(model_id)

    def delete(self, model_id: str) -> None:
        """Remove a model from the index, then its file. Children keep their (dangling) parent id."""
        _check_id(model_id)
        with self.transaction() as con:
            row = con.execute("SELECT file FROM models WHERE id=?", (model_id,)).fetchone()
            if row is None:
                raise KeyError(f"model_id {model_id!r} is not in the zoo")
            con.execute("DELETE FROM models WHERE id=?", (model_id,))
        if self._inside(row[0]):  # a tampered index never deletes outside the workspace
            with contextlib.suppress(FileNotFoundError):
                (self.root / row[0]).unlink()

    # ------------------------------------------------------------------ generic records
    def put_record(self, kind: str, key: str, data: Mapping[str, Any]) -> None:
        """Store a JSON-serialisable result (training runs, sweeps, figures) under (kind, key)."""
        if not kind or not key:
            raise ValueError(f"kind and key must be non-empty, got {kind!r}, {key!r}")
        with self.transaction() as con:
            con.execute(
                "INSERT OR REPLACE INTO records (kind, key, data, created) VALUES (?, ?, ?, ?)",
                (kind, key, json.dumps(dict(data), default=str), _now()),
            )

    def get_records(self, kind: str) -> dict[str, dict[str, Any]]:
        """All records of ``kind``, key -> data, oldest first."""
        with self._connect() as con:
            rows = con.execute(
                "SELECT key, data FROM records WHERE kind=? ORDER BY created, rowid", (kind,)
            ).fetchall()
        return {r[0]: json.loads(r[1]) for r in rows}

    def delete_record(self, kind: str, key: str) -> None:
        with self.transaction() as con:
            con.execute("DELETE FROM records WHERE kind=? AND key=?", (kind, key))


ProgressFn = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class ZooPlan:
    """What the default zoo holds and how it is trained.

    The task-vector setting: a base MLP pre-trained on another task than the fine-tunes'
    (``pretrain_classes``: only digits 0-4 of every domain, a 5-way task), then one fine-tune
    per digit domain on all ten digits (the domains share the digit label space, so task
    vectors can be added). The base is thus clearly weaker than every fine-tune on its task
    (it never predicts 5-9), as a pretrained backbone is before fine-tuning: the regime the
    merging papers study. A base pre-trained on the ten-way target tasks themselves was nearly
    as good as the fine-tunes and every merge fell below it; one pre-trained on Fashion-MNIST
    alone was at chance and its task vectors did not combine (docs/BENCHMARKS.md). The
    mode-connectivity setting: ``independent_seeds`` models per architecture trained from
    different initialisations on the same data.
    """

    base_arch: str = "mlp"
    base_kwargs: dict[str, Any] = field(default_factory=lambda: {"width": 512, "depth": 3})
    domains: tuple[str, ...] = ("mnist", "mnist_inverted", "mnist_rotated", "digits")
    pretrain_tasks: tuple[str, ...] | None = None  # the base's domains (None: ``domains``)
    pretrain_classes: tuple[int, ...] | None = (0, 1, 2, 3, 4)  # the base's task: these only
    base_per_task: int | None = None  # training examples per domain before the class filter
    base_epochs: int = 2
    finetune_epochs: int = 8
    finetune_lr: float = 5e-4
    independent: tuple[tuple[str, dict[str, Any], int, float], ...] = (
        ("mlp", {"width": 512, "depth": 3}, 6, 1e-3),  # arch, kwargs, epochs, lr
        ("cnn", {"width": 16}, 4, 1e-2),
        ("resnet20", {"width": 8}, 3, 1e-2),
    )
    independent_task: str = "mnist"
    independent_seeds: tuple[int, ...] = (1, 2)
    max_steps: int | None = None  # caps every run (tests use tiny plans)

    def n_models(self) -> int:
        return 1 + len(self.domains) + len(self.independent) * len(self.independent_seeds)


DEFAULT_PLAN = ZooPlan()


def pretrain_data(plan: ZooPlan) -> tuple[Tensor, Tensor, str]:
    """The base's training data: the pooled ``pretrain_tasks`` (default: the domains), kept
    to ``pretrain_classes``; with a one-line description for the zoo's note."""
    from .data import mixture

    tasks = list(plan.pretrain_tasks or plan.domains)
    x, y = mixture(tasks, n_per_task=plan.base_per_task, generator=torch.Generator().manual_seed(0))
    what = "+".join(tasks)
    if plan.pretrain_classes is not None:
        keep = torch.isin(y, torch.tensor(plan.pretrain_classes))
        if not bool(keep.any()):
            raise ValueError(
                f"pretrain_classes {plan.pretrain_classes} selects no example of {tasks}"
            )
        x, y = x[keep], y[keep]
        what += f", classes {','.join(map(str, plan.pretrain_classes))} only"
    return x, y, what


def ensure_default(
    zoo: Zoo,
    plan: ZooPlan = DEFAULT_PLAN,
    *,
    device: str | torch.device = "auto",
    progress: ProgressFn | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> list[ModelRecord]:
    """Train whatever part of the default zoo is missing; return the default zoo's records.

    Models already present (by id) are kept, so an interrupted build resumes where it stopped.
    ``progress`` receives dicts with ``model`` (k), ``models`` (n), ``id``, ``epoch``,
    ``epochs``, ``test_accuracy`` and ``message``.
    """
    from .data import get_task
    from .train import TrainConfig, evaluate, train

    if not isinstance(zoo, Zoo):
        raise TypeError(f"zoo must be a Zoo, got {type(zoo).__name__}")
    n_total = plan.n_models()
    k = 0
    records: list[ModelRecord] = []

    def report(model_id: str) -> ProgressFn:
        def cb(info: dict[str, Any]) -> None:
            if progress is not None:
                progress(
                    {
                        **info,
                        "model": k,
                        "models": n_total,
                        "id": model_id,
                        "message": f"model {k}/{n_total} {model_id}: epoch {info.get('epoch')}/{info.get('epochs')}",
                    }
                )

        return cb

    def task_metrics(model: nn.Module, tasks: tuple[str, ...]) -> dict[str, Any]:
        per = {
            t: evaluate(model, get_task(t).x_test, get_task(t).y_test, device=device).accuracy
            for t in tasks
        }
        return {"task_accuracy": per}

    # 1. base model on a mixture of domains
    base_id = f"{plan.base_arch}-base"
    k += 1
    if base_id in zoo:
        records.append(zoo.get(base_id))
    else:
        cfg = TrainConfig(epochs=plan.base_epochs, lr=1e-3, seed=0, max_steps=plan.max_steps)
        x, y, pre_what = pretrain_data(plan)
        model = create_model(plan.base_arch, seed=0, **plan.base_kwargs)
        hist = train(
            model, x, y, cfg, device=device, progress=report(base_id), should_stop=should_stop
        )
        metrics = task_metrics(model, plan.domains)
        metrics["test_accuracy"] = sum(metrics["task_accuracy"].values()) / len(plan.domains)
        metrics["history"] = hist.to_dict()
        records.append(
            zoo.add(
                model,
                arch=plan.base_arch,
                arch_kwargs=plan.base_kwargs,
                task="+".join(plan.domains),
                role="base",
                note=f"pre-trained on {pre_what}",
                name=base_id,
                seed=0,
                train_config=cfg.to_dict(),
                metrics=metrics,
                replace=True,
            )
        )
        if progress:
            progress(
                {
                    "model": k,
                    "models": n_total,
                    "id": base_id,
                    "test_accuracy": metrics["test_accuracy"],
                    "message": f"model {k}/{n_total} {base_id} done",
                }
            )
    # 2. one fine-tune per domain, from the base
    for i, task in enumerate(plan.domains):
        k += 1
        ft_id = f"{plan.base_arch}-ft-{task}"
        if ft_id in zoo:
            records.append(zoo.get(ft_id))
            continue
        ds = get_task(task)
        cfg = TrainConfig(
            epochs=plan.finetune_epochs, lr=plan.finetune_lr, seed=100 + i, max_steps=plan.max_steps
        )
        model = zoo.load_model(base_id)
        hist = train(
            model,
            ds.x_train,
            ds.y_train,
            cfg,
            eval_data=(ds.x_test, ds.y_test),
            device=device,
            progress=report(ft_id),
            should_stop=should_stop,
        )
        metrics = task_metrics(model, plan.domains)
        metrics["test_accuracy"] = metrics["task_accuracy"][task]
        metrics["history"] = hist.to_dict()
        records.append(
            zoo.add(
                model,
                arch=plan.base_arch,
                arch_kwargs=plan.base_kwargs,
                task=task,
                role="finetune",
                name=ft_id,
                seed=cfg.seed,
                parent_id=base_id,
                base_id=base_id,
                train_config=cfg.to_dict(),
                metrics=metrics,
                replace=True,
            )
        )
        if progress:
            progress(
                {
                    "model": k,
                    "models": n_total,
                    "id": ft_id,
                    "test_accuracy": metrics["test_accuracy"],
                    "message": f"model {k}/{n_total} {ft_id} done",
                }
            )
    # 3. independently initialised models per architecture
    ds = get_task(plan.independent_task)
    for arch, kwargs, epochs, lr in plan.independent:
        for seed in plan.independent_seeds:
            k += 1
            mid = f"{arch}-{plan.independent_task}-s{seed}"
            if mid in zoo:
                records.append(zoo.get(mid))
                continue
            cfg = TrainConfig(epochs=epochs, lr=lr, seed=seed, max_steps=plan.max_steps)
            model = create_model(arch, seed=seed, **kwargs)
            hist = train(
                model,
                ds.x_train,
                ds.y_train,
                cfg,
                eval_data=(ds.x_test, ds.y_test),
                device=device,
                progress=report(mid),
                should_stop=should_stop,
            )
            metrics = {"test_accuracy": hist.test_accuracy[-1], "history": hist.to_dict()}
            records.append(
                zoo.add(
                    model,
                    arch=arch,
                    arch_kwargs=kwargs,
                    task=plan.independent_task,
                    role="independent",
                    name=mid,
                    seed=seed,
                    train_config=cfg.to_dict(),
                    metrics=metrics,
                    replace=True,
                )
            )
            if progress:
                progress(
                    {
                        "model": k,
                        "models": n_total,
                        "id": mid,
                        "test_accuracy": metrics["test_accuracy"],
                        "message": f"model {k}/{n_total} {mid} done",
                    }
                )
    return records


def default_zoo_ids(plan: ZooPlan = DEFAULT_PLAN) -> list[str]:
    """Ids of the default zoo's models, in build order."""
    ids = [f"{plan.base_arch}-base"] + [f"{plan.base_arch}-ft-{t}" for t in plan.domains]
    ids += [
        f"{a}-{plan.independent_task}-s{s}"
        for a, *_ in plan.independent
        for s in plan.independent_seeds
    ]
    return ids


def train_custom(
    zoo: Zoo,
    *,
    arch: str,
    task: str,
    epochs: int = 5,
    width: int | None = None,
    seed: int = 0,
    lr: float | None = None,
    name: str | None = None,
    device: str | torch.device = "auto",
    progress: ProgressFn | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> ModelRecord:
    """Train one model on ``task`` and store it (role "custom")."""
    from .data import get_task
    from .models import ARCHITECTURES
    from .train import TrainConfig, train

    ARCHITECTURES[arch]  # raises a clear error for an unknown architecture
    ds = get_task(task)
    kwargs: dict[str, Any] = {}
    if width is not None:
        kwargs["width"] = width
    lr = lr if lr is not None else (1e-3 if arch == "mlp" else 1e-2)
    cfg = TrainConfig(epochs=epochs, lr=lr, seed=seed)
    model = create_model(arch, seed=seed, **kwargs)
    hist = train(
        model,
        ds.x_train,
        ds.y_train,
        cfg,
        eval_data=(ds.x_test, ds.y_test),
        device=device,
        progress=progress,
        should_stop=should_stop,
    )
    metrics = {"test_accuracy": hist.test_accuracy[-1], "history": hist.to_dict()}
    return zoo.add(
        model,
        arch=arch,
        arch_kwargs=kwargs,
        task=task,
        role="custom",
        name=name or f"{arch}-{task}-s{seed}",
        seed=seed,
        train_config=cfg.to_dict(),
        metrics=metrics,
    )
