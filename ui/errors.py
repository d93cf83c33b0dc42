"""Turn expected errors into readable messages instead of tracebacks."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import streamlit as st
from streamlit.runtime.scriptrunner_utils.exceptions import RerunException, StopException

from core.data import DatasetUnavailable
from core.io import CheckpointError
from core.train import TrainingCancelled

EXPECTED = (
    ValueError,
    TypeError,
    KeyError,
    FileNotFoundError,
    DatasetUnavailable,
    CheckpointError,
    TrainingCancelled,
)


def message_of(err: BaseException) -> str:
    """The user-facing text of an error (KeyError's quotes removed)."""
    if isinstance(err, KeyError) and err.args:
        return str(err.args[0])
    return str(err) or type(err).__name__


@contextlib.contextmanager
def shown_errors(action: str = "That", hint: str = "") -> Iterator[None]:
    """Show expected errors with ``st.error`` (and an optional hint); the page stays usable.

    Unexpected errors are shown too, with their type, but never as a traceback.
    """
    try:
        yield
    except EXPECTED as err:
        st.error(f"{action} did not work: {message_of(err)}" + (f"\n\n{hint}" if hint else ""))
    except (StopException, RerunException):
        raise
    except Exception as err:  # noqa: BLE001 - the UI must never show a traceback
        st.error(f"{action} failed with an unexpected {type(err).__name__}: {err}")
