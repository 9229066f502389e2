"""`python scripts/plot_history.py ARGS` is `simsiam-plot ARGS`: the command lives in simsiam_keras.cli.plot."""

import sys

from simsiam_keras.cli.plot import main

if __name__ == "__main__":
    sys.exit(main())
