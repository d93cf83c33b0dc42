"""Streaming merges of big checkpoints: mergekit-style YAML configs, tensor by tensor from
safetensors shards with bounded memory, on CPU or GPU (``python -m core merge``)."""

from __future__ import annotations

from .config import MergeConfig, ModelEntry, evaluate_setting, layer_depths, load_config
from .engine import MergeReport, global_thresholds, model_tensors, parse_size, stream_merge
from .st_io import DiskFullError, StreamError, read_header

__all__ = [
    "DiskFullError",
    "MergeConfig",
    "MergeReport",
    "ModelEntry",
    "StreamError",
    "evaluate_setting",
    "global_thresholds",
    "layer_depths",
    "load_config",
    "model_tensors",
    "parse_size",
    "read_header",
    "stream_merge",
]
