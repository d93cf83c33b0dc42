"""Multi-document merge configs (mergekit-multi): several merges in one YAML file, later ones
using earlier outputs by name.

    name: mid                      # document 1: written to INTERMEDIATE/mid
    merge_method: linear
    models: [{model: ./a}, {model: ./b}]
    ---
    merge_method: della            # document 2 (no name): the final merge, written to OUT
    base_model: ./base
    models: [{model: mid}, {model: ./c}]

As mergekit's ``mergekit-multi``: every document is a merge config plus an optional ``name``; a
model reference (``model``, ``base_model``, a slice source, ``tokenizer_source``) equal to another
document's name means that document's output; documents run in dependency order (cycles and
duplicate names are errors). Named documents are written to ``INTERMEDIATE/<name>``, the final
merge — the unnamed document (at most one), else the last document — to ``OUT``. A named output
that already exists complete (it has its index, written last) is reused unless ``overwrite``
(mergekit's ``--lazy``). Names must be plain folder names (letters, digits, ``_ . -``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .st_io import StreamError

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")


@dataclass(frozen=True)
class Stage:
    """One merge of a multi-document config, references to earlier outputs replaced by paths."""

    name: str | None
    config: dict[str, Any]
    out: Path
    final: bool


def load_documents(path: str | Path) -> list[dict[str, Any]]:
    """Every YAML document of ``path`` (one for an ordinary config)."""
    p = Path(path)
    if not p.is_file():
        raise StreamError(f"config file not found: {p}")
    try:
        docs = [d for d in yaml.safe_load_all(p.read_text(encoding="utf-8")) if d is not None]
    except UnicodeDecodeError:
        raise StreamError(f"{p} is not UTF-8 text (a merge config is a YAML file)") from None
    except OSError as err:
        raise StreamError(f"{p} cannot be read: {err.strerror or err}") from None
    except yaml.YAMLError as err:
        raise StreamError(f"{p} is not valid YAML: {err}") from None
    except RecursionError:
        raise StreamError(f"{p} is not valid YAML: it nests too deeply") from None
    for i, d in enumerate(docs):
        if not isinstance(d, dict):
            raise StreamError(f"{p}: document {i} must be a mapping, got {type(d).__name__}")
    if not docs:
        raise StreamError(f"{p} holds no merge config")
    return docs


def plan_stages(
    docs: Sequence[Mapping[str, Any]], out_dir: Path, intermediate_dir: Path
) -> list[Stage]:
    """The merges in the order they must run, with their output folders."""
    names: list[str | None] = []
    for i, d in enumerate(docs):
        name = d.get("name")
        if name is not None and (not isinstance(name, str) or not _NAME.fullmatch(name)):
            raise StreamError(
                f"document {i}: name must be a plain folder name (letters, digits, _ . -), "
                f"got {name!r}"
            )
        names.append(name)
    named = [n for n in names if n is not None]
    dup = sorted({n for n in named if named.count(n) > 1})
    if dup:
        raise StreamError(f"document names must be unique, got {dup} more than once")
    unnamed = [i for i, n in enumerate(names) if n is None]
    if len(unnamed) > 1:
        raise StreamError(
            f"at most one document may be unnamed (the final merge), got {len(unnamed)}"
        )
    final = unnamed[0] if unnamed else len(docs) - 1
    outs = {n: intermediate_dir / n for n in named}
    clash = sorted(n for n, p in outs.items() if p == out_dir and n != names[final])
    if clash:
        raise StreamError(f"the intermediate output of {clash} would be the final output {out_dir}")
    deps = [_references(d, set(named)) for d in docs]
    for i, used in enumerate(deps):
        if names[i] is not None and names[i] in used:
            raise StreamError(f"document {names[i]!r} uses its own output")
    order: list[int] = []
    state = [0] * len(docs)  # 0 new, 1 visiting, 2 done
    index = {n: i for i, n in enumerate(names) if n is not None}

    def visit(i: int, path: list[str]) -> None:
        if state[i] == 2:
            return
        if state[i] == 1:
            raise StreamError(f"the documents use each other in a cycle: {' -> '.join(path)}")
        state[i] = 1
        for dep in sorted(deps[i]):
            visit(index[dep], [*path, dep])
        state[i] = 2
        order.append(i)

    for i in range(len(docs)):
        visit(i, [str(names[i] or "final")])
    stages = []
    for i in order:
        cfg = _patched({k: v for k, v in docs[i].items() if k != "name"}, outs)
        out = out_dir if i == final else outs[str(names[i])]
        stages.append(Stage(names[i], cfg, out, i == final))
    return stages


def stream_multi(
    path: str | Path,
    out_dir: str | Path,
    *,
    intermediate_dir: str | Path | None = None,
    overwrite: bool = False,
    **kwargs: Any,
) -> list[Any]:
    """Run every merge of a multi-document config; returns their MergeReports (run order;
    None for a reused intermediate output). ``kwargs`` go to :func:`stream_merge`."""
    from .engine import stream_merge
    from .output import INDEX_NAME

    p = Path(path)
    out = Path(out_dir).expanduser().resolve()
    inter = (
        Path(intermediate_dir).expanduser().resolve()
        if intermediate_dir is not None
        else out.parent / f"{out.name}-parts"
    )
    stages = plan_stages(load_documents(p), out, inter)
    reports: list[Any] = []
    for st in stages:
        if not st.final and not overwrite and (st.out / INDEX_NAME).is_file():
            reports.append(None)  # a finished intermediate merge: reused
            continue
        st.out.parent.mkdir(parents=True, exist_ok=True)
        cfg = _rooted(st.config, p.parent)
        reports.append(stream_merge(cfg, st.out, overwrite=overwrite, **kwargs))
    return reports


def _references(doc: Mapping[str, Any], names: set[str]) -> set[str]:
    found: set[str] = set()

    def note(ref: Any) -> Any:
        if isinstance(ref, str) and ref in names:
            found.add(ref)
        return ref

    _map_refs(doc, note)
    return found


def _patched(doc: Mapping[str, Any], outs: Mapping[str, Path]) -> dict[str, Any]:
    """``doc`` with every model reference that names a document replaced by its output."""
    return _map_refs(doc, lambda r: str(outs[r]) if isinstance(r, str) and r in outs else r)


def _rooted(doc: Mapping[str, Any], root: Path) -> dict[str, Any]:
    """Relative model paths resolved against the YAML file's folder (as for one document)."""

    def fix(ref: Any) -> Any:
        if not isinstance(ref, str):
            return ref
        p = Path(ref).expanduser()
        if p.is_absolute() or p.exists() or not (root / p).exists():
            return ref
        return str((root / p).resolve())

    return _map_refs(doc, fix)


def _map_refs(doc: Mapping[str, Any], fix: Any) -> dict[str, Any]:
    """A copy of ``doc`` with ``fix`` applied to every model reference: ``base_model``,
    ``tokenizer_source``, ``models[].model`` (or a bare string) and slice sources' ``model``."""

    def entry(m: Any) -> Any:
        if isinstance(m, Mapping):
            return {**m, "model": fix(m.get("model"))}
        return fix(m) if isinstance(m, str) else m

    out = dict(doc)
    for key in ("base_model", "tokenizer_source"):
        if key in out:
            out[key] = fix(out[key])
    if isinstance(out.get("models"), list):
        out["models"] = [entry(m) for m in out["models"]]
    if isinstance(out.get("slices"), list):
        out["slices"] = [_slice_refs(s, fix, entry) for s in out["slices"]]
    return out


def _slice_refs(s: Any, fix: Any, entry: Any) -> Any:
    """A slice with ``fix`` applied to its sources' models and its own ``base_model``."""
    if not isinstance(s, Mapping):
        return s
    out = {**s, "sources": [entry(src) for src in s.get("sources") or []]}
    if "base_model" in out:
        out["base_model"] = fix(out["base_model"])
    return out
