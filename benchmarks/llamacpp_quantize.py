"""Requantize a GGUF file with llama.cpp's own quantizer, run as `python -m benchmarks.llamacpp_quantize SRC DST TYPE`.

llama.cpp decodes Q4_0 about 1.8x faster than the Q4_1 file the default model ships as, on this CPU; the suite
gives llama.cpp that format too (`llama.cpp q4_0`), made the way a llama.cpp user makes it: `llama_model_quantize`
with requantization allowed (the source is already quantized) and llama.cpp's defaults for everything else.
A child process of the suite, so that the suite's own process never loads llama.cpp.
"""

from __future__ import annotations

import ctypes
import sys

FTYPES = {"q4_0": 2}  # LLAMA_FTYPE_MOSTLY_Q4_0


def main() -> None:
    source, target, kind = sys.argv[1:4]
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype, params.allow_requantize, params.nthread = FTYPES[kind], True, 2
    status = llama_cpp.llama_model_quantize(source.encode(), target.encode(), ctypes.byref(params))
    if status != 0:
        sys.exit(f"llama_model_quantize returned {status}")


if __name__ == "__main__":
    main()
