"""The field's merging protocol on real pretrained backbones.

* :mod:`.protocol` — heads fixed before fine-tuning (linear probes / label-text embeddings),
  backbone-only fine-tuning, per-task scoring of a merged backbone, ``TaskRouter``;
* :mod:`.zoo_build` — ``python -m core zoo build --suite vision|text`` (resumable, cached in the
  workspace zoo);
* :mod:`.run` — ``python -m core benchmark SUITE [--quick] --out results.json``;
* :mod:`.report` — the results record: validation, storage, table, the field's ordering.

Nothing is imported here, so that ``python -m core`` stays quick to start.
"""
