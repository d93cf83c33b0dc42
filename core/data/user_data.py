"""The user's own evaluation data: an ImageFolder tree, an ``.npz`` with ``x``/``y``, IDX files
(through :func:`core.data.user.load_user_dataset`), or a CSV of ``text,label`` rows.

:func:`load_eval_data` returns :class:`ImageData` or :class:`TextData`; :func:`check_data_fits`
checks that a model maps a small batch of it to logits with at least one output per label
(text through the tokenizer of the model's Hugging Face folder), and says what does not fit.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .datasets import Dataset
from .user import load_user_dataset

MAX_CSV_ROWS = 1_000_000


@dataclass(frozen=True, eq=False)
class ImageData:
    """Images with labels: ``dataset`` (train / test split as loaded)."""

    dataset: Dataset

    @property
    def n_classes(self) -> int:
        return int(self.dataset.n_classes)

    def batch(self, n: int = 4) -> tuple[Any, Tensor]:
        return self.dataset.x_test[:n], self.dataset.y_test[:n]


@dataclass(frozen=True, eq=False)
class TextData:
    """Texts with integer labels; ``class_names[i]`` is the label string of class i."""

    path: str
    texts: tuple[str, ...]
    labels: Tensor  # (N,) int64
    class_names: tuple[str, ...]

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    def batch(self, n: int = 4) -> tuple[Any, Tensor]:
        return list(self.texts[:n]), self.labels[:n]


def load_text_csv(path: str | Path) -> TextData:
    """A CSV with a header naming columns ``text`` and ``label`` (other columns ignored).

    Labels that are all integers ≥ 0 are used as class indices; otherwise each distinct label
    string becomes a class (sorted). Empty texts and missing labels are refused with their
    line number.
    """
    p = Path(path).expanduser()
    if not p.is_file():
        raise FileNotFoundError(f"CSV file not found: {p}")
    texts: list[str] = []
    raw: list[str] = []
    try:
        with open(p, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            cols = reader.fieldnames or []
            if "text" not in cols or "label" not in cols:
                raise ValueError(
                    f"{p} must have a header with columns 'text' and 'label', got {cols}"
                )
            for i, row in enumerate(reader, start=2):
                if len(texts) >= MAX_CSV_ROWS:
                    raise ValueError(f"{p} has more than {MAX_CSV_ROWS} rows")
                text, label = (row.get("text") or "").strip(), (row.get("label") or "").strip()
                if not text:
                    raise ValueError(f"{p}: line {i} has an empty text")
                if not label:
                    raise ValueError(f"{p}: line {i} has no label")
                texts.append(text)
                raw.append(label)
    except UnicodeDecodeError:
        raise ValueError(f"{p} is not UTF-8 text") from None
    if not texts:
        raise ValueError(f"{p} holds no rows")
    if all(s.isdigit() for s in raw):
        labels = [int(s) for s in raw]
        names = tuple(str(i) for i in range(max(labels) + 1))
    else:
        names = tuple(sorted(set(raw)))
        index = {n: i for i, n in enumerate(names)}
        labels = [index[s] for s in raw]
    return TextData(str(p), tuple(texts), torch.tensor(labels, dtype=torch.int64), names)


def load_eval_data(path: str | Path, **image_kwargs: Any) -> ImageData | TextData:
    """The user's evaluation data at ``path``: a ``.csv`` of text and label, else images (an
    ImageFolder tree, an ``.npz`` with ``x``/``y``, a folder of IDX files; ``image_kwargs``
    go to :func:`core.data.user.load_user_dataset`)."""
    if not isinstance(path, str | Path) or not str(path):
        raise TypeError(f"path must be a non-empty str or Path, got {path!r}")
    p = Path(path).expanduser()
    if p.suffix.lower() == ".csv":
        return load_text_csv(p)
    return ImageData(load_user_dataset(p, **image_kwargs))


def logits_of(output: Any) -> Tensor:
    """The logits in a model's output: the tensor itself, or ``output.logits``.

    Raises:
        ValueError: the output has no logits (e.g. a Hugging Face ``AutoModel`` returns hidden
            states: such a model serves weight-space work, not accuracy).
    """
    if isinstance(output, Tensor):
        return output
    logits = getattr(output, "logits", None)
    if isinstance(logits, Tensor):
        return logits
    raise ValueError(
        f"the model returns {type(output).__name__} without logits (a base model without a "
        "classification head: its weights can be merged, but not scored on labelled data)"
    )


def check_data_fits(model: nn.Module, data: ImageData | TextData, *, source: Any = None) -> None:
    """Run ``model`` on a batch of ``data`` and check the logits: 2-D, one row per example and
    at least ``data.n_classes`` columns. Text is tokenised with the tokenizer of the model's
    Hugging Face folder (``source.kind == "hf"``).

    Raises:
        ValueError: what does not fit (input shape, missing tokenizer, no logits, too few outputs).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    x, _ = data.batch()
    model = model.eval()
    with torch.no_grad():
        if isinstance(data, TextData):
            if source is None or getattr(source, "kind", None) != "hf":
                raise ValueError("text data needs a Hugging Face model folder with a tokenizer")
            from transformers import AutoTokenizer

            try:
                tok = AutoTokenizer.from_pretrained(str(source.source), local_files_only=True)
            except (OSError, ValueError) as err:
                raise ValueError(
                    f"{source.source} has no usable tokenizer for text data: {err}"
                ) from None
            enc = tok(list(x), padding=True, truncation=True, return_tensors="pt")
            out = model(**enc)
        else:
            try:
                out = model(x)
            except (RuntimeError, ValueError, TypeError) as err:
                raise ValueError(
                    f"the model does not take the images (batch of shape {tuple(x.shape)}): {err}"
                ) from None
    logits = logits_of(out)
    if logits.ndim != 2 or logits.shape[0] != len(x):
        raise ValueError(
            f"the model must return (batch, classes) logits, got shape {tuple(logits.shape)} "
            f"for a batch of {len(x)}"
        )
    if logits.shape[1] < data.n_classes:
        raise ValueError(
            f"the model has {logits.shape[1]} outputs but the data has {data.n_classes} classes"
        )
