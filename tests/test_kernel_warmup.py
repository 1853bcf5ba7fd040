"""Spec: a quantized export compiles numba's kernels in a child process first, and then only loads them.

Compiling in the export's own process added its memory to the export's peak the first time after an install
(docs/streaming-export.md). The child must compile exactly the signatures the export calls (argument types,
layouts, read-only flags): a signature it misses would be compiled in the export after all. So an int4 export
runs in a fresh process with an empty numba cache, and each kernel it called must have come from the cache.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

EXPORT = """
import json, sys
from export import export_model, quant_kernels
from export.progress import Progress
export_model(sys.argv[1], output=sys.argv[2], quantize="int4", progress=Progress(quiet=True))
stats = {name: getattr(quant_kernels, name).stats for name in ("search_blocks", "gptq_group", "rtn_blocks")}
print(json.dumps({name: [sum(s.cache_hits.values()), sum(s.cache_misses.values())] for name, s in stats.items()}))
"""


def test_an_int4_export_compiles_nothing_itself(tiny_llama_dir, tmp_path):
    cache = tmp_path / "numba-cache"
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache))
    process = subprocess.run(
        [sys.executable, "-c", EXPORT, str(tiny_llama_dir), str(tmp_path / "out")],
        capture_output=True,
        text=True,
        env=env,
    )
    assert process.returncode == 0, process.stderr
    calls = json.loads(process.stdout.splitlines()[-1])
    assert calls == {name: [1, 0] for name in calls}  # each kernel loaded once from the child's cache, none compiled
    assert any(cache.rglob("*.nbc"))  # the child wrote them where numba was told to
