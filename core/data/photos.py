"""Natural colour photos that ship inside installed packages (scikit-image, scikit-learn,
matplotlib), for mixup galleries. Nothing is downloaded."""

from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

_SKIMAGE = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry")


def _square(img: np.ndarray, size: int) -> Tensor:
    """(H, W, 3) uint8 -> centre-cropped square (3, size, size) float32 in [0, 1]."""
    img = img[..., :3]
    h, w = img.shape[:2]
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    t = torch.from_numpy(np.array(img[top : top + s, left : left + s])).float() / 255.0
    t = t.permute(2, 0, 1).unsqueeze(0)  # (1, 3, s, s)
    return F.interpolate(
        t, size=(size, size), mode="bilinear", antialias=True, align_corners=False
    )[0].clamp(0, 1)


@functools.lru_cache(maxsize=4)
def load_photos(size: int = 128) -> dict[str, Tensor]:
    """About ten real photos as (3, size, size) tensors in [0, 1], keyed by name."""
    if not isinstance(size, int) or not 8 <= size <= 1024:
        raise ValueError(f"size must be an int in [8, 1024], got {size!r}")
    out: dict[str, Tensor] = {}
    import skimage.data

    for name in _SKIMAGE:
        try:
            out[name] = _square(getattr(skimage.data, name)(), size)
        except Exception:  # an image missing from this skimage build is skipped
            continue
    try:
        from sklearn.datasets import load_sample_images

        for fname, img in zip(
            load_sample_images().filenames, load_sample_images().images, strict=True
        ):
            out[fname.rsplit("/", 1)[-1].removesuffix(".jpg")] = _square(img, size)
    except Exception:
        pass
    try:
        import matplotlib.cbook as cbook
        import matplotlib.image as mpimg

        path = cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
        out["grace_hopper"] = _square(np.asarray(mpimg.imread(str(path))), size)
    except Exception:
        pass
    if not out:
        raise RuntimeError("no photos found: scikit-image and scikit-learn are required")
    return out


def photo_batch(names: list[str] | None = None, size: int = 128) -> tuple[Tensor, list[str]]:
    """Stack photos into a batch (N, 3, size, size) in [0, 1]; labels are the photo names."""
    photos = load_photos(size)
    names = list(photos) if names is None else names
    unknown = [n for n in names if n not in photos]
    if unknown:
        raise ValueError(f"names must be among {sorted(photos)}, got unknown {unknown}")
    return torch.stack([photos[n] for n in names]), names
