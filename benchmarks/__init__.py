"""The benchmark suite of memgpt-runtime: speed, memory and quality of each engine against PyTorch, in one run.

`python -m benchmarks` runs the default suite on SmolLM2-135M-Instruct, then an encoder-decoder part on a random
Marian at opus-mt-en-de's shape; `--quick` runs a smoke version on tiny random models. Each engine runs in its
own worker process (`worker.py`); this package's modules are imported lazily, so `benchmarks.cli.register`
costs nothing to the `memgpt` command. See README.md.
"""
