"""Perplexity of memgpt folders on the suite's text, with the benchmark's own nll (benchmarks/engines/memgpt_engine.py).

Usage: .venv/bin/python benchmarks/experiments/perplexity.py FOLDER ... [--other-texts]
--other-texts adds two texts of this machine, the first 1,300 tokens of each: the GPL-3 (/usr/share/common-licenses)
and vim's user manual chapter 1 (/usr/share/vim/vim*/doc/usr_01.txt).
"""
import glob, sys, time
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[2]))
import numpy as np
import memgpt_runtime as mr
from benchmarks.engines.memgpt_engine import MemgptEngine
from benchmarks.prompts import TEXT_FILE
folders = [a for a in sys.argv[1:] if not a.startswith("--")]
texts = {"english.txt": (TEXT_FILE.read_text(encoding="utf-8"), None)}
if "--other-texts" in sys.argv:
    texts["GPL-3"] = (open("/usr/share/common-licenses/GPL-3").read()[:6000], 1300)
    texts["vim usr_01"] = (open(sorted(glob.glob("/usr/share/vim/vim*/doc/usr_01.txt"))[0]).read()[:6000], 1300)
for folder in folders:
    lm = mr.load(folder, threads=2)
    for name, (text, limit) in texts.items():
        ids = lm.tokenizer.encode(text)[:limit]
        t = time.time()
        nll = MemgptEngine(lm).nll(ids)
        print(f"{folder} {name}: perplexity {np.exp(nll.mean()):.3f} over {len(nll)} tokens ({time.time()-t:.0f}s)", flush=True)
