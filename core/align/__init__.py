"""Permutation alignment of hidden units (git re-basin).

* :class:`PermutationSpec` / :func:`spec_for` — which permutation acts on which tensor axis,
  declared for every zoo architecture (mlp, cnn with BatchNorm, resnet20 with shared
  residual-stream permutations).
* :func:`apply_permutation` — reorder units without changing the function.
* :func:`weight_matching` — coordinate descent over linear assignment problems (no data).
* :func:`activation_matching` — correlation of activations on data.
* :func:`singular_alignment` — singular-vector alignment before/after a permutation (Ito et al.).
* :func:`zipit` — ZipIt! (Stoica et al.): merge features within and across two MLPs, with
  partial zipping (not a permutation: merge / unmerge matrices).
* :func:`pleas` — PLeaS (Nasery et al.): partial permutation matching + per-layer least squares,
  merged width between one model and the concatenation.
"""

from .activation_matching import activation_matching
from .permute import (
    Permutation,
    apply_permutation,
    check_permutation,
    identity_permutation,
    invert_permutation,
    random_permutation,
)
from .pleas import PleasResult, pleas
from .singular import (
    LayerAlignment,
    SingularAlignment,
    compare_singular_alignment,
    singular_alignment,
)
from .spec import PermutationSpec, cnn_spec, mlp_spec, resnet_spec, spec_for
from .weight_matching import MatchingInfo, weight_matching
from .zipit import ZipMatrices, ZippedMLP, ZipResult, zip_features, zipit

__all__ = [
    "LayerAlignment",
    "MatchingInfo",
    "Permutation",
    "PermutationSpec",
    "SingularAlignment",
    "activation_matching",
    "apply_permutation",
    "check_permutation",
    "cnn_spec",
    "compare_singular_alignment",
    "identity_permutation",
    "invert_permutation",
    "mlp_spec",
    "random_permutation",
    "resnet_spec",
    "singular_alignment",
    "spec_for",
    "weight_matching",
    "ZipMatrices",
    "ZipResult",
    "ZippedMLP",
    "zip_features",
    "zipit",
    "PleasResult",
    "pleas",
]
