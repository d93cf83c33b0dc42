"""FMix: binary masks from thresholded low-frequency Fourier noise.

Harris, Marcu, Painter, Niranjan, Prügel-Bennett, Hare, "FMix: Enhancing Mixed Sample Data
Augmentation", arXiv:2002.12047. A complex Gaussian spectrum scaled by 1 / f^δ (δ = decay power)
is transformed back to a grey image; its top round(λ H W) pixels become 1, so the mask mean is λ
to within half a pixel. Unlike the reference (one numpy mask per batch), masks here are drawn for
the whole batch at once in torch, one per row when ``per_sample``; the top-k set is found with a
linear-time selection (numpy ``partition``) of the threshold per row rather than a full sort.
"""

from __future__ import annotations

import functools
import itertools
import threading
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from .._checks import check_int, check_range, check_tensor
from .._registry import Hyper
from ._base import (
    MIXERS,
    MixResult,
    check_image_shape,
    check_images,
    check_targets,
    mask_mix,
    mix_targets,
    sample_lam,
    sample_partner,
)


@dataclass(frozen=True)
class FMixParams:
    """Sampled FMix parameters.

    Attributes:
        mask: (N or 1, 1, H, W) float in {0, 1}; 1 = own pixel.
        partner: (N,) int64 partner index.
    """

    mask: Tensor
    partner: Tensor


@functools.lru_cache(maxsize=16)
def _spectrum_scale(h: int, w: int, decay_power: float) -> Tensor:
    """(H, W // 2 + 1, 2) amplitude 1 / max(f, 1 / max(H, W))^δ of the half spectrum, repeated
    for the real and imaginary parts (contiguous, so the in-place product is a plain vector op).
    """
    fy = torch.fft.fftfreq(h, dtype=torch.float64).view(h, 1)  # (H, 1)
    fx = torch.fft.rfftfreq(w, dtype=torch.float64).view(1, -1)  # (1, W//2+1)
    f = torch.sqrt(fx * fx + fy * fy)
    scale = (1.0 / f.clamp_min(1.0 / max(h, w)) ** decay_power).float()  # (H, W//2+1)
    return scale.unsqueeze(-1).expand(*scale.shape, 2).contiguous()


def fmix_masks(
    lam: Tensor, h: int, w: int, *, decay_power: float = 3.0, generator: torch.Generator
) -> Tensor:
    """(M, 1, H, W) binary masks whose means are round(λ H W) / (H W), one per λ in ``lam``.

    Vectorised: normal draws straight into the half spectra, one batched inverse FFT, then per
    row the k-th largest grey value as the threshold (numpy's ``partition``, a linear time
    selection several times faster than ``torch.kthvalue`` on CPU) instead of a full sort. The
    draws and the selections, both serial inside torch and numpy, run over a fixed split of the
    rows on up to ``torch.get_num_threads()`` threads (:func:`_row_chunks`); the split, and so the
    masks, do not depend on the thread count.
    Pixel counts are exact: a row whose threshold value is tied (so ``>=`` would keep more than
    k pixels) falls back to taking the top k by rank with a stable sort, which is what
    :func:`_top_k_by_rank` computes for every row (the reference, pinned by the tests). The masks
    are computed on the CPU (the generator is a CPU one), whatever the device of ``lam``.
    """
    check_tensor("lam", lam, ndim=1, floating=True)
    h = check_int("h", h, 1)
    w = check_int("w", w, 1)
    check_range("decay_power", decay_power, 0.0, 10.0)
    lam = lam.detach().cpu()
    if len(lam) and not bool(((lam >= 0) & (lam <= 1)).all()):
        raise ValueError(
            f"lam must hold values in [0, 1], got range [{float(lam.min())}, {float(lam.max())}]"
        )
    m, hw = lam.shape[0], h * w
    grey = _grey_noise(m, h, w, float(decay_power), generator).contiguous()  # (M, HW)
    k = _kept_pixels(lam, hw)  # (M,)
    g = grey.numpy()
    thr = np.full((m, 1), np.inf, dtype=g.dtype)  # (M, 1) k-th largest value per row
    kept = k.tolist()

    def select(a: int, b: int) -> None:
        for i in range(a, b):
            if kept[i]:  # k-th largest = the (HW - k)-th smallest, 0-based
                thr[i, 0] = np.partition(g[i], hw - kept[i])[hw - kept[i]]

    _in_threads(select, _row_chunks(m), parallel=m * hw >= _PARALLEL_MIN)
    mask = np.empty((m, hw), dtype=np.float32)
    np.greater_equal(g, thr, out=mask, casting="unsafe")  # 1.0 where kept, written once
    # float32 sums of 0/1 are exact below 2^24 pixels (count_nonzero on floats is slower)
    counts = mask.sum(axis=1) if hw < 1 << 24 else np.count_nonzero(mask, axis=1)
    tied = np.flatnonzero(counts != k.numpy())  # rows whose threshold value repeats
    if len(tied):
        rows = torch.from_numpy(tied)
        mask[tied] = _top_k_by_rank(grey[rows], k[rows]).numpy()
    return torch.from_numpy(mask).view(m, 1, h, w)


def _grey_noise(m: int, h: int, w: int, decay_power: float, generator: torch.Generator) -> Tensor:
    """(M, H W) grey images: irfft2 of complex Gaussian half spectra scaled by 1 / f^δ.

    The normals are drawn as (M, H, W//2+1, 2) so that they are already the (real, imaginary)
    pairs of a complex tensor: scaled in place and viewed as complex, with no copy. Each chunk of
    rows of :func:`_row_chunks` draws from its own generator seeded from ``generator`` (torch's
    normal sampler is serial, so the chunks can run on several threads).
    """
    scale = _spectrum_scale(h, w, decay_power)  # (H, W//2+1, 2)
    chunks = _row_chunks(m)
    seeds = torch.randint(0, 2**62, (len(chunks),), generator=generator).tolist()
    seed_of = {a: seed for (a, _), seed in zip(chunks, seeds, strict=True)}
    noise = torch.empty(m, *scale.shape)  # (M, H, W//2+1, 2)

    def draw(a: int, b: int) -> None:
        noise[a:b].normal_(generator=torch.Generator().manual_seed(seed_of[a]))

    _in_threads(draw, chunks, parallel=noise.numel() >= _PARALLEL_MIN)
    noise.mul_(scale)  # the same real scale on both parts = complex(re, im) * scale
    spectrum = torch.view_as_complex(noise)  # (M, H, W//2+1)
    return torch.fft.irfft2(spectrum, s=(h, w)).reshape(m, h * w)


_CHUNKS = 4  # row chunks of the draws: fixed, so that the masks do not depend on the threads
_PARALLEL_MIN = 1 << 20  # below this many values, starting threads costs more than it saves


def _row_chunks(m: int) -> list[tuple[int, int]]:
    """Up to ``_CHUNKS`` contiguous (start, stop) row ranges covering ``range(m)``."""
    cuts = [round(i * m / min(m, _CHUNKS)) for i in range(min(m, _CHUNKS) + 1)] if m else [0]
    return list(itertools.pairwise(cuts))


def _in_threads(
    fn: Callable[[int, int], None], chunks: list[tuple[int, int]], *, parallel: bool
) -> None:
    """``fn(a, b)`` for every chunk, on up to ``torch.get_num_threads()`` threads (this one
    included) when ``parallel``; for work that releases the GIL (torch ops, numpy selection).

    Plain threads started per call (no pool that a forked DataLoader worker would inherit dead).
    """
    n = min(len(chunks), torch.get_num_threads()) if parallel else 1
    if n <= 1:
        for a, b in chunks:
            fn(a, b)
        return
    errors: list[BaseException] = []

    def work(part: list[tuple[int, int]]) -> None:
        try:
            for a, b in part:
                fn(a, b)
        except BaseException as err:  # re-raised in the caller's thread
            errors.append(err)

    threads = [threading.Thread(target=work, args=(chunks[t::n],)) for t in range(1, n)]
    for t in threads:
        t.start()
    work(chunks[0::n])
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


def _kept_pixels(lam: Tensor, hw: int) -> Tensor:
    """(M,) int64 number of pixels kept per row: round(λ H W), clamped to [0, H W]."""
    return torch.round(lam.double() * hw).long().clamp(0, hw)


def _top_k_by_rank(grey: Tensor, k: Tensor) -> Tensor:
    """(M, HW) bool: the k[i] largest entries of each row by rank (a descending sort)."""
    order = torch.argsort(grey, dim=1, descending=True, stable=True)  # (M, HW)
    ranks = torch.arange(grey.shape[1]).view(1, -1) < k.view(-1, 1)  # (M, HW)
    return torch.zeros(grey.shape, dtype=torch.bool).scatter_(1, order, ranks)


def sample_fmix(
    shape: tuple[int, ...] | torch.Size,
    *,
    alpha: float = 1.0,
    lam: float | None = None,
    per_sample: bool = False,
    decay_power: float = 3.0,
    generator: torch.Generator,
) -> FMixParams:
    """Draw partners and FMix masks for a batch of ``shape`` (N, C, H, W)."""
    n, _, h, w = check_image_shape("shape", shape)
    check_range("decay_power", decay_power, 0.0, 10.0)
    partner = sample_partner(n, generator)
    m = n if per_sample else 1
    lams = sample_lam(m, alpha=alpha, lam=lam, per_sample=per_sample, generator=generator)
    return FMixParams(
        mask=fmix_masks(lams, h, w, decay_power=decay_power, generator=generator), partner=partner
    )


def apply_fmix(x: Tensor, y: Tensor, params: FMixParams) -> MixResult:
    """Own pixels where the mask is 1, the partner's elsewhere; λ = the mask mean per row."""
    check_images("x", x)
    n, _, h, w = x.shape
    check_targets("y", y, n)
    if not isinstance(params, FMixParams):
        raise TypeError(f"params must be FMixParams, got {type(params).__name__}")
    if params.mask.shape[1:] != (1, h, w) or params.mask.shape[0] not in (1, n):
        raise ValueError(
            f"params.mask must be (N or 1, 1, {h}, {w}), got {tuple(params.mask.shape)}"
        )
    mask = params.mask.to(x.device).expand(n, 1, h, w)
    partner = params.partner.to(x.device)
    lam = mask.mean(dim=(1, 2, 3)).float().cpu()  # (N,) exact own-pixel share
    return MixResult(
        x=mask_mix(x, mask, partner),
        y=mix_targets(y, partner, lam.to(y.device)),
        lam=lam,
        partner=params.partner,
        mask=mask,
        lam_x=lam,
    )


@MIXERS.register(
    "fmix",
    title="FMix",
    paper="https://arxiv.org/abs/2002.12047",
    params=(
        Hyper("alpha", "float", 1.0, 0.05, 4.0, 0.05, help="Beta(α, α) for λ"),
        Hyper(
            "decay_power", "float", 3.0, 1.0, 6.0, 0.5, help="spectrum decay δ: higher, smoother"
        ),
    ),
    tags=("pixel", "mask"),
)
def fmix(
    x: Tensor,
    y: Tensor,
    *,
    alpha: float = 1.0,
    lam: float | None = None,
    per_sample: bool = False,
    decay_power: float = 3.0,
    generator: torch.Generator,
) -> MixResult:
    """Low-frequency Fourier mask with mean λ (to within half a pixel)."""
    check_image_shape("x", check_images("x", x).shape)
    params = sample_fmix(
        x.shape,
        alpha=alpha,
        lam=lam,
        per_sample=per_sample,
        decay_power=decay_power,
        generator=generator,
    )
    return apply_fmix(x, y, params)
