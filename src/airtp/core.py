"""Access to the native core and the choice between CPU and GPU.

The compiled module :mod:`airtp._core` always has the C++/OpenMP kernels; it
has the CUDA ones when it was built with a CUDA toolkit. A kernel runs on the
GPU only when one is present at run time and the data is large enough to pay
for the transfer.
"""

from __future__ import annotations

import functools
import os

from airtp import _core

__all__ = ["backend", "use_gpu", "GPU_MIN_VOXELS"]

# Below this many voxels the copy to the device costs more than it saves.
GPU_MIN_VOXELS = 1_000_000


@functools.lru_cache(maxsize=1)
def backend() -> str:
    """'cuda' when the core has CUDA kernels and a GPU is usable, else 'cpu'.

    Setting the environment variable ``AIRTP_BACKEND=cpu`` forces the CPU.
    """
    if os.environ.get("AIRTP_BACKEND", "").lower() == "cpu":
        return "cpu"
    if _core.cuda_compiled and _core.cuda_device_count() > 0:
        return "cuda"
    return "cpu"


def use_gpu(n_voxels: int) -> bool:
    """Whether a kernel over `n_voxels` voxels should run on the GPU."""
    return backend() == "cuda" and n_voxels >= GPU_MIN_VOXELS
