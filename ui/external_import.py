"""The Model Zoo's "Import external models" tab: bring your own model set and evaluation data.

A base and its fine-tunes from Hugging Face folders, ``timm:<name>`` or
``package.module:factory`` (optionally ``| weights.safetensors``), plus the user's evaluation
data; :func:`core.models.external.import_external` checks everything before anything is
written, and each thing that does not fit is listed by name.
"""

from __future__ import annotations

import json

import streamlit as st

from core.models.external import import_external, parse_source, sources_from_lines
from core.zoo import Zoo

HELP = (
    "One model per line: a Hugging Face folder (config.json + safetensors), `timm:<name>` "
    "(needs timm) or `package.module:factory`; add ` | path/to/weights.safetensors` for the "
    "weights of a timm / factory model."
)


def _problems(err: BaseException) -> list[str]:
    """The lines of an import error: the headline, then one per thing that does not fit."""
    text = str(err.args[0]) if isinstance(err, KeyError) and err.args else str(err)
    return [line.strip() for line in text.splitlines() if line.strip()]


def import_panel(zoo: Zoo) -> None:
    """Draw the form; "Check" validates only, "Import" validates and stores."""
    st.caption(
        "Import a base model and its fine-tunes as a task-vector set (or unrelated models "
        "without a base), with your own evaluation data. Everything is checked before "
        "anything is stored. " + HELP
    )
    with st.form("zoo.ext_form", enter_to_submit=False):
        c1, c2 = st.columns(2)
        base = c1.text_input(
            "Base (pre-trained) model", key="zoo.ext_base", help="empty: no task-vector set"
        )
        base_name = c2.text_input("Zoo id of the base (optional)", key="zoo.ext_base_name")
        sources = st.text_area("Fine-tuned models, one per line", key="zoo.ext_sources", help=HELP)
        c3, c4 = st.columns(2)
        names = c3.text_input(
            "Zoo ids, one per model, space-separated (optional)", key="zoo.ext_names"
        )
        tasks = c4.text_input(
            "Task name per model, space-separated (optional)", key="zoo.ext_tasks"
        )
        c5, c6 = st.columns(2)
        kwargs = c5.text_input(
            "Factory / timm keyword arguments (JSON)", value="{}", key="zoo.ext_kwargs"
        )
        data = c6.text_input(
            "Evaluation data (ImageFolder, .npz, IDX or a text,label CSV; optional)",
            key="zoo.ext_data",
        )
        replace = st.checkbox("Overwrite existing ids", key="zoo.ext_replace")
        b1, b2 = st.columns([1, 5])
        check = b1.form_submit_button("Check", key="zoo.ext_check")
        go = b2.form_submit_button("Import", type="primary", key="zoo.ext_import")
    if not (check or go):
        return
    try:
        try:
            kw = json.loads(kwargs or "{}")
        except json.JSONDecodeError as err:
            raise ValueError(f"the keyword arguments must be JSON: {err}") from None
        if not isinstance(kw, dict):
            raise ValueError(f"the keyword arguments must be a JSON object, got {kwargs!r}")
        srcs = sources_from_lines(sources, kwargs=kw, what="the fine-tuned models")
        if not srcs:
            raise ValueError("list at least one model (one per line)")
        base_src = parse_source(base.strip(), kwargs=kw) if base.strip() else None
        recs = import_external(
            zoo,
            srcs,
            base=base_src,
            names=names.split() or None,
            base_name=base_name.strip() or None,
            tasks=tasks.split() or None,
            data=data.strip() or None,
            replace=bool(replace),
            dry_run=not go,
        )
    except (ValueError, TypeError, KeyError, FileNotFoundError, ImportError) as err:
        lines = _problems(err)
        st.error(
            "**The import does not fit** — nothing was stored.\n\n"
            + "\n".join(f"- {line}" for line in lines)
        )
        return
    except Exception as err:  # noqa: BLE001 - the UI must never show a traceback
        st.error(f"The import failed with an unexpected {type(err).__name__}: {err}")
        return
    n = len(srcs) + (base_src is not None)
    if not go:
        st.success(
            f"All {n} models load and fit"
            + (" together as a task-vector set" if base_src else "")
            + (" and the evaluation data" if data.strip() else "")
            + ". Press **Import** to store them."
        )
        return
    st.success(
        "Imported "
        + ", ".join(f"**{r.id}** ({r.role})" for r in recs)
        + (". Pick the base in the Merge Lab's task-vector setting." if base_src else ".")
    )
