"""`python scripts/export.py ARGS` is `simsiam-export ARGS`: the command lives in simsiam_keras.cli.export."""

import sys

from simsiam_keras.cli.export import main

if __name__ == "__main__":
    sys.exit(main())
