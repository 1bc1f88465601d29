"""Kernel tests run the Triton kernels on CPU through Triton's interpreter.

TRITON_INTERPRET must be set before a kernel is decorated; edgecmg.kernels decorates lazily (on first
launch), so setting it here, at collection time, is early enough even when other test modules have
already imported edgecmg.kernels for the references. ``setdefault`` lets a GPU runner pass
TRITON_INTERPRET=0 to run the same tests on CUDA tensors instead.
"""
import os

os.environ.setdefault("TRITON_INTERPRET", "1")
# Triton 3.9 warns on every process that this default is about to change; pin the current behaviour.
os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

from edgecmg.kernels import _common  # noqa: E402


@pytest.fixture(scope="session")
def kernel_device() -> str:
    """Where kernel inputs live: CPU under the interpreter, CUDA when kernels compile for a GPU."""
    if not _common.triton_available():
        pytest.skip(f"no triton >= {_common.TRITON_MIN_VERSION[0]}.{_common.TRITON_MIN_VERSION[1]} installed")
    if _common.interpret_mode():
        return "cpu"
    if torch.cuda.is_available():
        return "cuda"
    pytest.skip("TRITON_INTERPRET=0 and no CUDA device")
