"""`python scripts/finetune.py ARGS` is `simsiam-finetune ARGS`: the command lives in simsiam_keras.cli.finetune."""

import sys

from simsiam_keras.cli.finetune import main

if __name__ == "__main__":
    sys.exit(main())
