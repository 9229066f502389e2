"""`python scripts/knn_eval.py ARGS` is `simsiam-knn-eval ARGS`: the command lives in simsiam_keras.cli.knn_eval."""

import sys

from simsiam_keras.cli.knn_eval import main

if __name__ == "__main__":
    sys.exit(main())
