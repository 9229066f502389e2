"""`python scripts/embed.py ARGS` is `simsiam-embed ARGS`: the command lives in simsiam_keras.cli.embed."""

import sys

from simsiam_keras.cli.embed import main

if __name__ == "__main__":
    sys.exit(main())
