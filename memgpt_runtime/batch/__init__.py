"""`memgpt batch`: a JSONL file of prompts through the engine, on this machine or on a Ray cluster (docs/batch.md).

`rows.py` reads input lines into rows, `output.py` appends results to OUTPUT.partial and resumes from it,
`runner.py` runs rows on one engine (shared by the local job and each Ray replica), `local.py` is the job on this
machine, `ray_data.py` the Ray Data pipeline, `cli.py` the subcommand. Ray is imported only by `ray_data.py`.
"""
