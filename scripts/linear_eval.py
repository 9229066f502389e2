"""`python scripts/linear_eval.py ARGS` is `simsiam-linear-eval ARGS`: the command lives in simsiam_keras.cli.linear_eval."""

import sys

from simsiam_keras.cli.linear_eval import main

if __name__ == "__main__":
    sys.exit(main())
