"""LoRA adapters as task vectors: import PEFT folders, merge them, export the result.

* :func:`load_adapter` reads a PEFT LoRA folder (``adapter_config.json`` +
  ``adapter_model.safetensors``) into a :class:`LoraAdapter` (factors A, B and the scaling
  of every adapted module, PEFT's key names mapped onto the base model's keys).
* :meth:`LoraAdapter.delta` is the adapter's task vector ΔW = B·A·scaling in the base
  model's orientation (fan_in_fan_out and embeddings transposed, conv kernels reshaped).
* :func:`merge_adapters` merges several adapters' task vectors with any data-free method of
  :data:`core.merge.METHODS`; :func:`combine_adapters` reimplements PEFT's
  ``add_weighted_adapter`` combination types and returns a new adapter.
* :func:`adapter_from_delta` factorises a merged ΔW back into an adapter of a chosen rank
  (truncated SVD), :func:`save_adapter` writes a folder PEFT loads, and
  :func:`merge_into_base` adds a ΔW to the base weights.
"""

from .adapter import (
    LoraAdapter,
    LoraLayer,
    adapter_from_delta,
    load_adapter,
    merge_into_base,
    save_adapter,
)
from .combine import COMBINATION_TYPES, applicable_methods, combine_adapters, merge_adapters

__all__ = [
    "COMBINATION_TYPES",
    "LoraAdapter",
    "LoraLayer",
    "adapter_from_delta",
    "applicable_methods",
    "combine_adapters",
    "load_adapter",
    "merge_adapters",
    "merge_into_base",
    "save_adapter",
]
