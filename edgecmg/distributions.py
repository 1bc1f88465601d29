"""pip distribution names under which optional libraries install, for modules that ask which
version is present without importing the library.

Kept here, apart from the runners and kernels that use them, because those import torch and the
environment report (``edgecmg.stream.environment``) has to work where torch does not import.
"""
# Each installs the one ``onnxruntime`` module. With two of them the one installed last owns the
# shared files: a CPU build over a GPU build (e.g. a package that asks for plain onnxruntime,
# installed after onnxruntime-gpu) hides the CUDA and TensorRT providers.
ONNXRUNTIME = ("onnxruntime", "onnxruntime-gpu", "onnxruntime-directml", "onnxruntime-openvino", "onnxruntime-qnn")
# PyPI's triton, the nightly builds torch pins (pytorch-triton), and the Windows port; each installs ``triton``.
TRITON = ("triton", "pytorch-triton", "triton-windows")
