"""Numbers as a paper prints them (shared by figures and the pages' tables)."""

from __future__ import annotations

import math

REFERENCE = "ref"


def p_value_text(p: float | None) -> str:
    """A p-value as a paper prints it: "ref" for the reference (None), three decimals from
    0.001 up, scientific notation below ("3.2e-14"), "< 1e-300" where it underflowed to 0.

    Raises:
        TypeError: ``p`` is not a number or None.
        ValueError: ``p`` is outside [0, 1] or NaN.
    """
    if p is None:
        return REFERENCE
    if isinstance(p, bool) or not isinstance(p, int | float):
        raise TypeError(f"p must be a float in [0, 1] or None, got {type(p).__name__}")
    if math.isnan(p) or not 0.0 <= p <= 1.0:
        raise ValueError(f"p must be in [0, 1] or None, got {p!r}")
    if p == 0.0:
        return "< 1e-300"
    if p >= 1e-3:
        return f"{p:.3f}"
    return f"{p:.1e}".replace("e-0", "e-")
