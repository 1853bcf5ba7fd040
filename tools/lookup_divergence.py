"""Where memgpt's answer with prompt lookup first differs from the plain one (a `python -m benchmarks.lookup --out`
JSON), the logits of one run over the whole sequence there: which of the two tokens wins when the positions run
together. python tools/lookup_divergence.py RESULTS.json INT4_DIR INT8_DIR"""

import json
import sys

import numpy as np

import memgpt_runtime as mr
from benchmarks.lookup import grounded_prompts

data = json.load(open(sys.argv[1]))
for precision, folder in (("int4", sys.argv[2]), ("int8", sys.argv[3])):
    lm = mr.load(folder, threads=2)
    for name, (_, message) in grounded_prompts().items():
        runs = data["runs"][f"memgpt {precision}"].get(name)
        if not runs:
            continue
        plain, looked = runs[0]["tokens"], data["runs"][f"memgpt {precision} lookup"][name][0]["tokens"]
        d = next((i for i, (a, b) in enumerate(zip(plain, looked)) if a != b), None)
        if d is None:
            print(precision, name, "same")
            continue
        ids = lm.tokenizer.apply_chat_template([{"role": "user", "content": message}], add_generation_prompt=True)
        logits = lm.logits([ids + plain[:d]])[0, -1]
        top = np.sort(logits)[-2:]
        print(
            precision,
            name,
            "differs at",
            d,
            "plain",
            plain[d],
            "lookup",
            looked[d],
            "margin of the plain top-2 (one run):",
            float(top[1] - top[0]),
            "logit of lookup's token",
            float(logits[looked[d]]),
            "of plain's",
            float(logits[plain[d]]),
        )
