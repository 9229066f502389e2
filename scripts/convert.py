"""`python scripts/convert.py ARGS` is `simsiam-convert ARGS`: the command lives in simsiam_keras.cli.convert."""

import sys

from simsiam_keras.cli.convert import main

if __name__ == "__main__":
    sys.exit(main())
