"""mergekit's YAML merge configuration, read so that existing configs run unchanged.

Supported (mergekit README / ``config.py`` semantics)::

    merge_method: ties            # linear, task_arithmetic, ties, dare_ties, dare_linear,
                                  # breadcrumbs, slerp, model_stock (whatever core.merge has)
    base_model: ./base            # folder with *.safetensors (+ index) or one .safetensors file
    models:
      - model: ./ft-a
        parameters: {weight: 1.0, density: 0.5}
      - model: ./ft-b
        parameters:
          weight: [0.2, 0.8]      # gradient: interpolated over normalised layer depth
          density:
            - filter: mlp         # first entry whose filter is a substring of the tensor name
              value: 0.3
            - value: 0.6          # no filter: the fallback
    parameters: {lambda: 1.0, normalize: true}   # global; a model's own value wins
    dtype: float32                # working dtype (inputs are cast to it)
    out_dtype: bfloat16           # stored dtype (default: dtype, else the inputs')
    tokenizer_source: base        # which model's non-weight files are copied

Workbench extensions (ignored by mergekit): ``parameters: {trim: global}`` selects the TIES
paper's model-wide trim instead of mergekit's per-tensor one; ``disjoint: sum``.

The mergekit-family methods (della, della_linear, breadcrumbs_ties, sce, ram, ramplus_tl,
nuslerp, multislerp, karcher, nearswap, arcee_fusion) take mergekit's parameters
(:mod:`core.stream.family`); ``merge_method: passthrough`` with ``slices:`` (frankenmerges,
depth up-scaling) is planned by :mod:`core.stream.slices`, which :func:`stream_merge` hands
such configs to, and slices with several sources merged by a method by
:mod:`core.stream.slice_merge`. Not supported, with a clear error: ``modules`` and models given
as Hugging Face hub ids (nothing is downloaded: point at a local folder).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml

from .._checks import check_range, kind_of
from ..merge import METHODS
from .family import (
    FAMILY_CHOICES,
    FAMILY_FLAGS,
    FAMILY_NEEDS_BASE,
    FAMILY_NUMBERS,
    check_arity,
)
from .st_io import StreamError


# mergekit name -> core.merge method: the ``mergekit`` field of the registry entries
def mergekit_names(entries: Sequence[Any]) -> dict[str, str]:
    """mergekit name -> method name over registry entries (their ``mergekit`` field).

    Raises:
        ValueError: a mergekit name claimed by two methods.
    """
    out: dict[str, str] = {}
    for entry in entries:
        for mk in getattr(entry, "mergekit", ()):
            if mk in out:
                raise ValueError(
                    f"mergekit name {mk!r} is claimed by both {out[mk]!r} and {entry.name!r}"
                )
            out[mk] = entry.name
    return out


METHOD_ALIASES: dict[str, str] = mergekit_names(METHODS.entries())
NEEDS_BASE = {
    "task_arithmetic",
    "ties",
    "dare_ties",
    "dare_linear",
    "breadcrumbs",
    "slerp",
    "model_stock",
}
NEEDS_BASE |= FAMILY_NEEDS_BASE
DTYPE_NAMES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float16": torch.float16,
    "fp16": torch.float16,
    "half": torch.float16,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float64": torch.float64,
}
_TOP_KEYS = {
    "merge_method",
    "base_model",
    "models",
    "parameters",
    "dtype",
    "out_dtype",
    "tokenizer_source",
    "tokenizer",
    "chat_template",
    "name",
}
_LAYER = re.compile(r"(?:^|\.)(?:layers|layer|h|blocks|block)\.(\d+)(?:\.|$)")


@dataclass(frozen=True)
class ModelEntry:
    """One input model: the reference as written, its resolved path and its parameters."""

    model: str
    path: Path
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class MergeConfig:
    """A parsed merge configuration.

    Attributes:
        merge_method: the mergekit method name as written ("linear", "ties", ...).
        models: the input models in config order (may include the base model).
        base: the base model entry, or None.
        parameters: global parameters (model parameters take precedence).
        dtype: working dtype, or None (the inputs' own).
        out_dtype: stored dtype, or None (``dtype``, else the inputs').
        tokenizer_source: model whose non-weight files are copied, or None (base, else first).
        raw: the configuration as read (written beside the output as the recipe).
    """

    merge_method: str
    models: tuple[ModelEntry, ...]
    base: ModelEntry | None
    parameters: dict[str, Any]
    dtype: torch.dtype | None
    out_dtype: torch.dtype | None
    tokenizer_source: Path | None
    raw: dict[str, Any]

    @property
    def method(self) -> str:
        """The core.merge method that runs this config."""
        return METHOD_ALIASES[self.merge_method]

    def merged_models(self) -> list[ModelEntry]:
        """The models whose tensors enter the method (the base excluded for task-vector
        methods; for slerp the base first, then the other model)."""
        if self.merge_method == "linear" or self.base is None:
            return list(self.models)
        others = [m for m in self.models if m.path != self.base.path]
        if self.merge_method == "slerp":
            return others
        return others


def load_config(
    source: str | Path | Mapping[str, Any], *, root: str | Path | None = None
) -> MergeConfig:
    """Read a mergekit-style merge configuration.

    Args:
        source: a YAML file path, or the already-parsed mapping.
        root: folder that relative model paths are resolved against when they do not exist
            relative to the working directory (default: the YAML file's folder).

    Raises:
        StreamError: unknown keys or method, unsupported features, missing models, bad dtypes,
            a parameter value that is not what its name needs (named as written, e.g.
            ``models[1].parameters.density``), a ``tokenizer_source`` that is not one of the
            models, a file that is not UTF-8 YAML, or a config that refers to itself.
    """
    if isinstance(source, Mapping):
        raw = dict(source)
        base_dir = Path(root) if root is not None else Path.cwd()
    elif isinstance(source, str | Path):
        p = Path(source)
        if not p.is_file():
            raise StreamError(f"config file not found: {p}")
        try:
            raw = yaml.safe_load(p.read_text(encoding="utf-8"))
        except UnicodeDecodeError:
            raise StreamError(f"{p} is not UTF-8 text (a merge config is a YAML file)") from None
        except OSError as err:
            raise StreamError(f"{p} cannot be read: {err.strerror or err}") from None
        except yaml.YAMLError as err:
            raise StreamError(f"{p} is not valid YAML: {err}") from None
        except RecursionError:
            raise StreamError(f"{p} is not valid YAML: it nests too deeply") from None
        if not isinstance(raw, dict):
            raise StreamError(f"{p} must hold a mapping at the top level, got {kind_of(raw)}")
        base_dir = Path(root) if root is not None else p.parent
    else:
        raise TypeError(f"source must be a path or a mapping, got {type(source).__name__}")
    _check_acyclic(raw)
    if raw.get("slices") is not None:
        raise StreamError(
            "a 'slices:' config (layer ranges) is planned by stream_merge (core.stream.slices "
            "for passthrough, core.stream.slice_merge for a merge method), not by load_config"
        )
    if raw.get("modules") is not None:
        raise StreamError(
            "config key 'modules' (per-module merges) is not supported by the streaming "
            "engine; list whole models under 'models:' or layer ranges under 'slices:'"
        )
    unknown = sorted(set(raw) - _TOP_KEYS, key=str)
    if unknown:
        raise StreamError(f"unknown config key(s) {unknown}; expected some of {sorted(_TOP_KEYS)}")
    method = raw.get("merge_method")
    if not isinstance(method, str) or method not in METHOD_ALIASES:
        raise StreamError(f"merge_method must be one of {sorted(METHOD_ALIASES)}, got {method!r}")
    models_raw = raw.get("models")
    if not isinstance(models_raw, list) or not models_raw:
        raise StreamError(
            "config needs 'models:', a non-empty list of {model: PATH, parameters: {...}}"
        )
    models = tuple(_entry(m, i, base_dir) for i, m in enumerate(models_raw))
    base = None
    if raw.get("base_model") is not None:
        ref = _reference(raw["base_model"], "base_model")
        base = ModelEntry(ref, _resolve(ref, base_dir, "base_model"))
    elif method in NEEDS_BASE:
        raise StreamError(f"merge_method {method!r} needs base_model, got none")
    params = raw.get("parameters") or {}
    if not isinstance(params, dict):
        raise StreamError(f"parameters must be a mapping, got {kind_of(params)}")
    check_parameters(params, "parameters")
    tok_path = _tokenizer_source(raw.get("tokenizer_source"), base, models, base_dir)
    cfg = MergeConfig(
        merge_method=method,
        models=models,
        base=base,
        parameters=dict(params),
        dtype=_dtype(raw.get("dtype"), "dtype"),
        out_dtype=_dtype(raw.get("out_dtype"), "out_dtype"),
        tokenizer_source=tok_path,
        raw=raw,
    )
    n = len(cfg.merged_models())
    if method == "slerp" and n != 1:
        raise StreamError(f"slerp merges base_model with exactly 1 other model, got {n}")
    if n == 0:
        raise StreamError("config lists no model to merge besides base_model")
    check_arity(cfg)
    return cfg


MAX_CONFIG_VALUES = 100_000  # a merge config has hundreds; YAML aliases can make billions


def _check_acyclic(raw: object) -> None:
    """Refuse a configuration that contains itself (a YAML alias inside its own value), nests
    deeper than 50 levels, or expands through aliases to more than ``MAX_CONFIG_VALUES``
    values (it is written out in full as the recipe)."""
    sizes: dict[int, int] = {}

    def size(node: object, stack: set[int], depth: int) -> int:
        if not isinstance(node, dict | list):
            return 1
        key = id(node)
        if key in stack:
            raise StreamError("the config refers to itself (a YAML alias inside its own value)")
        if key in sizes:
            return sizes[key]
        if depth > 50:
            raise StreamError("the config nests more than 50 levels deep")
        stack.add(key)
        n = 1 + sum(
            size(v, stack, depth + 1) for v in (node.values() if isinstance(node, dict) else node)
        )
        stack.discard(key)
        if n > MAX_CONFIG_VALUES:
            raise StreamError(
                f"the config expands to more than {MAX_CONFIG_VALUES} values (YAML aliases?)"
            )
        sizes[key] = n
        return n

    size(raw, set(), 0)


def _entry(m: object, i: int, base_dir: Path) -> ModelEntry:
    if isinstance(m, str):
        m = {"model": m}
    if not isinstance(m, dict) or "model" not in m:
        raise StreamError(f"models[{i}] must be a mapping with a 'model' key, got {m!r}")
    params = m.get("parameters") or {}
    if not isinstance(params, dict):
        raise StreamError(f"models[{i}].parameters must be a mapping, got {kind_of(params)}")
    check_parameters(params, f"models[{i}].parameters")
    ref = _reference(m["model"], f"models[{i}].model")
    return ModelEntry(ref, _resolve(ref, base_dir, f"models[{i}].model"), dict(params))


def _reference(ref: object, what: str) -> str:
    if isinstance(ref, Path):
        return str(ref)
    if not isinstance(ref, str) or not ref:
        raise StreamError(
            f"{what} must be the path of a model folder or .safetensors file, got "
            f"{kind_of(ref)} {ref!r}"
        )
    return ref


def _tokenizer_source(
    tok: object, base: ModelEntry | None, models: Sequence[ModelEntry], base_dir: Path
) -> Path | None:
    """The model whose non-weight files are copied: "base", "union" (the default source) or
    one of the config's models. Any other folder is refused: a config is often someone
    else's, and the files of the named folder end up in the output."""
    if tok is None or tok == "union":
        return None
    if tok == "base":
        return None if base is None else base.path
    ref = _reference(tok, "tokenizer_source")
    path = _resolve(ref, base_dir, "tokenizer_source")
    known = [m.path for m in models] + ([] if base is None else [base.path])
    if path not in known:
        raise StreamError(
            f"tokenizer_source must be 'base', 'union' or one of the models of the merge "
            f"(base_model or models:), got {ref!r} ({path}); its files are copied into the output"
        )
    return path


def _resolve(ref: str, base_dir: Path, what: str) -> Path:
    if "+" in ref and not Path(ref).exists():
        raise StreamError(f"{what}: LoRA references ('model+lora') are not supported, got {ref!r}")
    p = Path(ref).expanduser()
    for cand in (p, base_dir / p):
        if cand.exists():
            return cand.resolve()
    raise StreamError(
        f"{what}: {ref!r} not found (looked in {Path.cwd()} and {base_dir}); models must be local "
        "folders with .safetensors weights or .safetensors files (nothing is downloaded)"
    )


def _dtype(name: object, what: str) -> torch.dtype | None:
    if name is None:
        return None
    if not isinstance(name, str) or name not in DTYPE_NAMES:
        raise StreamError(f"{what} must be one of {sorted(DTYPE_NAMES)}, got {name!r}")
    return DTYPE_NAMES[str(name)]


# What each mergekit parameter may hold: (low, high, low inclusive, high inclusive, meaning) for
# numbers (None: any finite number), True for true/false, a tuple for a choice. Parameters not
# listed are mergekit options this engine does not use; they are kept in the recipe unchecked.
_NUMBERS: dict[str, tuple[float | None, float | None, bool, bool, str]] = {
    "weight": (None, None, True, True, "the model's weight"),
    "lambda": (None, None, True, True, "the scale of the merged task vector"),
    "density": (0, 1, False, True, "the fraction of each task vector kept"),
    "t": (0, 1, True, True, "the interpolation point between base_model and the model"),
    "gamma": (0, 1, True, False, "the fraction of the largest entries removed"),
    "epsilon": (0, 1, True, False, "the spread of the keep probabilities"),
}
_FLAGS: tuple[str, ...] = ("normalize", "int8_mask", "rescale")
_CHOICES: dict[str, tuple[str, ...]] = {"trim": ("tensor", "global"), "disjoint": ("mean", "sum")}
_NUMBERS.update(FAMILY_NUMBERS)  # the mergekit family's parameters (core/stream/family.py)
_FLAGS = (*_FLAGS, *FAMILY_FLAGS)
_CHOICES.update(FAMILY_CHOICES)


def check_parameters(params: Mapping[Any, Any], where: str) -> None:
    """Check every value of a ``parameters:`` mapping, scalars, gradients and filter entries
    alike, so that a bad value is reported as written and where (``models[1].parameters.
    density``) before any tensor is read.

    Raises:
        StreamError: naming the parameter, what it must be and the value given.
    """
    for key, setting in params.items():
        if key in _NUMBERS or key in _FLAGS or key in _CHOICES:
            _check_setting(str(key), setting, f"{where}.{key}")


def _check_setting(key: str, setting: Any, where: str) -> None:
    if setting is None:
        return
    if isinstance(setting, dict):
        setting = [setting]
        items = [(where, setting[0])]
    elif isinstance(setting, list):
        items = [(f"{where}[{i}]", v) for i, v in enumerate(setting)]
    else:
        _check_value(key, setting, where)
        return
    if all(isinstance(v, dict) for _, v in items):
        for loc, cond in items:
            extra = sorted(set(cond) - {"filter", "value"}, key=str)
            if extra:
                raise StreamError(f"{loc} has unknown key(s) {extra}; expected filter and value")
            f = cond.get("filter")
            if f is not None and not isinstance(f, str):
                raise StreamError(
                    f"{loc}.filter must be text (a part of tensor names), got {kind_of(f)} {f!r}"
                )
            if "value" not in cond:
                raise StreamError(f"{loc} has no 'value' (expected {{filter: ..., value: ...}})")
            _check_setting(key, cond["value"], f"{loc}.value")
        return
    if any(isinstance(v, dict | list) for _, v in items):
        raise StreamError(
            f"{where} must be a value, a list of numbers (a gradient over the layers) or a list "
            f"of {{filter, value}} entries, got {setting!r}"
        )
    for loc, v in items:
        _check_value(key, v, loc)


def _check_value(key: str, value: Any, where: str) -> None:
    if key in _NUMBERS:
        low, high, low_inc, high_inc, meaning = _NUMBERS[key]
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise StreamError(
                f"{where} must be a number, got {kind_of(value)} {value!r} ({key}: {meaning})"
            )
        try:
            check_range(where, value, low, high, low_inclusive=low_inc, high_inclusive=high_inc)
        except (TypeError, ValueError) as err:
            raise StreamError(f"{err} ({key}: {meaning})") from None
    elif key in _FLAGS and not isinstance(value, bool):
        raise StreamError(f"{where} must be true or false, got {value!r}")
    elif key in _CHOICES and value not in _CHOICES[key]:
        raise StreamError(f"{where} must be one of {list(_CHOICES[key])}, got {value!r}")


def evaluate_setting(setting: Any, tensor_name: str, t: float) -> Any:
    """Resolve one parameter setting for a tensor.

    A scalar is itself; a list of numbers is a gradient, linearly interpolated at ``t``
    (normalised layer depth in [0, 1]); a ``{filter, value}`` mapping or a list of them picks
    the first whose filter is absent, ``"*"`` or a substring of ``tensor_name`` (None when
    nothing matches).
    """
    if isinstance(setting, dict):
        setting = [setting]
    if isinstance(setting, bool | int | float | str) or setting is None:
        return setting
    if not isinstance(setting, list):
        raise StreamError(
            f"parameter value must be a scalar, list or filter mapping, got {setting!r}"
        )
    if not setting:
        return None
    if all(isinstance(v, int | float) and not isinstance(v, bool) for v in setting):
        scaled = t * (len(setting) - 1)
        i0 = min(int(math.floor(scaled)), len(setting) - 1)
        i1 = min(len(setting) - 1, i0 + 1)
        frac = scaled - i0
        return (1 - frac) * float(setting[i0]) + frac * float(setting[i1])
    if all(isinstance(v, dict) for v in setting):
        for cond in setting:
            f = cond.get("filter")
            if f is None or f == "*" or f in tensor_name:
                if "value" not in cond:
                    raise StreamError(f"filter entry {cond!r} has no 'value'")
                return evaluate_setting(cond["value"], tensor_name, t)
        return None
    if all(isinstance(v, bool | str) for v in setting):
        return setting[int(t * (len(setting) - 1))]
    raise StreamError(f"cannot mix numbers and filter entries in one parameter: {setting!r}")


def layer_depths(names: Sequence[str]) -> dict[str, float]:
    """Normalised layer depth t per tensor name, as mergekit assigns it.

    The layer index comes from ``...layers.<i>.`` (also ``h``, ``blocks``, ``layer``,
    ``block``); with L layers a tensor of layer i gets i / (L − 1) (1 when L = 1). Tensors
    outside the layer stack (embeddings, final norm, head) get 0, like mergekit's pre/post
    weights.
    """
    idx: dict[str, int] = {}
    for n in names:
        m = _LAYER.search(n)
        if m:
            idx[n] = int(m.group(1))
    n_layers = max(idx.values()) + 1 if idx else 0
    out = {}
    for n in names:
        if n not in idx:
            out[n] = 0.0
        else:
            out[n] = idx[n] / (n_layers - 1) if n_layers > 1 else 1.0
    return out


def parameter(
    cfg: MergeConfig, model: ModelEntry | None, key: str, tensor: str, t: float, default: Any
) -> Any:
    """A parameter for one tensor: the model's own setting, else the global one, else default."""
    for source in ((model.parameters if model is not None else {}), cfg.parameters):
        if key in source:
            value = evaluate_setting(source[key], tensor, t)
            if value is not None:
                return value
    return default
