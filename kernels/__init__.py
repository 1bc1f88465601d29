"""Hot loops of a CMG detector: Triton kernels and the torch references that define them.

Installed as ``edgecmg.kernels``. Each op has ``<name>_reference`` (torch: CPU path, oracle, ONNX
tracing), ``<name>_triton`` (launcher) and ``_<name>_kernel`` (the Triton source). Callers use
``edgecmg.ops``, the one place that picks an implementation; importing this package never needs
Triton or a GPU.

The names below are imported on first use, so that ``from edgecmg.kernels import _common`` (which
Triton is installed, asked by ``edgecmg env`` and the stream summary's environment) loads no torch:
a stream of an exported ``.onnx`` on ONNX Runtime runs, and reports, without it.
"""
from typing import TYPE_CHECKING

from edgecmg.lazy import lazy_exports

# Type checkers and IDEs see the names; at run time __getattr__ imports them. "X as X" marks each as
# re-exported, for strict checkers (mypy --no-implicit-reexport).
if TYPE_CHECKING:
    from edgecmg.kernels.knn import bank_sq_norms_reference as bank_sq_norms_reference
    from edgecmg.kernels.knn import knn_distances_reference as knn_distances_reference
    from edgecmg.kernels.knn import knn_reference as knn_reference
    from edgecmg.kernels.knn import knn_triton as knn_triton
    from edgecmg.kernels.masked_similarity import masked_similarity_reference as masked_similarity_reference
    from edgecmg.kernels.masked_similarity import masked_similarity_triton as masked_similarity_triton

# public name -> the module that defines it
_EXPORTS = {
    "bank_sq_norms_reference": "edgecmg.kernels.knn",
    "knn_distances_reference": "edgecmg.kernels.knn",
    "knn_reference": "edgecmg.kernels.knn",
    "knn_triton": "edgecmg.kernels.knn",
    "masked_similarity_reference": "edgecmg.kernels.masked_similarity",
    "masked_similarity_triton": "edgecmg.kernels.masked_similarity",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
