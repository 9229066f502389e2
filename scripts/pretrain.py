"""`python scripts/pretrain.py ARGS` is `simsiam-pretrain ARGS`: the command lives in simsiam_keras.cli.pretrain."""

import sys

from simsiam_keras.cli.pretrain import main

if __name__ == "__main__":
    sys.exit(main())
