"""Hot loops of a CMG detector: Triton kernels and the torch references that define them.

Installed as ``edgecmg.kernels``. Each op has ``<name>_reference`` (torch: CPU path, oracle, ONNX
tracing), ``<name>_triton`` (launcher) and ``_<name>_kernel`` (the Triton source). Callers use
``edgecmg.ops``, the one place that picks an implementation; importing this package never needs
Triton or a GPU.
"""
from .knn import bank_sq_norms_reference, knn_distances_reference, knn_reference, knn_triton
from .masked_similarity import masked_similarity_reference, masked_similarity_triton

__all__ = [
    "bank_sq_norms_reference",
    "knn_distances_reference",
    "knn_reference",
    "knn_triton",
    "masked_similarity_reference",
    "masked_similarity_triton",
]
