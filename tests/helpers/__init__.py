"""Helpers shared by the tests: figure cases, layout checks, streaming fixtures, and the
reference drivers run in mergekit's and FusionBench's own virtualenvs."""
