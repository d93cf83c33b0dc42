"""Mixmerge Workbench core: the science behind the app, with no Streamlit anywhere below here.

Subpackages: ``data`` (offline datasets and tasks), ``models`` (architectures), ``train``
(seeded training and evaluation), ``zoo`` (persistent model store), ``merge``, ``align``,
``landscape``, ``mixup``, ``geometry``, ``cluster``, ``stats`` and ``figures``.
"""

__version__ = "0.1.0"
