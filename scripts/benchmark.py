"""`python scripts/benchmark.py ARGS` is `simsiam-benchmark ARGS`: the command lives in simsiam_keras.cli.benchmark."""

import sys

from simsiam_keras.cli.benchmark import main

if __name__ == "__main__":
    sys.exit(main())
