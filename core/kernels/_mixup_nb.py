"""numba kernel of the CPU mixup (imported on first use). Module level, so ``cache=True`` works.

``rows_lerp`` evaluates torch's ``lerp(start, end, w)`` exactly as its vectorised CPU kernel does
(``fma(coeff, end − start, base)`` with coeff = w, base = start for |w| < 0.5, else coeff = w − 1,
base = end; ``contract`` lets LLVM emit the same fused multiply-add), so the results are
bit-identical to ``torch.lerp`` (tests pin it) — in one parallel region for the whole batch
instead of one torch call per row, which stalled at every row when the cores were shared.
"""

# mypy: ignore-errors
from __future__ import annotations

from numba import njit, prange


@njit(parallel=True, fastmath={"contract"}, cache=True)
def rows_lerp(x, partner, w, out):
    n, d = x.shape
    for i in prange(n):
        wi = w[i]
        small = abs(wi) < 0.5
        coeff = wi if small else wi - x.dtype.type(1.0)
        a = x[partner[i]]
        b = x[i]
        o = out[i]
        if small:
            for j in range(d):
                o[j] = a[j] + coeff * (b[j] - a[j])
        else:
            for j in range(d):
                o[j] = b[j] + coeff * (b[j] - a[j])


@njit(parallel=True, cache=True)
def paste_rows(x, partner, boxes, out):
    """out[i] = x[i] with the box (y0, y1, x0, x1) of row i taken from x[partner[i]]: every
    output pixel written once, one parallel region over (row, channel) planes."""
    n, c, h, w = x.shape
    for k in prange(n * c):
        i = k // c
        ch = k % c
        y0, y1, x0, x1 = boxes[i, 0], boxes[i, 1], boxes[i, 2], boxes[i, 3]
        src = x[i, ch]
        other = x[partner[i], ch]
        dst = out[i, ch]
        for yy in range(h):
            if yy >= y0 and yy < y1 and x1 > x0:
                dst[yy, :x0] = src[yy, :x0]
                dst[yy, x0:x1] = other[yy, x0:x1]
                dst[yy, x1:] = src[yy, x1:]
            else:
                dst[yy, :] = src[yy, :]
