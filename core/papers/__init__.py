"""Studies that reproduce the merging papers' headline claims on the workbench's own models.

One file per paper: the study function (plain result record, progress callback, explicit
seeds) and the small helpers it needs. Figures are in :mod:`core.figures.papers`.

* :mod:`.sparse_soups` — Sparse Model Soups (Zimmer et al., ICLR 2024).
* :mod:`.different_init` — ZipIt! and PLeaS vs permutation-only merging of different-init MLPs.
"""
