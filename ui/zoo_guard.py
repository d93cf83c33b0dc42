"""Open the workspace's zoo for a page, or say what is wrong with it and the way out.

A damaged index offers a Repair button (``core.zoo.repair``: the damaged index is kept beside
the new one); a read-only workspace is opened for reading with a note; checkpoints that the
index does not list are pointed out with the same Repair button.
"""

from __future__ import annotations

import streamlit as st

from core.zoo import WorkspaceError, Zoo, repair

from . import cache

_REPORT = "zoo_guard.report"
_OTHER = "Or choose another workspace folder under **Settings** in the sidebar."


def _repair_button(workspace: str, key: str) -> None:
    if st.button("Repair the index", key=f"{key}.repair", type="primary"):
        try:
            report = repair(workspace)
        except WorkspaceError as err:
            st.error(f"Repair did not work: {err}")
            st.stop()
        cache.zoo.clear()
        st.session_state[_REPORT] = report.summary()
        st.rerun()


def open_zoo(workspace: str, *, key: str) -> Zoo:
    """The zoo of ``workspace``; on a workspace fault, an error with the way out, then stop.

    ``key`` prefixes the widget keys (``"<page>"``).
    """
    done = st.session_state.pop(_REPORT, None)
    if done:
        st.success("Index repaired.\n\n" + done.replace("\n", "  \n"))
    try:
        zoo = cache.zoo(workspace)
        zoo.list()  # reads every row: damage found after the zoo was opened shows here too
    except WorkspaceError as err:
        cache.zoo.clear()
        st.error(f"The workspace cannot be used: {err}")
        if err.repairable:
            _repair_button(workspace, key)
        st.info(_OTHER)
        st.stop()
    if zoo.read_only:
        st.warning(
            "This workspace is **read-only**: its models are listed, loaded and merged from, "
            "but nothing can be built, trained, imported or deleted here. " + _OTHER
        )
        return zoo
    orphans = zoo.orphans()
    if orphans:
        names = ", ".join(p.name for p in orphans[:5]) + (" …" if len(orphans) > 5 else "")
        st.warning(
            f"{len(orphans)} checkpoint(s) in `models/` are not in the index ({names}): the "
            "index was damaged or replaced. Repair lists them again from their metadata."
        )
        _repair_button(workspace, key)
    return zoo
