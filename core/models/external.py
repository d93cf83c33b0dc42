"""Bring your own model: Hugging Face folders, timm names and ``package.module:factory`` calls.

Three kinds of source enter the zoo beside the built-in architectures:

* ``hf``: a Hugging Face transformers folder (``config.json`` + safetensors weights), built
  with ``transformers.AutoModel`` from its config and loaded from safetensors only (no
  pickles, no remote code). The config travels with the zoo record, so the zoo rebuilds the
  architecture without the folder.
* ``timm``: a timm model name (``timm.create_model(name, pretrained=False)``), only where timm
  is installed; weights come from a file.
* ``factory``: any ``package.module:callable`` returning an ``nn.Module`` (called with the
  given keyword arguments); weights come from a file or are the factory's own.

Stored models have architecture ``"external"`` with ``arch_kwargs`` ``{"kind", "source",
"config", "kwargs"}`` (strings), so ``core.models.create_model("external", **arch_kwargs)``
rebuilds them and every zoo function (state dicts, task vectors, ``core.merge``) works on
them. :func:`import_external` validates a whole set (base and fine-tunes, weights, evaluation
data) before anything is written, and names each thing that does not fit.
"""

from __future__ import annotations

import importlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .._registry import Hyper, Registry
from ..io import CheckpointError, hf_folder_tensors, load_checkpoint
from ..params import StateDict, check_compatible

KINDS = ("hf", "timm", "factory")
_FACTORY = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*:[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*$")


class ExternalUnavailable(ImportError):
    """An optional library that a source needs (timm, transformers) is not installed."""


@dataclass(frozen=True)
class ExternalSource:
    """Where an external model comes from.

    Attributes:
        kind: "hf", "timm" or "factory".
        source: the folder, the timm name, or ``package.module:factory``.
        weights: a safetensors / weights-only PyTorch file (timm and factory; optional).
        kwargs: keyword arguments of the factory / ``timm.create_model``.
    """

    kind: str
    source: str
    weights: str | None = None
    kwargs: Mapping[str, Any] | None = None


def detect_kind(source: str) -> str:
    """The kind of ``source``: a folder with ``config.json`` is "hf", ``a.b:c`` is "factory",
    ``timm:<name>`` is "timm".

    Raises:
        ValueError: none of these (the message says what each kind looks like).
    """
    if not isinstance(source, str) or not source:
        raise ValueError(f"source must be a non-empty string, got {source!r}")
    if source.startswith("timm:"):
        return "timm"
    p = Path(source).expanduser()
    if p.is_dir():
        if (p / "config.json").is_file():
            return "hf"
        raise ValueError(
            f"source {source!r} is a folder without config.json: a Hugging Face folder needs "
            "config.json and safetensors weights"
        )
    if _FACTORY.match(source):
        return "factory"
    raise ValueError(
        f"source {source!r} is neither a Hugging Face folder (config.json + safetensors), "
        "'timm:<model name>' nor 'package.module:factory'"
    )


def parse_source(
    source: str,
    *,
    kind: str | None = None,
    weights: str | None = None,
    kwargs: Mapping[str, Any] | None = None,
) -> ExternalSource:
    """An :class:`ExternalSource` from a string (kind detected unless given), checked."""
    kind = detect_kind(source) if kind is None else kind
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {list(KINDS)}, got {kind!r}")
    if kind == "timm" and source.startswith("timm:"):
        source = source[len("timm:") :]
    if kind == "hf" and weights is not None:
        raise ValueError(
            "weights must be None for a Hugging Face folder (its safetensors are used)"
        )
    if kwargs is not None and not isinstance(kwargs, Mapping):
        raise TypeError(f"kwargs must be a mapping, got {type(kwargs).__name__}")
    try:
        json.dumps(dict(kwargs or {}))
    except (TypeError, ValueError) as err:
        raise ValueError(
            f"kwargs must be JSON-serialisable (numbers, strings, lists): {err}"
        ) from None
    return ExternalSource(kind, source, weights, dict(kwargs or {}))


def sources_from_lines(
    text: str, *, kwargs: Mapping[str, Any] | None = None, what: str = "sources"
) -> list[ExternalSource]:
    """One :class:`ExternalSource` per non-empty line of ``text``: ``SOURCE`` or
    ``SOURCE | WEIGHTS_FILE`` (timm / factory weights), kind detected.

    Raises:
        ValueError: every line that does not parse, each named by its number.
    """
    if not isinstance(text, str):
        raise TypeError(f"{what} must be a string of lines, got {type(text).__name__}")
    out: list[ExternalSource] = []
    problems: list[str] = []
    for i, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        src, _, weights = (part.strip() for part in line.partition("|"))
        try:
            out.append(parse_source(src, weights=weights or None, kwargs=kwargs))
        except (ValueError, TypeError) as err:
            problems.append(f"line {i} ({line}): {err}")
    if problems:
        raise ValueError(f"{what} do not parse:\n  " + "\n  ".join(problems))
    return out


# ----------------------------------------------------------------------------- building
def _transformers() -> Any:
    try:
        import transformers
    except ImportError as err:  # pragma: no cover - transformers is a dependency here
        raise ExternalUnavailable(
            "transformers is not installed: pip install transformers"
        ) from err
    return transformers


def _timm() -> Any:
    try:
        import timm  # type: ignore[import-not-found]
    except ImportError as err:
        raise ExternalUnavailable(
            "timm is not installed: pip install timm (the workbench does not depend on it)"
        ) from err
    return timm


def hf_config(folder: str | Path) -> dict[str, Any]:
    """The ``config.json`` of a Hugging Face folder as a dict (validated by transformers)."""
    tr = _transformers()
    p = Path(folder).expanduser()
    if not (p / "config.json").is_file():
        raise ValueError(f"{p} has no config.json (a Hugging Face folder needs one)")
    try:
        cfg = tr.AutoConfig.from_pretrained(str(p), local_files_only=True, trust_remote_code=False)
    except (ValueError, OSError, KeyError) as err:
        raise ValueError(f"{p}/config.json is not a config transformers can build: {err}") from None
    return cfg.to_dict()


def build_external(*, kind: str, source: str, config: str = "", kwargs: str = "{}") -> nn.Module:
    """The architecture of an external model, without loading weights (the zoo's builder).

    Args:
        kind: "hf", "timm" or "factory".
        source: the folder (hf, for provenance), timm name, or ``package.module:factory``.
        config: hf: the JSON of the model's config (rebuilt with ``AutoModel.from_config``).
        kwargs: JSON of the factory's / timm's keyword arguments.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {list(KINDS)}, got {kind!r}")
    try:
        kw = json.loads(kwargs or "{}")
    except json.JSONDecodeError as err:
        raise ValueError(f"kwargs must be a JSON object, got {kwargs!r}: {err}") from None
    if not isinstance(kw, dict):
        raise ValueError(f"kwargs must be a JSON object, got {kwargs!r}")
    if kind == "hf":
        tr = _transformers()
        if not config:
            config = json.dumps(hf_config(source))
        cfg_dict = json.loads(config)
        model_type = cfg_dict.get("model_type")
        if not model_type:
            raise ValueError(f"the config of {source!r} has no model_type")
        cfg = tr.AutoConfig.for_model(**cfg_dict)
        with torch.random.fork_rng(devices=[]):
            model = tr.AutoModel.from_config(cfg)
        return model.eval()
    if kind == "timm":
        return _timm().create_model(source, pretrained=False, **kw)
    return _call_factory(source, kw)


def _call_factory(source: str, kw: Mapping[str, Any]) -> nn.Module:
    if not _FACTORY.match(source):
        raise ValueError(f"source must look like 'package.module:factory', got {source!r}")
    mod_name, attr = source.split(":", 1)
    try:
        obj: Any = importlib.import_module(mod_name)
    except ImportError as err:
        raise ValueError(f"cannot import module {mod_name!r} of {source!r}: {err}") from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"module {mod_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ValueError(f"{source!r} is not callable (got {type(obj).__name__})")
    try:
        model = obj(**kw)
    except TypeError as err:
        raise ValueError(
            f"{source!r} does not accept the keyword arguments {dict(kw)}: {err}"
        ) from None
    if not isinstance(model, nn.Module):
        raise ValueError(
            f"{source!r} must return a torch.nn.Module, returned {type(model).__name__}"
        )
    return model


# Its own registry: pages that list ARCHITECTURES or BACKBONES do not offer it for training;
# ``create_model("external", ...)`` (through ``architecture_entry``) rebuilds stored models.
EXTERNAL: Registry[Any] = Registry("external model")
EXTERNAL.register(
    "external",
    title="External model (Hugging Face folder, timm name, package.module:factory)",
    params=(
        Hyper("kind", "choice", "factory", choices=KINDS, help="where the model comes from"),
        Hyper("source", "str", "", help="folder, timm name or package.module:factory"),
        Hyper("config", "str", "", help="hf: the model's config as JSON"),
        Hyper("kwargs", "str", "{}", help="keyword arguments of the factory / timm, as JSON"),
    ),
)(build_external)


# ----------------------------------------------------------------------------- loading
@dataclass(frozen=True, eq=False)
class LoadedExternal:
    """An external model ready for the zoo: module, weights and the zoo's ``arch_kwargs``."""

    source: ExternalSource
    model: nn.Module
    state_dict: StateDict
    arch_kwargs: dict[str, str]


def load_external(src: ExternalSource) -> LoadedExternal:
    """Build ``src`` and load its weights, checking that they fit (keys, shapes, finite).

    Raises:
        ValueError: the source, its weights or its config do not fit (named in the message).
        ExternalUnavailable: timm (or transformers) is not installed.
    """
    kw_json = json.dumps(dict(src.kwargs or {}), sort_keys=True)
    config = ""
    if src.kind == "hf":
        tr = _transformers()
        folder = Path(src.source).expanduser()
        try:
            hf_folder_tensors(folder)  # safetensors only, every shard inside the folder
        except CheckpointError as err:
            raise ValueError(str(err)) from None
        config = json.dumps(hf_config(folder), sort_keys=True)
        try:
            model, info = tr.AutoModel.from_pretrained(
                str(folder),
                local_files_only=True,
                use_safetensors=True,
                trust_remote_code=False,
                output_loading_info=True,
            )
        except (OSError, ValueError, RuntimeError) as err:
            raise ValueError(f"{folder}: the weights do not load into AutoModel: {err}") from None
        missing = list(info.get("missing_keys", []))
        mismatched = list(info.get("mismatched_keys", []))
        if missing or mismatched:
            raise ValueError(
                f"{folder}: the safetensors do not fit the config: missing {missing[:5]}, "
                f"mismatched shapes {mismatched[:5]}"
            )
        model = model.eval()
    else:
        model = build_external(kind=src.kind, source=src.source, kwargs=kw_json)
        if src.weights is not None:
            try:
                sd = load_checkpoint(src.weights)
            except CheckpointError as err:
                raise ValueError(str(err)) from None
            _load_checked(model, sd, src.weights)
    sd = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    bad = [k for k, v in sd.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise ValueError(f"{src.source}: weights hold NaN or infinite values in {bad[:5]}")
    kwargs = {"kind": src.kind, "source": str(src.source), "config": config, "kwargs": kw_json}
    return LoadedExternal(src, model, sd, kwargs)


def _load_checked(model: nn.Module, sd: Mapping[str, Tensor], where: str) -> None:
    own = model.state_dict()
    missing = sorted(set(own) - set(sd))
    extra = sorted(set(sd) - set(own))
    shapes = [k for k in own if k in sd and tuple(own[k].shape) != tuple(sd[k].shape)]
    if missing or extra or shapes:
        raise ValueError(
            f"{where} does not fit the model: missing {missing[:5]}, unexpected {extra[:5]}, "
            f"other shapes {[(k, tuple(sd[k].shape), tuple(own[k].shape)) for k in shapes[:5]]}"
        )
    model.load_state_dict(dict(sd), strict=True)


# ----------------------------------------------------------------------------- zoo import
def import_external(
    zoo: Any,
    sources: Sequence[ExternalSource],
    *,
    base: ExternalSource | None = None,
    names: Sequence[str] | None = None,
    base_name: str | None = None,
    tasks: Sequence[str] | None = None,
    data: str | None = None,
    replace: bool = False,
    dry_run: bool = False,
) -> list[Any]:
    """Import external models into ``zoo``; with ``base``, as a task-vector set.

    Everything is loaded and checked before the first write: each source builds and its
    weights fit; with a base, every model has the base's keys, shapes and dtypes (so
    τᵢ = θᵢ − θ₀ exists); with ``data`` (see :func:`core.data.user_data.load_eval_data`), the
    data loads and every model maps a batch of it to logits with enough classes.

    Args:
        zoo: a :class:`core.zoo.Zoo`.
        sources: the models (fine-tunes when ``base`` is given), at least one.
        base: the pre-trained model of the set (role "base"; the others become "finetune"
            with this base), or None (each is stored with role "imported").
        names: zoo ids for ``sources`` (default: from the source).
        base_name: zoo id of the base.
        tasks: the task (data) name per source, stored in the index (default "external").
        data: a path to the user's evaluation data, checked against every model.
        replace: overwrite existing ids.
        dry_run: check everything, write nothing (returns ``[]`` when all fits).

    Returns:
        The stored records: the base first (when given), then ``sources`` in order.
    """
    from ..zoo import Zoo

    if not isinstance(zoo, Zoo):
        raise TypeError(f"zoo must be a core.zoo.Zoo, got {type(zoo).__name__}")
    if isinstance(sources, ExternalSource) or not sources:
        raise ValueError("sources must be a non-empty list of ExternalSource")
    ids = list(names) if names is not None else [_default_name(s) for s in sources]
    if len(ids) != len(sources):
        raise ValueError(f"names must have one id per source ({len(sources)}), got {len(ids)}")
    task_names = list(tasks) if tasks is not None else ["external"] * len(sources)
    if len(task_names) != len(sources):
        raise ValueError(
            f"tasks must have one name per source ({len(sources)}), got {len(task_names)}"
        )
    all_ids = ([base_name or _default_name(base)] if base is not None else []) + ids
    if len(set(all_ids)) != len(all_ids):
        raise ValueError(f"zoo ids must be distinct, got {all_ids}")
    taken = [i for i in all_ids if i in zoo]
    if taken and not replace:
        raise ValueError(f"ids already in the zoo: {taken} (pass replace=True to overwrite)")
    problems: list[str] = []
    loaded: list[LoadedExternal | None] = []
    for label, src in [
        *([("base", base)] if base is not None else []),
        *zip(ids, sources, strict=True),
    ]:
        assert src is not None
        try:
            loaded.append(load_external(src))
        except (ValueError, ExternalUnavailable) as err:
            problems.append(f"{label} ({src.source}): {err}")
            loaded.append(None)
    if problems:
        raise ValueError("cannot import:\n  " + "\n  ".join(problems))
    items = [x for x in loaded if x is not None]
    if base is not None:
        try:
            check_compatible([x.state_dict for x in items], all_ids)
        except ValueError as err:
            raise ValueError(
                f"the models do not form a task-vector set with the base: {err}"
            ) from None
    if data is not None:
        from ..data.user_data import check_data_fits, load_eval_data

        ev = load_eval_data(data)
        for mid, x in zip(all_ids, items, strict=True):
            try:
                check_data_fits(x.model, ev, source=x.source)
            except ValueError as err:
                problems.append(f"{mid}: {err}")
        if problems:
            raise ValueError(f"the data {data} does not fit:\n  " + "\n  ".join(problems))
    if dry_run:
        return []
    records = []
    base_id = None
    if base is not None:
        b = items.pop(0)
        rec = zoo.add(
            b.state_dict,
            arch="external",
            arch_kwargs=b.arch_kwargs,
            task="+".join(dict.fromkeys(task_names)),
            role="base",
            name=all_ids[0],
            note=f"imported from {b.source.kind} {b.source.source}",
            replace=replace,
        )
        records.append(rec)
        base_id = rec.id
    for mid, task, x in zip(ids, task_names, items, strict=True):
        records.append(
            zoo.add(
                x.state_dict,
                arch="external",
                arch_kwargs=x.arch_kwargs,
                task=task,
                role="finetune" if base_id else "imported",
                name=mid,
                parent_id=base_id,
                base_id=base_id,
                note=f"imported from {x.source.kind} {x.source.source}",
                replace=replace,
            )
        )
    return records


def _default_name(src: ExternalSource | None) -> str:
    assert src is not None
    if src.kind == "hf":
        return Path(src.source).expanduser().resolve().name
    return src.source.replace(":", "-").split(".")[-1]


def task_vector_set(
    zoo: Any, base_id: str, model_ids: Sequence[str]
) -> tuple[StateDict, list[StateDict]]:
    """The base's and the models' state dicts from the zoo, checked to form a task-vector set
    (same keys, shapes, dtypes): ``core.merge.merge(method, models, base=base)`` takes them."""
    if isinstance(model_ids, str) or not model_ids:
        raise ValueError(f"model_ids must be a non-empty list of zoo ids, got {model_ids!r}")
    base = zoo.state_dict(base_id)
    models = [zoo.state_dict(i) for i in model_ids]
    check_compatible([base, *models], [base_id, *model_ids])
    return base, models
