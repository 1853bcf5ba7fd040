"""`python -m benchmarks`: the command line of the benchmark suite (see cli.py)."""

import sys

from .cli import main

sys.exit(main())
