"""The quantizer's compiled kernels (quant_kernels.py), compiled in a child process before an export needs them.

numba compiles a kernel on its first call and caches the machine code on disk (`cache=True`); compiling the
parallel loops takes ~1.4 GB for a while, which an export would otherwise add to its own peak the first time it
runs after an install or a change to the kernels. The child calls the quantizer's entry points on tiny weights,
through the same code as the export's calls (same argument types and layouts, hence the same cached
signatures), so the export itself only loads the cached code. Figures: docs/streaming-export.md.

`python -m export.kernel_warmup` compiles them by hand (for instance at install).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

_compiled = False  # once per process: the child's work is on disk after the first call


def warm() -> None:
    """Call every kernel once, on tiny inputs, the way the export calls them: compiles or loads each."""
    from .blockwise import quantize
    from .gptq import gptq

    rng = np.random.default_rng(0)
    w = rng.standard_normal((8, 128)).astype(np.float32)
    x = rng.standard_normal((64, 128)).astype(np.float32)
    for bits in (4, 8):
        quantize(w, bits, 32, "rtn")
        quantize(w, bits, 64, "searched", importance=(x * x).mean(axis=0))
    gptq(w, x.T @ x, 4, 32)


def compile_kernels() -> None:
    """Compile (or find compiled) the kernels in a child process; in this process they then load from the cache.

    A child that fails (a read-only cache folder, numba missing) changes nothing: the first call in this process
    compiles as before, and reports its own error if there is one."""
    global _compiled
    if _compiled:
        return
    root = Path(__file__).resolve().parents[1]  # the folder that holds this package: `-m` finds it from there
    subprocess.run([sys.executable, "-m", "export.kernel_warmup"], cwd=root, capture_output=True, check=False)
    _compiled = True


if __name__ == "__main__":
    warm()
